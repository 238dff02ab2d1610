"""Section 6b's planted tag on phantoms, and the shortcut probes on the two models it trains.

The notebook's settings (`cxr-small`, 240 phantom training films, 10 epochs, the "CXR-ROOM1" tag on every PNEUMONIA
training film, degree 0 as the control) at one input size: does the tagged model use the tag, does Grad-CAM find
it, does the control stay quiet? Then `explain/metrics/probes.py` on both models, on the test films with and without
the tag: the measurements behind the corner probe's threshold (docs/results.md, "What does my model read?").

    python benchmarks/tag_lesson.py --size 96      # → benchmarks/results/tag_lesson_96.json
    python benchmarks/tag_lesson.py --size 96 --data ../shared/data/kermany224/chest_xray   # real films
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
RESULTS = Path(__file__).resolve().parent / "results"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--films", type=int, default=240)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--work", type=Path, default=Path("/tmp/tag_lesson"))
    p.add_argument("--data", type=Path, default=None, help="a real data folder (train/ and test/) instead of phantoms")
    args = p.parse_args(argv)
    from xai_cxr.config import CamConfig, ModelConfig, TrainConfig
    from xai_cxr.data import load_images, scan_dataset
    from xai_cxr.data.confounders import apply
    from xai_cxr.explain.metrics.probes import model_predictor, what_the_model_reads
    from xai_cxr.explain.metrics.shortcut import lesson
    from xai_cxr.models import load_trained_model
    from xai_cxr.recipes import demo_configs
    from xai_cxr.studies import run_shortcut_audit
    data_root = args.data.resolve() if args.data else None
    work = args.work / (f"{args.size}" + ("_real" if data_root else ""))
    os.makedirs(work, exist_ok=True)
    os.chdir(work)                                             # demo_configs writes phantoms/ here
    data, _, _, _ = demo_configs(None, seed=42)
    if data_root is not None:
        data = replace(data, root=str(data_root))
    small = replace(data, image_size=args.size, limit=args.films, batch_size=16, validation="holdout:0.1", augment=None)
    train = replace(TrainConfig(seed=42).with_epochs(stage1=args.epochs, stage2=0), verbose=0)
    results = run_shortcut_audit(small, ModelConfig(backbone="cxr-small", weights="none"), train,
                                 CamConfig(n_samples=4), ["tag"], [0.0, 1.0], ("gradcam", "hirescam", "smoothgrad"),
                                 "out", "weights", "copies", n_images=20, quiet=True)
    print(lesson(results))
    out = {"date": dt.date.today().isoformat(), "command": f"python benchmarks/tag_lesson.py --size {args.size}"
           + (f" --data {args.data}" if args.data else ""), "data": str(args.data or "phantoms"), "size": args.size,
           "films": args.films, "epochs": args.epochs,
           "runs": [{**r.summary, "table": r.table.to_dict("records")} for r in results], "lesson": lesson(results),
           "probes": {}}
    df = scan_dataset(work / "copies" / "tag_100" / "chest_xray")
    for name in ("tag_100", "clean_000"):
        model, card = load_trained_model(work / "weights" / name)
        test = load_images(df[df.split == "test"], card.image_size, progress=False)
        tagged, _ = apply("tag", test.images, 42)
        for films, images in (("clean films", test.images), ("films with the tag", tagged)):
            report = what_the_model_reads(model_predictor(model, card.backbone), images, test.labels)
            out["probes"][f"{name}, {films}"] = report.verdict.to_dict("records")
            print(f"--- {name}, {films}\n{report.verdict[['probe', 'measured', 'verdict']].to_string(index=False)}")
    dest = RESULTS / f"tag_lesson_{args.size}{'_real' if data_root else ''}.json"
    dest.write_text(json.dumps(out, indent=2, default=float))
    print(f"→ {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
