"""Streaming inference for large image sets: decode, predict and explain in fixed-size chunks, so memory
does not grow with the number of images (only the per-image results do: a few numbers each)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import load_images, to_model_input
from .images import tta_views


def stream_predict(model, manifest: pd.DataFrame, image_size: int, preprocess, chunk: int = 256,
                   cam=None, workers: int = 4, progress: bool = False, color: bool = False, batch_size: int = 64,
                   per_chunk=None, clahe: bool = False, tta: tuple[str, ...] = (),
                   geometry: str = "squash"):
    """Probabilities for every readable image of ``manifest``, chunk by chunk.

    With ``cam`` (a CAM object), also the hottest pixel (row, col) of each predicted-class map — the
    summary the pointing game needs — without keeping any map. With ``per_chunk`` (decoded images → one record
    per image, e.g. ``Predictor.predict``'s decisions), also those records. Returns a dict: ``proba`` (N, K),
    ``labels`` (N,) or multi-hot (N, K) when the manifest has labels, ``paths`` (N,), ``peaks`` (N, 2) or None,
    ``records`` (a list of N) or None, and ``skipped`` [(path, reason)]. ``tta``: names of
    ``data.images.TTA_TRANSFORMS``; the probabilities are then the mean over those views.
    """
    from tqdm.auto import tqdm
    proba, labels, paths, peaks, skipped, records = [], [], [], [], [], []
    for start in tqdm(range(0, len(manifest), chunk), desc="streaming", disable=not progress, leave=False):
        part = load_images(manifest.iloc[start:start + chunk], image_size, workers, progress=False, color=color,
                           clahe=clahe, geometry=geometry)
        skipped += part.skipped
        if not len(part.images):
            continue
        x = to_model_input(part.images, preprocess).numpy()
        if tta:                                       # the mean probability over the listed views
            p = np.mean([model.predict(to_model_input(v, preprocess).numpy(), batch_size=batch_size, verbose=0)
                         for v in tta_views(part.images, tta)], axis=0)
        else:
            p = model.predict(x, batch_size=batch_size, verbose=0)
        proba.append(p)
        paths += part.manifest["path"].tolist()
        if {"label_idx", "label_vec"} & set(part.manifest):        # class indices or multi-hot vectors
            labels.append(part.labels)
        if per_chunk is not None:
            records += list(per_chunk(part.images))
        if cam is not None:
            maps = cam(x, targets=p.argmax(1))
            flat = maps.reshape(len(maps), -1).argmax(1)
            peaks.append(np.stack(np.unravel_index(flat, maps.shape[1:]), 1))
    k = model.output_shape[-1]
    return {"proba": np.concatenate(proba) if proba else np.zeros((0, k)),
            "labels": np.concatenate(labels) if labels else None,
            "paths": np.array(paths),
            "peaks": np.concatenate(peaks) if peaks else None,
            "records": records if per_chunk is not None else None,
            "skipped": skipped}
