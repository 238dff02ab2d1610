"""Splits of a manifest: patient-grouped test and holdout splits, the stratified training limit, k folds by patient,
the validation choice ("test" | "val" | "holdout:F"), and balanced class weights."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .layout import LAYOUT, DatasetLayoutError


def patient_split(df: pd.DataFrame, fraction: float, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """Row positions (kept, held out) with ``fraction`` of the patients held out, seeded: no patient on both sides."""
    from sklearn.model_selection import GroupShuffleSplit
    return next(GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed).split(df, groups=df["patient_id"]))


def _mark_test_split(df: pd.DataFrame, test_fraction: float, seed: int) -> pd.DataFrame:
    """Add a "split" column: ``test_fraction`` of the patients are "test", the rest "train"."""
    _, te = patient_split(df, test_fraction, seed)
    df["split"] = "train"
    df.loc[df.index[te], "split"] = "test"
    return df


def require_splits(df: pd.DataFrame, *splits: str, root: str | Path = "chest_xray") -> None:
    missing = [s for s in splits if not (df["split"] == s).any()]
    if missing:
        raise DatasetLayoutError(f"split folder(s) missing: {', '.join(str(Path(root) / s) for s in missing)}\n"
                                 + LAYOUT.format(root=root))


def limit_train(df: pd.DataFrame, limit: int | None, seed: int = 42) -> pd.DataFrame:
    """Keep at most ``limit`` train images, stratified by class and seeded; val and test stay whole."""
    if limit is None or (df["split"] == "train").sum() <= limit:
        return df
    from sklearn.model_selection import train_test_split
    train = df[df["split"] == "train"]
    strata = train["label_idx"] if "label_idx" in train else None          # multi-label: unstratified
    kept, _ = train_test_split(train, train_size=limit, stratify=strata, random_state=seed)
    return pd.concat([kept, df[df["split"] != "train"]]).sort_values("path", ignore_index=True)


def holdout_split(train: pd.DataFrame, fraction: float, seed: int = 42) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split ``train`` into (train, holdout) by patient id: no patient appears on both sides."""
    tr, ho = patient_split(train, fraction, seed)
    return train.iloc[tr].reset_index(drop=True), train.iloc[ho].reset_index(drop=True)


def kfold_splits(train: pd.DataFrame, folds: int, seed: int = 42) -> list[tuple[np.ndarray, np.ndarray]]:
    """``folds`` (train rows, validation rows) index pairs over ``train``: stratified by class, grouped by
    patient (no patient on both sides of a fold), seeded."""
    from sklearn.model_selection import StratifiedGroupKFold
    if folds < 2:
        raise ValueError(f"--folds needs at least 2 folds, got {folds}")
    if train["patient_id"].nunique() < folds:
        raise ValueError(f"{folds} folds need at least {folds} patients, the train split has "
                         f"{train['patient_id'].nunique()}")
    if "label_idx" not in train:                                   # multi-label: grouped, not stratified
        from sklearn.model_selection import GroupKFold
        return list(GroupKFold(n_splits=folds, shuffle=True, random_state=seed).split(train,
                                                                                      groups=train["patient_id"]))
    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(cv.split(train, train["label_idx"], groups=train["patient_id"]))


def select_validation(df: pd.DataFrame, validation: str, seed: int = 42):
    """Return (train, validation, test, note) for ``validation`` = "test" | "val" | "holdout:F".

    "test" reproduces the reference notebook (Kermany's val split has only 16 images) and says that test metrics are
    then optimistic, because the test split also chose the best epoch and the learning-rate schedule.
    """
    train, test = df[df.split == "train"], df[df.split == "test"]
    if validation == "test":
        note = ("validation = the test split (as the reference notebook does; val has only 16 images): "
                "early stopping and checkpoint selection see the test images, so test metrics are optimistic. "
                "Use --validation holdout:0.1 for an unbiased estimate.")
        return train.reset_index(drop=True), test.reset_index(drop=True), test.reset_index(drop=True), note
    if validation == "val":
        val = df[df.split == "val"]
        if val.empty:
            raise DatasetLayoutError("--validation val asked for, but there is no val/ split folder; "
                                     "use --validation test or --validation holdout:0.1")
        note = f"validation = the val split ({len(val)} images)"
        return train.reset_index(drop=True), val.reset_index(drop=True), test.reset_index(drop=True), note
    if validation.startswith("holdout:"):
        fraction = float(validation.split(":", 1)[1])
        if not 0 < fraction < 1:
            raise ValueError(f"holdout fraction must be in (0, 1), got {fraction}")
        tr, ho = holdout_split(train, fraction, seed)
        note = (f"validation = {len(ho)} train images of {ho.patient_id.nunique()} patients held out "
                f"({fraction:.0%}, grouped by patient); the test split stays unseen until evaluation")
        return tr, ho, test.reset_index(drop=True), note
    raise ValueError(f"--validation must be test, val or holdout:FRACTION, got {validation!r}")


def class_weights(labels, num_classes: int | None = None) -> dict[int, float]:
    """Balanced class weights (scikit-learn): n_samples / (n_classes * count_c), so each class sums to n/K."""
    from sklearn.utils.class_weight import compute_class_weight
    labels = np.asarray(labels)
    classes = np.arange(num_classes if num_classes else labels.max() + 1)
    w = compute_class_weight("balanced", classes=classes, y=labels)
    return {int(c): float(v) for c, v in zip(classes, w)}
