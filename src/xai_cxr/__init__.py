"""xai_cxr: explainable pneumonia detection on chest X-rays.

Layers, arrows pointing down: ``data`` (scan, decode, phantoms, tf.data), ``models`` (backbones, training,
calibration, the out-of-distribution detector, the referral rule), ``explain`` (CAMs, attributions, overlays,
their metrics), ``serve`` (the predictor, API, app, report, export); on top ``config``, ``evaluate``,
``pipeline`` and ``studies``, ``commands`` and ``cli`` (``xai-cxr``). The README's "Layout" names every module.
Importing the package has no side effects: TensorFlow is imported only by the modules that need it.
"""

__version__ = "0.1.0"
CLASS_NAMES = ("NORMAL", "PNEUMONIA")
