"""Scan folder layouts into manifests (one row per image: path, split, label, patient id, mask): Kaggle's class
folders, an NIH-style CSV of findings, case folders with masks; and the tasks' labels (Kermany subtypes)."""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .decode import ImageReadError, read_gray
from .layout import LAYOUT, DatasetLayoutError
from .splits import _mark_test_split

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".dcm"}
SPLITS = ("train", "val", "test")


def _is(entry, kind: str) -> bool:
    """entry.is_file()/is_dir() that treats a broken link or a symlink loop as neither, with a warning."""
    try:
        return entry.is_file() if kind == "file" else entry.is_dir()
    except OSError as exc:
        log.warning("ignored %s: %s", entry.path, exc.strerror)
        return False


def _child_dirs(folder: Path) -> dict[str, Path]:
    """Sub-folders by lower-case name, skipping hidden ones and macOS metadata."""
    out = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if not entry.name.startswith((".", "__MACOSX")) and _is(entry, "dir"):
            out.setdefault(entry.name.lower(), Path(entry.path))
    return out


def is_mask_file(name: str) -> bool:
    return Path(name).stem.lower().endswith("_mask")


def _image_files(folder: Path) -> list[Path]:
    files = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        name = entry.name
        if name.startswith(".") or is_mask_file(name) or Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        if _is(entry, "file"):
            files.append(Path(entry.path))
    return files


_PERSON = re.compile(r"(person\d+)_", re.IGNORECASE)
_IM = re.compile(r"^((?:NORMAL\d*-)?IM-\d+)-", re.IGNORECASE)


def mask_beside(f: Path) -> Path | None:
    """The lesion mask stored next to image ``f`` (``<stem>_mask<ext>`` or ``<stem>_mask.png``), if any."""
    return next((m for m in (f.with_name(f.stem + "_mask" + f.suffix), f.with_name(f.stem + "_mask.png"))
                 if m.exists()), None)


def parse_kermany_name(name: str) -> tuple[str | None, str]:
    """(subtype, patient_id) from a Kermany file name.

    ``person1_bacteria_1.jpeg`` → ("bacteria", "person1"); ``NORMAL2-IM-1427-0001.jpeg`` → (None,
    "NORMAL2-IM-1427"); anything else → (None, file stem), i.e. every image its own patient.
    """
    stem = Path(name).stem
    low = stem.lower()
    subtype = "bacteria" if "bacteria" in low else "virus" if "virus" in low else None
    m = _PERSON.search(stem) or _IM.search(stem)
    return subtype, (m.group(1) if m else stem)


NIH_FINDINGS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
                "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia")
NIH_COLUMNS = ("Image Index", "Finding Labels", "Patient ID")


