"""Images: decode any file once (PNG/JPEG/TIFF/DICOM, any depth), hold them as uint8, build tf.data pipelines.

Pixel convention: images are decoded to grayscale uint8 (any bit depth or channel count in, EXIF
orientation applied), brought to ``image_size`` squared by the model's input geometry (``GEOMETRIES``: squashed,
centre-cropped or letterboxed; saved in the model card, so training and serving agree), and kept in memory as uint8. The tf.data
pipeline turns a batch into 3 identical channels of float32 in [0, 255] and applies the backbone's own
``preprocess`` (``vgg19.preprocess_input`` for VGG19). Decoding happens once, before tf.data, so a
corrupt file is found, skipped and reported instead of killing an epoch half-way.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

MAX_PIXELS = 100_000_000      # refuse larger headers (decompression bombs); the largest Kermany image is ~7 MP


class ImageReadError(ValueError):
    """One image could not be decoded; carries the path and the reason."""

    def __init__(self, path, reason):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


def is_dicom(data: bytes, name: str = "") -> bool:
    """DICOM by extension or by the ``DICM`` magic after the 128-byte preamble (uploads may lack a suffix)."""
    return str(name).lower().endswith(".dcm") or data[128:132] == b"DICM"


def _dicom_to_gray(data: bytes, name) -> np.ndarray:
    """Pixels only, in display orientation: modality LUT (rescale slope/intercept), then the VOI LUT or
    window centre/width when the file has them, MONOCHROME1 inverted. No other tag leaves this function,
    so nothing patient-identifying can reach an output."""
    import io
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut
    from pydicom.errors import InvalidDicomError
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except (InvalidDicomError, EOFError, ValueError) as exc:
        raise ImageReadError(name, f"not a valid DICOM file ({exc})") from exc
    if "PixelData" not in ds:
        raise ImageReadError(name, "DICOM file has no pixel data (a structured report or a header-only file?)")
    try:
        _check_dicom_size(ds, name)
    except ImageReadError:
        raise
    except Exception as exc:        # pydicom meets a damaged header lazily: unknown VR, a UID that is no syntax
        raise ImageReadError(name, f"DICOM header could not be read ({type(exc).__name__}: {exc})") from exc
    try:
        arr = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds).astype(np.float32)
    except Exception as exc:        # e.g. a compressed transfer syntax without its decoder installed
        raise ImageReadError(name, f"DICOM pixel data could not be decoded ({exc}); install pylibjpeg "
                                   "or convert the file to an uncompressed transfer syntax") from exc
    if arr.ndim != 2:
        raise ImageReadError(name, f"DICOM pixel array has shape {arr.shape}; one 2-D grayscale frame expected")
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        arr = arr.max() - arr
    return arr


def _check_dicom_size(ds, name) -> None:
    """Refuse, before any pixel is decoded, a DICOM whose header claims more than ``MAX_PIXELS`` pixels or, for
    uncompressed pixel data, more bytes than the file holds (a damaged or hostile header would otherwise make the
    decoder allocate gigabytes first)."""
    try:
        rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples, bits = int(ds.get("SamplesPerPixel", 1) or 1), int(ds.get("BitsAllocated", 8) or 8)
    except (TypeError, ValueError) as exc:
        raise ImageReadError(name, f"DICOM header has unreadable image dimensions ({exc})") from exc
    if rows * cols * frames > MAX_PIXELS:
        raise ImageReadError(name, f"refused: DICOM header claims {cols}×{rows}×{frames} pixels, over the "
                                   f"{MAX_PIXELS:,}-pixel limit")
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    compressed = bool(syntax is not None and getattr(syntax, "is_compressed", False))
    if not compressed:
        need = rows * cols * frames * samples * bits // 8
        have = len(ds.PixelData or b"")
        if have < need:
            raise ImageReadError(name, f"DICOM pixel data holds {have:,} bytes but the header "
                                       f"({cols}×{rows}, {bits} bit) needs {need:,}: a damaged file")


def _check_header_size(data: bytes, name) -> None:
    """Refuse images whose header claims more than ``MAX_PIXELS`` before anything is decoded."""
    import io
    import warnings
    from PIL import Image
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
    except Image.DecompressionBombError as exc:
        raise ImageReadError(name, f"refused: {exc}") from exc
    except Exception:       # not a format PIL knows: OpenCV gets to try
        return
    if w * h > MAX_PIXELS:
        raise ImageReadError(name, f"refused: {w}×{h} pixels exceeds the {MAX_PIXELS:,}-pixel limit "
                                   "(decompression bomb?)")


def decode_image(data: bytes, name: str | Path = "<upload>", color: bool = False) -> np.ndarray:
    """Decode the bytes of one image file to a 2-D grayscale uint8 array (``color``: (H, W, 3) RGB), or raise
    ``ImageReadError`` naming ``name``. The one decoder behind files, app uploads and API requests.

    JPEG/PNG/BMP/TIFF of any bit depth and channel count (alpha dropped, EXIF orientation applied) and
    DICOM (see ``_dicom_to_gray``). Images deeper than 8 bit are min-max scaled to 0..255.
    Truncated JPEGs (no end-of-image marker) are refused rather than half-decoded, and so are headers
    claiming more than ``MAX_PIXELS`` pixels.
    """
    if len(data) == 0:
        raise ImageReadError(name, "empty file")
    if is_dicom(data, str(name)):
        arr = _dicom_to_gray(data, name)
    else:
        buf = np.frombuffer(data, np.uint8)
        if buf[:2].tobytes() == b"\xff\xd8" and b"\xff\xd9" not in buf[-4096:].tobytes():
            raise ImageReadError(name, "truncated JPEG (no end-of-image marker)")
        _check_header_size(data, name)
        arr = cv2.imdecode(buf, (cv2.IMREAD_COLOR if color else cv2.IMREAD_GRAYSCALE) | cv2.IMREAD_ANYDEPTH)
        if arr is None:
            raise ImageReadError(name, "not a decodable image (PNG, JPEG, BMP, TIFF or DICOM expected)")
        if color:
            arr = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
    if arr.dtype != np.uint8:
        arr = arr.astype(np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        arr = ((arr - lo) / (hi - lo) * 255).round() if hi > lo else np.zeros_like(arr)
        arr = arr.astype(np.uint8)
    if color and arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    return arr


def read_gray(path: str | Path, color: bool = False) -> np.ndarray:
    """``decode_image`` of a file on disk (np.fromfile copes with non-ASCII names, cv2.imread does not)."""
    path = Path(path)
    return decode_image(np.fromfile(path, np.uint8).tobytes(), path, color)


CLAHE_CLIP, CLAHE_TILES = 2.0, 8


def equalize(img: np.ndarray) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation (OpenCV's CLAHE, clip 2.0 on an 8×8 grid) of a uint8
    image, per channel for RGB: evens out exposure and contrast between hospitals and machines."""
    clahe = cv2.createCLAHE(clipLimit=CLAHE_CLIP, tileGridSize=(CLAHE_TILES, CLAHE_TILES))
    if img.ndim == 2:
        return clahe.apply(img)
    return np.stack([clahe.apply(np.ascontiguousarray(img[..., c])) for c in range(img.shape[-1])], -1)


