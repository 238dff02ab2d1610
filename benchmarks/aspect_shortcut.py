"""The squash shortcut: does a model read how wide the chest looks?

The 224-px Kermany copy squashed every film to a square. Kermany's originals differ in aspect ratio by class
(on the 100 original-aspect train films: NORMAL 1.21 ± 0.11 width/height, PNEUMONIA 1.57 ± 0.39), so after the
squash a narrow-looking chest is a PNEUMONIA cue that no radiologist would use. This script measures (1) how well
the original aspect ratio alone separates the classes on those 100 films and (2) what a trained model does when
the decoded test films are made narrower or wider about their centre (width × f, height unchanged, black fill):
a model free of the shortcut keeps its predictions; one that uses it calls narrowed NORMAL films pneumonia.

    python benchmarks/aspect_shortcut.py --runs benchmarks/runs/cxr-res/seed42 \
        benchmarks/runs/cxr-res-aspect-op95/seed42

`--last-epoch` probes each run's last-epoch weights (`weights/train_state/stage1/latest.weights.h5`, what
`--keep last` keeps) instead of its best holdout epoch's. Writes benchmarks/results/aspect_shortcut.json (raw
probabilities, threshold 0.5, no calibration).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results" / "aspect_shortcut.json"
FACTORS = (0.8, 0.9, 1.0, 1.1, 1.25)

from xai_cxr.explain.metrics.probes import width_scaled  # noqa: E402  (the probe `xai-cxr audit` runs)


def aspect_auc(root: Path) -> dict:
    """ROC-AUC of the original width/height ratio for PNEUMONIA on the original-aspect films."""
    import cv2
    from sklearn.metrics import roc_auc_score
    ratios, labels = [], []
    for k, name in enumerate(("NORMAL", "PNEUMONIA")):
        for f in sorted((root / name).glob("*.jp*g")):
            h, w = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE).shape
            ratios.append(w / h)
            labels.append(k)
    r, y = np.array(ratios), np.array(labels)
    return {"n": len(r), "auc_of_aspect_ratio_for_pneumonia": float(roc_auc_score(y, r)),
            **{f"{name}_ratio_mean_sd": [float(r[y == k].mean()), float(r[y == k].std())]
               for k, name in enumerate(("NORMAL", "PNEUMONIA"))}}


def probe(run: Path, data: Path, last_epoch: bool = False) -> dict:
    from sklearn.metrics import roc_auc_score

    from xai_cxr.config import DataConfig
    from xai_cxr.models import BACKBONES, load_trained_model
    from xai_cxr.models.predict import predict_images
    from xai_cxr.pipeline import prepare_data
    model, card = load_trained_model(run / "weights")
    if last_epoch:
        model.load_weights(run / "weights" / "train_state" / "stage1" / "latest.weights.h5")
    cfg = DataConfig(root=str(data), image_size=card.image_size, validation="holdout:0.1", clahe=card.clahe,
                     seed=card.seed)
    test = prepare_data(cfg, progress=False).test
    y, pre = test.labels, BACKBONES[card.backbone].preprocess
    rows = []
    for f in FACTORS:
        p = predict_images(model, width_scaled(test.images, f), pre, batch_size=64)[:, 1]
        rows.append({"width_factor": f, "mean_p_pneumonia_normal_films": float(p[y == 0].mean()),
                     "specificity": float((p[y == 0] < 0.5).mean()), "sensitivity": float((p[y == 1] >= 0.5).mean()),
                     "roc_auc": float(roc_auc_score(y, p))})
    by = {r["width_factor"]: r for r in rows}
    return {"run": str(run), "seed": card.seed, "weights": "last epoch" if last_epoch else "best holdout epoch",
            "rows": rows,
            "specificity_drop_at_0.9": by[1.0]["specificity"] - by[0.9]["specificity"]}


def main(argv=None) -> int:
    from xai_cxr.runtime import quiet_tensorflow
    quiet_tensorflow()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=Path, nargs="+", required=True)
    p.add_argument("--data-dir", type=Path, default=SHARED / "kermany224" / "chest_xray")
    p.add_argument("--last-epoch", action="store_true", help="probe the last epoch's weights, not the best's")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if not args.data_dir.is_dir():
        sys.exit(f"no Kermany copy at {args.data_dir} (see ../shared/data/README.md)")
    out = {"date": dt.date.today().isoformat(),
           "command": " ".join(["python benchmarks/aspect_shortcut.py", *(argv if argv is not None else sys.argv[1:])]),
           "original_aspect_sample": aspect_auc(SHARED / "kermany-original-sample" / "chest_xray" / "train"),
           "runs": [probe(r, args.data_dir, args.last_epoch) for r in args.runs]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
