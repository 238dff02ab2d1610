"""A disk-backed store of decoded images, for sets too large to hold in RAM (NIH ChestX-ray14: 112,120 films =
7.3 GB at 256 px).

Images are decoded once, chunk by chunk, into one memory-mapped ``.npy`` file per (file list, size, colour,
CLAHE) — the key hashes each file's path, size and modification time plus those settings, as the feature cache
keys on what it was computed from. Training then reads batches from the map (``make_dataset`` gathers rows by
index), so resident memory stays bounded by the page cache, not by the data set. The in-memory path
(``load_images``) stays the default for small sets.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from .images import ImageSet, load_images

STORE_VERSION = 1          # bump when decoding changes, so old stores are not reused


def store_key(paths, size: int, color: bool = False, clahe: bool = False, geometry: str = "squash") -> str:
    h = hashlib.sha256(f"v{STORE_VERSION}|{size}|{color}|{clahe}|{geometry}".encode())
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"|{p}|{st.st_size}|{st.st_mtime_ns}".encode())
        except OSError:
            h.update(f"|{p}|missing".encode())
    return h.hexdigest()[:24]


def load_images_stored(manifest: pd.DataFrame, size: int, store_dir: str | Path, workers: int = 4,
                       color: bool = False, clahe: bool = False, chunk: int = 1024,
                       progress: bool = True, geometry: str = "squash") -> ImageSet:
    """``load_images`` backed by ``store_dir``: reuse the stored decode when the key matches, else decode in
    chunks of ``chunk`` images into a new memory-mapped file (written under a temporary name, renamed when
    complete, so an interrupted decode is never reused). ``images`` is a read-only ``np.memmap``."""
    paths = manifest["path"].tolist()
    folder = Path(store_dir) / store_key(paths, size, color, clahe, geometry)
    if not (folder / "index.json").is_file():
        _build(manifest, size, folder, workers, color, clahe, chunk, progress, geometry)
    index = json.loads((folder / "index.json").read_text())
    images = np.load(folder / "images.npy", mmap_mode="r")
    kept = manifest.iloc[index["kept"]].reset_index(drop=True)
    return ImageSet(images, kept, [tuple(s) for s in index["skipped"]])


def _build(manifest, size, folder: Path, workers, color, clahe, chunk, progress, geometry="squash") -> None:
    from numpy.lib.format import open_memmap
    from tqdm.auto import tqdm
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shape = (len(manifest), size, size, *((3,) if color else ()))
    out = open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8, shape=shape)
    kept, skipped, n = [], [], 0
    for start in tqdm(range(0, len(manifest), chunk), desc="decoding to store", disable=not progress, leave=False):
        part = manifest.iloc[start:start + chunk]
        decoded = load_images(part, size, workers, progress=False, color=color, clahe=clahe, geometry=geometry)
        out[n:n + len(decoded.images)] = decoded.images
        rows = {p: i for i, p in enumerate(part["path"])}
        kept += [start + rows[p] for p in decoded.manifest["path"]]
        skipped += decoded.skipped
        n += len(decoded.images)
    out.flush()
    del out
    if n < shape[0]:                               # unreadable files: shrink the file to the decoded rows
        full = np.load(tmp / "images.npy", mmap_mode="r")
        np.save(tmp / "images_kept.npy", full[:n])
        del full
        os.replace(tmp / "images_kept.npy", tmp / "images.npy")
    (tmp / "index.json").write_text(json.dumps({"kept": kept, "skipped": skipped, "shape": [n, *shape[1:]]}))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
