"""Exported models against the Keras model, side by side: parity of the calibrated probabilities on real films
(the 224-px Kermany test split, prepared as each model's card says) and the export's size and speed.

    python benchmarks/export_parity.py --runs WEIGHTS_DIR [WEIGHTS_DIR ...] [--films 128]
    # → benchmarks/results/export_parity.json
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "kermany224" / "chest_xray"
RESULTS = ROOT / "benchmarks" / "results" / "export_parity.json"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", type=Path, required=True)
    p.add_argument("--films", type=int, default=128)
    p.add_argument("--work", type=Path, default=Path("/tmp/export_parity"))
    args = p.parse_args(argv)
    from xai_cxr.data import load_images, scan_dataset
    from xai_cxr.models import load_trained_model
    from xai_cxr.models.calibration import apply_temperature, load_temperature
    from xai_cxr.serve.export import FORMATS, _model_input, export, run_export
    if not DATA.is_dir():
        sys.exit(f"no Kermany copy at {DATA}")
    df = scan_dataset(DATA)
    test = df[df.split == "test"].sample(args.films, random_state=0)
    rows = []
    for run in args.runs:
        model, card = load_trained_model(run)
        films = load_images(test, card.image_size, progress=False, clahe=card.clahe, geometry=card.geometry).images
        model(_model_input(films[:4], card), training=False)                     # warm-up, as for the exports
        t0 = time.perf_counter()
        keras_p = apply_temperature(np.asarray(model(_model_input(films, card), training=False)),
                                    load_temperature(run)).astype(np.float32)
        keras_ms = 1000 * (time.perf_counter() - t0) / len(films)
        for fmt in FORMATS:
            out = args.work / f"{run.parent.name}_{fmt}"
            summary = export(run, fmt, out)
            run_export(out / summary["file"], fmt, films[:4])                      # warm-up
            t0 = time.perf_counter()
            got = run_export(out / summary["file"], fmt, films)
            ms = 1000 * (time.perf_counter() - t0) / len(films)
            decisions = (got[:, -1] >= card.threshold) != (keras_p[:, -1] >= card.threshold)
            rows.append({"run": str(run), "backbone": card.backbone, "image_size": card.image_size, "format": fmt,
                         "size_mb": round(summary["size_bytes"] / 1e6, 2),
                         "max_abs_diff_real_films": float(np.abs(got - keras_p).max()),
                         "max_abs_diff_phantoms": summary["parity_max_abs_diff"],
                         "decisions_changed": int(decisions.sum()), "films": len(films),
                         "ms_per_film_export": round(ms, 2), "ms_per_film_keras": round(keras_ms, 2)})
            print(json.dumps(rows[-1]), flush=True)
    RESULTS.write_text(json.dumps({"date": dt.date.today().isoformat(),
                                   "command": "python benchmarks/export_parity.py --runs " +
                                              " ".join(str(r) for r in args.runs), "rows": rows}, indent=2))
    print(f"→ {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