# How a film of any shape becomes the square the network takes (``DataConfig.geometry``, saved in the model card):
# "squash" resizes width and height independently (the 224-px Kermany copy was made so; the film's aspect ratio
# survives as how wide the chest looks), "crop" takes the centre square first (torchxrayvision's convention: the
# aspect survives as how much of the chest is cut off), "pad" letterboxes the whole film on black (the aspect
# survives as the bars). docs/results.md, "Input geometry", measures what each leaves for a model to read.
GEOMETRIES = ("squash", "crop", "pad")


def _resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    shrinking = img.shape[0] >= height and img.shape[1] >= width
    return cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def fit_size(img: np.ndarray, size: int, clahe: bool = False, geometry: str = "squash") -> np.ndarray:
    """A decoded image (H, W[, 3]) as (size, size[, 3]) by ``geometry`` (one of ``GEOMETRIES``), area-averaging
    when shrinking; then CLAHE when asked (at the model's resolution, so training, evaluation and serving see the
    same equalisation)."""
    if geometry not in GEOMETRIES:
        raise ValueError(f"unknown input geometry {geometry!r}; choose from {GEOMETRIES}")
    h, w = img.shape[:2]
    if geometry == "crop":
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        out = _resize(img[top:top + side, left:left + side], size, size)
    elif geometry == "pad":
        scale = size / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        out = np.zeros((size, size, *img.shape[2:]), img.dtype)
        top, left = (size - nh) // 2, (size - nw) // 2
        out[top:top + nh, left:left + nw] = _resize(img, nw, nh)
    else:
        out = _resize(img, size, size)
    return equalize(out) if clahe else out


