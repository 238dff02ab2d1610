"""What the DICOM header already says about who is on the film: an age outside the training population.

The one reviewed path by which a patient tag is read: ``age_outside`` compares ``PatientAge`` with the model's
training population and returns only True / False / None (unknown). The age itself is never returned, printed,
logged or stored, and no other tag is read here (the pixel decoder, ``data.images``, reads none at all).

Kermany's films are children aged 1–5 (Kermany et al. 2018, Cell: "pediatric patients of one to five years
old"); a model card records the range its training data came from (``ModelCard.population_age``).
"""
from __future__ import annotations

import re

KERMANY_AGE_YEARS = (1.0, 5.0)
# DICOM Age String: nnnD / nnnW / nnnM / nnnY. Headers in the wild also carry "12M" or a bare "81" (NIH
# ChestX-ray14): read as the unit says, a bare number as years. Anything else is unknown, not guessed.
_AGE = re.compile(r"^\s*(\d{1,3})\s*([DWMY]?)\s*$", re.IGNORECASE)
_YEARS_PER = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0, "": 1.0}


def _years(value) -> float | None:
    m = _AGE.match(str(value)) if value is not None else None
    return int(m.group(1)) * _YEARS_PER[m.group(2).upper()] if m else None


def age_outside(data: bytes, age_range: tuple[float, float] | None) -> bool | None:
    """Whether the ``PatientAge`` of the DICOM ``data`` lies outside ``age_range`` (years, inclusive; the upper
    end covers the whole year: 5 means "under 6"). None when the file is no DICOM, has no readable age, or no
    range is known. Only this boolean leaves the function."""
    from .decode import is_dicom
    if age_range is None or not is_dicom(data):
        return None
    import io

    import pydicom
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=["PatientAge"])
        years = _years(ds.get("PatientAge"))
    except Exception:          # an unreadable header: the pixel decoder reports it; the age is just unknown
        return None
    if years is None:
        return None
    lo, hi = age_range
    return not (lo <= years < hi + 1)


def default_population(root, class_names) -> tuple[float, float] | None:
    """Kermany's ages (1–5 years) for Kaggle's ``chest_xray`` folder with its NORMAL / PNEUMONIA classes; None
    (unknown) for any other data set, until its user says (``--population-age``)."""
    from pathlib import Path
    kermany = Path(root).name == "chest_xray" and tuple(class_names) == ("NORMAL", "PNEUMONIA")
    return KERMANY_AGE_YEARS if kermany else None


def parse_range(text: str) -> tuple[float, float] | None:
    """'1-5' → (1.0, 5.0) years; 'none' → None (the CLI's --population-age)."""
    if text.strip().lower() == "none":
        return None
    try:
        lo, hi = (float(v) for v in text.split("-"))
    except ValueError:
        raise ValueError(f"--population-age {text!r}: give MIN-MAX in years, e.g. 1-5, or 'none'") from None
    if not 0 <= lo <= hi:
        raise ValueError(f"--population-age {text!r}: MIN must be ≥ 0 and ≤ MAX")
    return lo, hi
