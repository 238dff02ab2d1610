"""Heat maps back as DICOM, for the viewers radiologists use: the red top-5% overlay as a Secondary Capture image
(highdicom's ``SCImage``, which checks the object against the standard as it builds it) in a new series of the
source film's study.

The object references the source by the UIDs the standard needs for that (Study Instance UID — it joins the study —
and the source image's SOP Class and Instance UIDs in the Source Image Sequence) and copies **nothing else** of
the source: no name, patient id, birth date, sex, accession number or dates; those type-2 attributes are present and
empty, as the standard allows. It says what it is: the prediction, the model's weights SHA-256 and "research use only
— not for diagnosis" (Image Comments, Series Description, Derivation Description).
"""
from __future__ import annotations

import io

import numpy as np

REFERENCE_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID", "SOPInstanceUID")
DISCLAIMER = "research use only - not for diagnosis"
SERIES_NUMBER = 9901                   # a high series number keeps the derived series after the acquired ones


class DicomOutError(ValueError):
    """The DICOM output cannot be made for this input; the message names the file and the reason."""


def source_references(data: bytes, name: str = "<upload>") -> dict[str, str]:
    """The four UIDs that let the output reference its source, read from the DICOM header (pixels are not read)
    and nothing else. A PNG/JPEG or a DICOM without them is refused with the reason."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    from ..data import is_dicom
    if not is_dicom(data, str(name)):
        raise DicomOutError(f"{name}: DICOM output needs a DICOM input — a PNG or JPEG has no study, series or "
                            "image UID to reference, and a DICOM object made up for it would be filed as a new "
                            "patient; use the PNG overlay instead")
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=list(REFERENCE_UIDS))
    except (InvalidDicomError, EOFError, ValueError) as exc:
        raise DicomOutError(f"{name}: not a readable DICOM file ({exc})") from exc
    missing = [k for k in REFERENCE_UIDS if not str(ds.get(k, "") or "").strip()]
    if missing:
        raise DicomOutError(f"{name}: the DICOM header lacks {', '.join(missing)}, which the output must reference; "
                            "a file exported without its UIDs (anonymised too far?) cannot be linked back to its study")
    return {k: str(ds.get(k)) for k in REFERENCE_UIDS}


def overlay_dataset(refs: dict[str, str], overlay_rgb: np.ndarray, label: str, confidence: float,
                    weights_sha256: str, method: str = "gradcam", instance_number: int = 1,
                    series_instance_uid: str | None = None):
    """A highdicom ``SCImage`` of ``overlay_rgb`` (H, W, 3) uint8 in a new series of the source's study."""
    import highdicom as hd
    from pydicom.dataset import Dataset
    rgb = np.ascontiguousarray(overlay_rgb, np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"the overlay must be RGB (H, W, 3) uint8, got {rgb.shape}")
    sc = hd.sc.SCImage(
        pixel_array=rgb, photometric_interpretation="RGB", bits_allocated=8, coordinate_system="PATIENT",
        study_instance_uid=refs["StudyInstanceUID"], series_instance_uid=series_instance_uid or hd.UID(),
        series_number=SERIES_NUMBER, sop_instance_uid=hd.UID(), instance_number=instance_number,
        manufacturer="xai-cxr", patient_orientation=("L", "F"))
    text = (f"xai-cxr {method}: {label} {confidence:.1%} (calibrated); top 5% of the map in red. "
            f"Model weights sha256 {weights_sha256}. {DISCLAIMER}")
    sc.ImageComments = text
    sc.SeriesDescription = f"xai-cxr {method} overlay - {DISCLAIMER}"[:64]
    sc.DerivationDescription = text[:1024]
    sc.BurnedInAnnotation = "NO"
    source = Dataset()
    source.ReferencedSOPClassUID = refs["SOPClassUID"]
    source.ReferencedSOPInstanceUID = refs["SOPInstanceUID"]
    sc.SourceImageSequence = [source]
    return sc


def to_bytes(ds) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()
