"""xai_cxr: explainable pneumonia detection on chest X-rays.

Layers, arrows pointing down (``LAYERS``, lowest first; a module imports only from its own layer's unit or a lower
layer, and tests/test_imports.py holds every module to it): ``config`` (one frozen dataclass per concern),
``runtime`` (the machine) and ``evaluate`` (metrics of predictions); ``data`` (scan, splits, decode, images,
tf.data batches, phantoms, planted confounders); ``models`` (backbones, ImageNet weights, the classifier, a saved
model's folder, training, calibration, the out-of-distribution detector, the referral rule); ``explain`` (CAMs,
attributions, maps that see absences, overlays, their metrics, the measured recommendation); ``tasks`` (what a
model is asked); ``pipeline`` (train → evaluate → explain), ``serve`` (the predictor, API, app, report, export) and
``tracking``; ``recipes`` and ``studies``; ``flags``; ``commands``; ``cli`` (``xai-cxr``); ``testing`` (tooling for
the tests and benchmarks).
Importing the package has no side effects: TensorFlow is imported only by the modules that need it.
"""

__version__ = "0.1.0"
CLASS_NAMES = ("NORMAL", "PNEUMONIA")
LAYERS = (("xai_cxr", "config", "runtime", "evaluate"), ("data",), ("models",), ("explain",), ("tasks",),
          ("pipeline", "serve", "tracking"), ("recipes", "studies"), ("flags",), ("commands",), ("cli",), ("testing",))
