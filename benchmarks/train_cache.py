"""Two-stage training, naive (frozen VGG19 run on every step) vs the frozen-feature cache vs the default width
jitter (`--augment aspect`, which changes every image every epoch and so bypasses the cache), side by side on the
same decoded images, the same seed and the same epochs. Writes benchmarks/results/train_cache.json.

    python benchmarks/train_cache.py [--train 300] [--test 200] [--image-size 224] [--epochs1 2] [--epochs2 1]

Uses the 224-px Kermany copy in ../shared/data when present (phantoms otherwise). ImageNet weights are used
when the Keras cache file exists, random weights otherwise: the timing does not depend on the weights.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = Path(__file__).resolve().parent
KERMANY = HERE.parent.parent / "shared" / "data" / "kermany224" / "chest_xray"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=300)
    ap.add_argument("--test", type=int, default=200)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--epochs1", type=int, default=2)
    ap.add_argument("--epochs2", type=int, default=1)
    args = ap.parse_args()
    import numpy as np

    from xai_cxr.config import DataConfig, ModelConfig, TrainConfig
    from xai_cxr.data.phantom import PhantomConfig, write_phantom_dataset
    from xai_cxr.models import build_model, imagenet_available
    from xai_cxr.models.train import seed_everything
    from xai_cxr.pipeline import evaluate_on_test, fit, prepare_data

    root = KERMANY if KERMANY.is_dir() else write_phantom_dataset(HERE / "results" / "phantoms", PhantomConfig())
    from xai_cxr.config import AUGMENT_PRESETS
    data = DataConfig(root=str(root), image_size=args.image_size, limit=args.train, seed=0, augment=None)
    prep = prepare_data(data, progress=False)
    rng = np.random.default_rng(0)                                   # a stratified-ish subset of the test split
    keep = np.sort(rng.permutation(len(prep.test.images))[:args.test])
    prep.test.images, prep.test.manifest = prep.test.images[keep], prep.test.manifest.iloc[keep].reset_index(drop=True)
    prep.val = prep.test
    weights = "imagenet" if imagenet_available() else "none"
    rows = {}
    runs = (("naive", False, None), ("feature_cache", True, None), ("width_jitter_default", True,
                                                                    AUGMENT_PRESETS["aspect"]))
    for name, cache, augment in runs:
        train = replace(TrainConfig(seed=0, verbose=0, feature_cache=cache), early_stopping_patience=100
                        ).with_epochs(args.epochs1, args.epochs2)
        seed_everything(0)
        model = build_model(ModelConfig(backbone="vgg19", weights=weights), args.image_size)
        t0 = time.perf_counter()
        history = fit(model, prep, replace(data, augment=augment), train, HERE / "results" / f"weights_{name}")
        total = time.perf_counter() - t0
        metrics, _ = evaluate_on_test(model, prep.test, data)
        rows[name] = {"total_train_seconds": round(total, 1),
                      "stage1_epoch_seconds": [round(s, 2) for s in history["stage1"]["epoch_seconds"]],
                      "stage2_epoch_seconds": [round(s, 2) for s in history.get("stage2", {}).get("epoch_seconds", [])],
                      "accuracy": metrics["accuracy"], "roc_auc": metrics["roc_auc"]}
        print(name, json.dumps(rows[name]))
    n, c, j = rows["naive"], rows["feature_cache"], rows["width_jitter_default"]
    result = {"data": "kermany224" if KERMANY.is_dir() else "phantoms", "weights": weights,
              "train_images": len(prep.train.images), "val_test_images": len(prep.test.images),
              "image_size": args.image_size, "epochs": [args.epochs1, args.epochs2], "runs": rows,
              "speedup_total": round(n["total_train_seconds"] / c["total_train_seconds"], 2),
              "speedup_stage1_epoch": round(np.mean(n["stage1_epoch_seconds"]) / np.mean(c["stage1_epoch_seconds"]), 1),
              "speedup_stage2_epoch": round(np.mean(n["stage2_epoch_seconds"]) / np.mean(c["stage2_epoch_seconds"]), 1)
              if n["stage2_epoch_seconds"] else None,
              "width_jitter_cost_total": round(j["total_train_seconds"] / c["total_train_seconds"], 2),
              "date": __import__("datetime").date.today().isoformat(),
              "command": "python benchmarks/train_cache.py"}
    dest = HERE / "results" / "train_cache.json"
    dest.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2), "→", dest)


if __name__ == "__main__":
    main()
