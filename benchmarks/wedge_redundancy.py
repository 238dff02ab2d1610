"""Why the removal maps miss the real wedge: how much of a wedge model's P(pneumonia) goes away when one patch of
the wedge is removed, and when all of it is. On NORMAL films of the *training* split (never the test split), with
the models trained by ``shortcut_protocol.py train``:

    python benchmarks/wedge_redundancy.py --out benchmarks/runs/shortcut_protocol \
        obstruction_050_s42 obstruction_080_s42 obstruction_100_s42

Per model, mean P(pneumonia) of the same films: clean; with the wedge; with one occlusion patch (1/8 of the side,
the explainer's default, filled with the film's mean) over the wedge's thick end; with the whole wedge filled by
the film's mean, by the mean training film, or inpainted (OpenCV Telea). Results:
benchmarks/results/wedge_redundancy.json.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "kermany224" / "chest_xray"
RESULTS = Path(__file__).resolve().parent / "results" / "wedge_redundancy.json"


def variants(clean: np.ndarray, reference: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """The films (N, H, W) uint8 clean, with the wedge, and with parts of the wedge removed in each way."""
    import cv2

    from xai_cxr.data.confounders import apply
    confounded, masks = apply("obstruction", clean, seed)

    def filled(values):
        out = confounded.astype(np.float32)
        out[masks] = np.broadcast_to(values, out.shape)[masks]
        return np.clip(out, 0, 255).astype(np.uint8)

    side = clean.shape[1] // 8
    patch = confounded.copy()
    patch[:, -side:, :side] = confounded.mean(axis=(1, 2), keepdims=True).astype(np.uint8)[:, :, :1]
    return {"clean": clean, "wedge": confounded, "wedge, one 1/8 patch at its thick end → film mean": patch,
            "whole wedge → film mean": filled(confounded.mean(axis=(1, 2), keepdims=True)),
            "whole wedge → mean training film": filled(reference[None]),
            "whole wedge → inpainted (Telea)": np.stack([cv2.inpaint(c, m.astype(np.uint8), 5, cv2.INPAINT_TELEA)
                                                         for c, m in zip(confounded, masks)])}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+")
    p.add_argument("--out", type=Path, default=Path("benchmarks/runs/shortcut_protocol"))
    p.add_argument("--data-dir", type=Path, default=DATA)
    p.add_argument("--n-films", type=int, default=120)
    args = p.parse_args(argv)
    if not args.data_dir.is_dir():
        sys.exit(f"no Kermany copy at {args.data_dir} (see ../shared/data/README.md)")
    from xai_cxr.data import load_images
    from xai_cxr.explain.metrics.audit import predictor
    from xai_cxr.models import BACKBONES, ModelFolder
    from xai_cxr.tasks import get_task
    rows = []
    for run in args.runs:
        model, card = ModelFolder(args.out / "weights" / run).load()
        df = get_task("binary").scan(args.data_dir, card.class_names, 42)
        train = df[df.split == "train"]
        load = lambda part: load_images(part, card.image_size, progress=False, clahe=card.clahe,  # noqa: E731
                                        geometry=card.geometry).images
        normal = load(train[train.label_idx == 0].sample(args.n_films, random_state=0))
        reference = load(train.sample(3 * args.n_films, random_state=1)).astype(np.float32).mean(0)
        predict = predictor(model, BACKBONES[card.backbone].preprocess)
        for name, films in variants(normal, reference, seed=7).items():
            p_pos = predict(films)[:, 1]
            rows.append({"run": run, "films": name, "n": int(len(films)), "p_pneumonia": float(p_pos.mean()),
                         "share_over_0.5": float((p_pos > 0.5).mean())})
            print(f"{run:22s} {name:55s} P(pneumonia) {p_pos.mean():.3f}  > 0.5: {(p_pos > 0.5).mean():.2f}",
                  flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"date": dt.date.today().isoformat(), "split": "train (NORMAL films)",
                                   "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