def load_image(path: str | Path, size: int, color: bool = False, clahe: bool = False,
               geometry: str = "squash") -> np.ndarray:
    """Decode one image and bring it to (size, size) uint8 by ``geometry``, or (size, size, 3) RGB with ``color``."""
    return fit_size(read_gray(path, color), size, clahe, geometry)


@dataclass
class ImageSet:
    """Decoded images of one manifest: ``images`` (N, S, S) uint8 aligned with ``manifest`` rows."""
    images: np.ndarray
    manifest: pd.DataFrame
    skipped: list[tuple[str, str]] = field(default_factory=list)   # (path, reason)

    @property
    def labels(self) -> np.ndarray:
        """(N,) class indices, or (N, K) float32 multi-hot vectors for multi-label data."""
        if "label_vec" in self.manifest:
            return np.stack(self.manifest["label_vec"].to_list()).astype(np.float32) if len(self.manifest) \
                else np.zeros((0, 0), np.float32)
        return self.manifest["label_idx"].to_numpy()


def load_images(manifest: pd.DataFrame, size: int, workers: int = 4, progress: bool = True,
                color: bool = False, clahe: bool = False, geometry: str = "squash") -> ImageSet:
    """Decode every image of ``manifest`` once; unreadable files are dropped and listed in ``skipped``.
    Grayscale (N, S, S) by default; ``color`` keeps RGB (N, S, S, 3) for non-X-ray data sets."""
    from tqdm.auto import tqdm

    def one(path):
        try:
            return load_image(path, size, color, clahe, geometry), None
        except (ImageReadError, cv2.error, OSError, ValueError) as exc:
            return None, getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"

    paths = manifest["path"].tolist()
    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = list(tqdm(pool.map(one, paths), total=len(paths), desc=f"decoding {size}px",
                            disable=not progress, leave=False))
    keep = [i for i, (img, _) in enumerate(results) if img is not None]
    skipped = [(paths[i], err) for i, (img, err) in enumerate(results) if img is None]
    for p, why in skipped:
        log.warning("skipped %s: %s", p, why)
    images = np.stack([results[i][0] for i in keep]) if keep else np.zeros((0, size, size, *(3,) * color), np.uint8)
    return ImageSet(images, manifest.iloc[keep].reset_index(drop=True), skipped)


def _zoom(img: np.ndarray, factor: float = 0.9) -> np.ndarray:
    h, w = img.shape[:2]
    ch, cw = round(h * factor), round(w * factor)
    top, left = (h - ch) // 2, (w - cw) // 2
    return cv2.resize(img[top:top + ch, left:left + cw], (w, h), interpolation=cv2.INTER_LINEAR)


def _shift(img: np.ndarray, fraction: float) -> np.ndarray:
    w = img.shape[1]
    m = np.float32([[1, 0, round(fraction * w)], [0, 1, 0]])
    return cv2.warpAffine(img, m, (w, img.shape[0]), borderMode=cv2.BORDER_REPLICATE)


# Test-time views of a decoded image (uint8 in, same shape out). No flips: the heart is on the left.
TTA_TRANSFORMS = {
    "identity": lambda img: img,
    "zoom": _zoom,                                   # centre 90%, resized back
    "shift_left": lambda img: _shift(img, -0.04),    # 4% of the width, edge pixels repeated
    "shift_right": lambda img: _shift(img, 0.04),
}


def tta_views(images: np.ndarray, names) -> list[np.ndarray]:
    """``images`` (N, S, S[, 3]) under each named transform of ``TTA_TRANSFORMS``."""
    unknown = [n for n in names if n not in TTA_TRANSFORMS]
    if unknown:
        raise ValueError(f"unknown test-time transform(s) {unknown}; choose from {list(TTA_TRANSFORMS)}")
    return [np.stack([TTA_TRANSFORMS[n](img) for img in images]) for n in names]


def to_model_input(images, preprocess):
    """uint8 (B, H, W) grayscale (replicated to 3 channels) or (B, H, W, 3) RGB → float32 (B, H, W, 3)
    through the backbone's ``preprocess``."""
    import tensorflow as tf
    x = tf.cast(images, tf.float32)
    return preprocess(x if x.shape.rank == 4 else tf.repeat(x[..., None], 3, axis=-1))


