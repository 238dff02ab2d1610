"""Decoding: any image file (PNG/JPEG/TIFF/DICOM, any bit depth or channel count, EXIF orientation applied) to
uint8 grayscale (or RGB on request), refusing decompression bombs, empty and corrupt files with an
``ImageReadError`` that names the file."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

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
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut
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
