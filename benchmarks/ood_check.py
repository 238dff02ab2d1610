"""Where the truth is known: what the out-of-distribution detector of a trained model says.

For a model trained on Kermany (WEIGHTS_DIR, e.g. a run of benchmarks/accuracy.py): the share flagged of the
Kermany test films (should be low), of synthetic phantoms (should be ≥ 95%), of the 100 original-aspect Kermany
train films (in distribution but resized differently), and the verdict + prediction on the one real adult NIH
DICOM. For the phantom model (the app's fallback): the share of real films flagged. Writes
benchmarks/results/ood_check.json.

    python benchmarks/ood_check.py --weights-dir benchmarks/runs/cxr-res/seed42/weights
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results" / "ood_check.json"


def flagged(predictor, grays) -> dict:
    preds = predictor.predict(np.asarray(grays), mc=False)
    flags = np.array([p.out_of_distribution for p in preds])
    return {"n": int(len(flags)), "flagged": int(flags.sum()), "share": float(flags.mean()),
            "median_score": float(np.median([p.ood_score for p in preds]))}


def films(root: Path, split: str, size: int, clahe: bool, n_per_class: int | None = None) -> np.ndarray:
    from xai_cxr.data import load_images, scan_dataset
    df = scan_dataset(root)
    df = df[df.split == split]
    if n_per_class:
        df = df.groupby("label").head(n_per_class)
    return load_images(df, size, progress=False, clahe=clahe).images


def main(argv=None) -> int:
    from xai_cxr.runtime import quiet_tensorflow
    quiet_tensorflow()
    from xai_cxr.data import fit_size, read_gray
    from xai_cxr.data.phantom import PhantomConfig, write_phantom_dataset
    from xai_cxr.serve.inference import Predictor, phantom_predictor
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights-dir", type=Path, required=True)
    p.add_argument("--work", type=Path, default=Path("benchmarks/runs/ood_check"))
    args = p.parse_args(argv)
    pred = Predictor.from_weights_dir(args.weights_dir)
    if pred.ood is None:
        sys.exit(f"{args.weights_dir} has no ood.npz: train it with this version first")
    size, clahe = pred.card.image_size, pred.card.clahe
    phantoms = write_phantom_dataset(args.work / "phantoms", PhantomConfig(image_size=size, n_train=0, n_test=50))
    k224 = SHARED / "kermany224" / "chest_xray"
    dcm = SHARED / "dicom" / "nih-chestxray14-no-finding.dcm"
    nih = pred.predict(fit_size(read_gray(dcm), size, clahe)[None], mc=True)[0]
    out = {"date": dt.date.today().isoformat(), "weights_dir": str(args.weights_dir),
           "threshold": pred.ood.threshold, "calibrated_on": pred.ood.calibrated_on,
           "kermany224_test": flagged(pred, films(k224, "test", size, clahe)),
           "phantoms": flagged(pred, films(phantoms, "test", size, clahe)),
           "kermany_original_aspect_sample": flagged(pred, films(SHARED / "kermany-original-sample" / "chest_xray",
                                                               "train", size, clahe)),
           "nih_no_finding_dicom": {k: getattr(nih, k) for k in ("label", "confidence", "uncertainty", "referred",
                                                                  "ood_score", "out_of_distribution")}}
    fallback = phantom_predictor(args.work / "phantom_cache")
    out["phantom_model_on_kermany224_test"] = flagged(fallback, films(k224, "test", fallback.card.image_size, False,
                                                                      n_per_class=100))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