def augmenter(cfg, seed: int = 42):
    """A Keras layer stack mapping float (B, H, W, 1) in [0, 255] to augmented images in the same range."""
    import keras
    from keras import layers
    stack = [layers.RandomRotation(cfg.rotation_deg / 360.0, fill_mode="constant", seed=seed),
             layers.RandomZoom(cfg.zoom, fill_mode="constant", seed=seed + 1),
             layers.RandomTranslation(cfg.translate, cfg.translate, fill_mode="constant", seed=seed + 2),
             layers.RandomBrightness(cfg.brightness, value_range=(0, 255), seed=seed + 3),
             layers.RandomContrast(cfg.contrast, value_range=(0, 255), seed=seed + 4)]
    if cfg.aspect:                      # width only: height factor 0, width zoomed by 1 ± aspect
        stack.append(layers.RandomZoom((0.0, 0.0), (-cfg.aspect, cfg.aspect), fill_mode="constant", seed=seed + 7))
    if cfg.gamma:
        from .gamma import RandomGamma
        stack.append(RandomGamma(cfg.gamma, seed=seed + 6))
    if cfg.horizontal_flip:
        stack.append(layers.RandomFlip("horizontal", seed=seed + 5))
    return keras.Sequential(stack, name="augment")


def augment_batch(images, aug):
    """uint8 (B, H, W) or (B, H, W, 3) → the same shape, through the augmentation stack (training=True)."""
    import tensorflow as tf
    gray = images.shape.rank == 3
    x = tf.cast(images, tf.float32)
    x = aug(x[..., None] if gray else x, training=True)
    x = tf.cast(tf.clip_by_value(tf.round(x), 0, 255), tf.uint8)
    return x[..., 0] if gray else x


def label_array(labels) -> np.ndarray:
    """int32 class indices (N,) or float32 multi-hot (N, K), as tf.data should carry them."""
    labels = np.asarray(labels)
    return labels.astype(np.float32) if labels.ndim == 2 else labels.astype(np.int32)


def encode_labels(y, num_classes: int):
    """One-hot for class indices; multi-hot vectors pass through (a tf function: works inside tf.data maps)."""
    import tensorflow as tf
    return tf.cast(y, tf.float32) if y.shape.rank == 2 else tf.one_hot(y, num_classes)


def _memmap_batches(images: np.ndarray, labels, batch_size: int, shuffle: bool, seed: int):
    """Batches of a memory-mapped image array, read row by row from disk: only the batch is in RAM."""
    import tensorflow as tf
    lab = None if labels is None else label_array(labels)
    index = tf.data.Dataset.range(len(images))
    if shuffle:
        index = index.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    shape = tf.TensorShape([None, *images.shape[1:]])

    def gather(idx):
        x = tf.numpy_function(lambda i: np.ascontiguousarray(images[np.sort(i)][np.argsort(np.argsort(i))]),
                              [idx], tf.uint8)
        x = tf.ensure_shape(x, shape)
        if lab is None:
            return x
        return x, tf.gather(tf.constant(lab), idx)
    return index.batch(batch_size).map(gather)


def make_dataset(images: np.ndarray, labels: np.ndarray | None, preprocess, num_classes: int = 2,
                 batch_size: int = 32, shuffle: bool = False, seed: int = 42, augment=None):
    """tf.data pipeline over decoded uint8 images: [shuffle] → batch → [augment] → preprocess + one-hot
    → prefetch. ``augment`` (an ``AugmentConfig``) is for training data only."""
    import tensorflow as tf
    if isinstance(images, np.memmap):              # a disk-backed store (store.py): gather rows per batch
        ds = _memmap_batches(images, labels, batch_size, shuffle, seed)
    else:
        if labels is None:
            ds = tf.data.Dataset.from_tensor_slices(images)
        else:
            ds = tf.data.Dataset.from_tensor_slices((images, label_array(labels)))
        if shuffle:
            ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size)
    if augment is not None:
        if labels is None:
            raise ValueError("augmentation is for training batches, which need labels")
        aug = augmenter(augment, seed)
        ds = ds.map(lambda x, y: (augment_batch(x, aug), y))   # one random stream: serial map
    if labels is None:
        ds = ds.map(lambda x: to_model_input(x, preprocess), num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(lambda x, y: (to_model_input(x, preprocess), encode_labels(y, num_classes)),
                    num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