def scan_labels_csv(csv_path: str | Path, images_dir: str | Path, findings=NIH_FINDINGS, test_fraction: float = 0.2,
                    seed: int = 42) -> pd.DataFrame:
    """Manifest of a multi-label data set in the NIH ChestX-ray14 CSV format (``Image Index``, ``Finding
    Labels`` with "|"-separated findings or "No Finding", ``Patient ID``), images found under ``images_dir``
    (searched recursively by file name). Splits train/test by patient (seeded); multi-hot labels in
    ``label_vec``. Missing columns, unknown findings or images that do not exist raise an error naming the
    column or the rows; a finding present in only one split gives a warning."""
    import warnings
    csv_path, images_dir = Path(csv_path), Path(images_dir)
    if not csv_path.is_file():
        raise DatasetLayoutError(f"labels CSV not found: {csv_path}")
    df = pd.read_csv(csv_path)
    missing = [c for c in NIH_COLUMNS if c not in df.columns]
    if missing:
        raise DatasetLayoutError(f"{csv_path} lacks column(s) {missing}; the NIH ChestX-ray14 format needs "
                                 f"{list(NIH_COLUMNS)}, found {list(df.columns)}")
    known = set(findings) | {"No Finding"}
    parsed = df["Finding Labels"].fillna("").astype(str).map(lambda v: [t.strip() for t in v.split("|") if t.strip()])
    bad = [(i, sorted(set(v) - known)) for i, v in parsed.items() if set(v) - known or not v]
    if bad:
        rows = "; ".join(f"row {i + 2}: {u or 'empty'}" for i, u in bad[:5])
        raise DatasetLayoutError(f"{csv_path}, column 'Finding Labels': unknown or empty finding(s) in "
                                 f"{len(bad)} row(s) ({rows}{' ...' if len(bad) > 5 else ''}); known: {sorted(known)}")
    by_name = {p.name: p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS} \
        if images_dir.is_dir() else {}
    absent = [i for i, name in df["Image Index"].items() if str(name) not in by_name]
    if absent:
        rows = ", ".join(f"{i + 2} ({df['Image Index'][i]})" for i in absent[:5])
        raise DatasetLayoutError(f"{csv_path}, column 'Image Index': {len(absent)} image(s) not found under "
                                 f"{images_dir} (CSV rows {rows}{' ...' if len(absent) > 5 else ''})")
    vecs = [tuple(float(f in v) for f in findings) for v in parsed]
    out = manifest_frame({"path": [str(by_name[str(n)]) for n in df["Image Index"]],
                          "patient_id": df["Patient ID"].astype(str).to_list(), "label": df["Finding Labels"].to_list(),
                          "label_vec": vecs, "subtype": None, "mask_path": None})
    _mark_test_split(out, test_fraction, seed)
    counts = {s: np.sum(np.stack(out[out.split == s].label_vec.to_list()), 0) for s in ("train", "test")}
    lonely = [f for k, f in enumerate(findings) if (counts["train"][k] > 0) != (counts["test"][k] > 0)]
    if lonely:
        warnings.warn(f"finding(s) present in only one split (their test AUROC is undefined or untrained): "
                      f"{lonely}", stacklevel=2)
    return out.sort_values("path", ignore_index=True)


def detect_classes(root: str | Path) -> tuple[str, ...]:
    """Class names of any folder-per-class data set: the sub-folders of its train split, sorted (NORMAL first
    when present, so index 0 stays the negative class for chest X-rays)."""
    dirs = _child_dirs(Path(root))
    if "train" not in dirs:
        raise DatasetLayoutError(f"no train/ folder in {root} to read class names from\n" + LAYOUT.format(root=root))
    names = sorted(p.name for p in _child_dirs(dirs["train"]).values())
    if len(names) < 2:
        raise DatasetLayoutError(f"{dirs['train']} needs at least two class folders, found {names}")
    return tuple(sorted(names, key=lambda n: (n.lower() != "normal", n.lower())))


