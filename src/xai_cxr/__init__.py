"""xai_cxr: explainable pneumonia detection on chest X-rays.

Modules, one concern each: ``config`` (frozen dataclasses), ``data`` (scan, decode, tf.data),
``phantom`` (synthetic X-rays with known lesions), ``models`` (backbone registry), ``train``,
``evaluate``, ``cam`` (Grad-CAM family), ``overlay``, ``pipeline`` (the end-to-end run), ``cli``.
Importing the package has no side effects: TensorFlow is imported only by the modules that need it.
"""

__version__ = "0.1.0"
CLASS_NAMES = ("NORMAL", "PNEUMONIA")
