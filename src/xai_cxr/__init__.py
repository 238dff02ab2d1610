"""xai_cxr: explainable pneumonia detection on chest X-rays.

Layers, arrows pointing down: ``config`` (one frozen dataclass per concern); ``data`` (scan, splits, decode,
images, tf.data batches, phantoms, confounders); ``tasks`` (what a model is asked); ``models`` (backbones, ImageNet
weights, the classifier, a saved model's folder, training, calibration, the out-of-distribution detector, the
referral rule); ``explain`` (CAMs, attributions, maps that see absences, overlays, their metrics, the measured
recommendation); ``serve`` (the predictor, API, app, report, export); on top ``evaluate``, ``recipes``,
``pipeline`` and ``studies``, ``flags``, ``commands`` and ``cli`` (``xai-cxr``). The README's "Layout" names every
module.
Importing the package has no side effects: TensorFlow is imported only by the modules that need it.
"""

__version__ = "0.1.0"
CLASS_NAMES = ("NORMAL", "PNEUMONIA")