def scan_dataset(root: str | Path, class_names=("NORMAL", "PNEUMONIA"), splits=SPLITS) -> pd.DataFrame:
    """Manifest of every image under ``root/{split}/{class}``: one row per image, sorted by path.

    Columns: path, split, label, label_idx, subtype (normal/bacteria/virus), patient_id, mask_path.
    A missing root, a split without class folders or an empty class folder raise
    ``DatasetLayoutError`` naming the folder and showing the expected layout. Missing splits are allowed
    here (``require_splits`` checks what a run needs).
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"data folder not found: {root}\n" + LAYOUT.format(root=root))
    rows = []
    split_dirs = _child_dirs(root)
    for split in splits:
        if split not in split_dirs:
            continue
        class_dirs = _child_dirs(split_dirs[split])
        for idx, label in enumerate(class_names):
            folder = class_dirs.get(label.lower())
            if folder is None:
                raise DatasetLayoutError(
                    f"class folder missing: {split_dirs[split] / label}\n" + LAYOUT.format(root=root))
            files = _image_files(folder)
            if not files:
                raise DatasetLayoutError(f"class folder has no images: {folder}\n" + LAYOUT.format(root=root))
            for f in files:
                subtype, patient = parse_kermany_name(f.name)
                mask = mask_beside(f)
                rows.append({"path": str(f), "split": split, "label": label, "label_idx": idx,
                             "subtype": subtype or ("normal" if idx == 0 else None),
                             "patient_id": f"{label}/{patient}" if patient == f.stem else patient,
                             "mask_path": str(mask) if mask else None})
    if not rows:
        raise DatasetLayoutError(f"no split folders ({', '.join(splits)}) in {root}\n" + LAYOUT.format(root=root))
    return manifest_frame(rows).sort_values("path", ignore_index=True)


def manifest_frame(rows) -> pd.DataFrame:
    """A manifest DataFrame whose text columns are plain Python ``str`` (object dtype): pandas 3 would infer
    Arrow strings when pyarrow is installed, and Arrow cannot hold the surrogate escapes that non-UTF-8 file
    names decode to."""
    df = pd.DataFrame(rows, dtype=object)
    if "label_idx" in df:
        df["label_idx"] = df["label_idx"].astype(int)
    return df


SUBTYPE_CLASSES = ("NORMAL", "BACTERIA", "VIRUS")


def apply_subtypes(df: pd.DataFrame) -> pd.DataFrame:
    """Relabel a NORMAL/PNEUMONIA manifest NORMAL / BACTERIA / VIRUS from the Kermany file names
    (``person1_bacteria_1.jpeg``). Pneumonia files whose name says neither are dropped with a warning that
    names them."""
    unknown = df[df["subtype"].isna()]
    if len(unknown):
        import warnings
        warnings.warn(f"--task subtype: {len(unknown)} pneumonia file(s) name neither bacteria nor virus and are "
                      f"left out, e.g. {unknown['path'].iloc[0]}", stacklevel=2)
        df = df.drop(unknown.index)
    order = {name.lower(): i for i, name in enumerate(SUBTYPE_CLASSES)}
    return df.assign(label=df["subtype"].str.upper(), label_idx=df["subtype"].map(order).astype(int)
                     ).reset_index(drop=True)


MASK_CLASSES = ("NO_LESION", "LESION")


def scan_mask_folders(root: str | Path, test_fraction: float = 0.2, seed: int = 42) -> pd.DataFrame:
    """Manifest of a mask-aware layout without split folders, such as the Kaggle LGG brain-MRI set:
    ``root/<case>/<name>.tif`` with ``<name>_mask.tif`` beside it. Label = the mask is not empty
    (LESION / NO_LESION); patient = case folder; train/test split by case (seeded). Images without a mask
    file are skipped with a warning naming the first one."""
    import warnings
    root = Path(root)
    rows, lonely = [], []
    for case in _child_dirs(root).values():
        for f in _image_files(case):
            mask = mask_beside(f)
            if mask is None:
                lonely.append(f)
                continue
            try:
                positive = bool(read_gray(mask).any())
            except ImageReadError as exc:
                lonely.append(f"{mask} ({exc.reason})")
                continue
            rows.append({"path": str(f), "label": MASK_CLASSES[positive], "label_idx": int(positive),
                         "subtype": None, "patient_id": case.name, "mask_path": str(mask)})
    if lonely:
        warnings.warn(f"{len(lonely)} image(s) without a readable mask skipped, e.g. {lonely[0]}", stacklevel=2)
    if not rows:
        raise DatasetLayoutError(f"no <case>/<name>.<ext> + <name>_mask.<ext> pairs under {root}")
    return _mark_test_split(manifest_frame(rows), test_fraction, seed).sort_values("path", ignore_index=True)


def has_split_folders(root: str | Path) -> bool:
    root = Path(root)
    return root.is_dir() and bool({"train", "test"} & set(_child_dirs(root)))


def find_data_root(root: str | Path) -> tuple[Path, str | None]:
    """The folder holding the split folders: ``root`` itself, or — a Kaggle zip unpacked as it comes, such as
    ``chest_xray/chest_xray/train`` — the one sub-folder of ``root`` that has them, with a note saying so.
    Anything else returns ``root`` unchanged (the scan then explains the expected layout)."""
    root = Path(root)
    if not root.is_dir() or has_split_folders(root):
        return root, None
    nested = [d for d in _child_dirs(root).values() if has_split_folders(d)]
    if len(nested) == 1:
        return nested[0], f"data found one folder down, in {nested[0]} (the Kaggle zip's nested layout); using it"
    return root, None
