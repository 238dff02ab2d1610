"""Decoder fuzzing at scale: 5,000 seeded mutations of real files (the NIH DICOM, full-resolution Kermany JPEGs,
and PNG/TIFF/DICOM re-encodings of one film) through ``decode_image``, in a child process. Writes
benchmarks/results/fuzz_decoder.json (counts by outcome, the slowest case, peak RSS, failures).

    python benchmarks/fuzz_decoder.py --cases 5000
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results" / "fuzz_decoder.json"


def seed_files(folder: Path) -> None:
    import cv2
    import numpy as np
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    originals = sorted((SHARED / "kermany-original-sample" / "full-resolution").rglob("*.jp*g"))[:3]
    for p in originals:
        (folder / p.name).write_bytes(p.read_bytes())
    dcm = SHARED / "dicom" / "nih-chestxray14-no-finding.dcm"
    if dcm.is_file():
        (folder / "nih.dcm").write_bytes(dcm.read_bytes())
    film = cv2.imread(str(originals[0]), cv2.IMREAD_GRAYSCALE) if originals else \
        np.random.default_rng(0).integers(0, 255, (256, 256), dtype=np.uint8)
    film = cv2.resize(film, (256, 256))
    cv2.imwrite(str(folder / "film.png"), film)
    cv2.imwrite(str(folder / "film.tif"), film)
    cv2.imwrite(str(folder / "film16.png"), film.astype(np.uint16) * 257)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.1.1", generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("film16.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 256, 256, 1, "MONOCHROME1"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (film.astype(np.uint16) * 16).tobytes()
    ds.save_as(folder / "film16.dcm", enforce_file_format=True)
    del pydicom


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=5000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        seed_files(Path(tmp))
        out = subprocess.run([sys.executable, "-m", "xai_cxr.testing.fuzz", tmp, str(args.cases), str(args.seed)],
                             capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        print(out.stderr[-3000:])
        return out.returncode
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    summary.update(date=dt.date.today().isoformat(), command=f"python benchmarks/fuzz_decoder.py --cases {args.cases}"
                   f" --seed {args.seed}", failures=summary["failures"][:50])
    RESULTS.write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: summary[k] for k in ("cases", "seed_files", "counts", "slowest", "peak_rss_mb")}, indent=2))
    print(f"{len(summary['failures'])} failure(s) → {RESULTS}")
    return 0 if not summary["failures"] else 1


if __name__ == "__main__":
    sys.exit(main())
