"""Score more explainers on the models a planted-shortcut run already trained, without retraining:
`python benchmarks/shortcut_reaudit.py RUN_DIR --methods integrated_gradients_blur lime shap [--n-images 20]`
where RUN_DIR is the folder `xai-cxr audit --confounder …` ran in (it holds `w/confounders/<kind>_<NNN>/` or
`<weights-dir>/confounders/...` and `copies/`). With --merge RESULTS_DIR (the run's --results-dir), the new
methods' rows join that run's tables, written to RUN_DIR/reaudit/confounder_<kind>/ (and confounders_all/)."""
import argparse
import sys
from pathlib import Path

import pandas as pd


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("run_dir")
    p.add_argument("--weights", default="w/confounders", help="weights folder inside RUN_DIR")
    p.add_argument("--copies", default="copies", help="contaminated copies inside RUN_DIR")
    p.add_argument("--methods", nargs="+", required=True)
    p.add_argument("--only", nargs="*", default=None, help="run tags to score, e.g. tag_050 clean_000")
    p.add_argument("--n-images", type=int, default=40)
    p.add_argument("--merge", default=None, help="the run's results dir, whose tables the new rows join")
    args = p.parse_args(argv)
    from xai_cxr.data import load_images
    from xai_cxr.explain.metrics.shortcut import read_tables, shortcut_audit, to_markdown, write_tables
    from xai_cxr.models import load_trained_model
    from xai_cxr.tasks import get_task
    run = Path(args.run_dir)
    results = []
    kinds = ("tag", "hyperintensities", "obstruction")
    for folder in sorted((run / args.weights).iterdir()):
        tag = folder.name
        if args.only and tag not in args.only:
            continue
        model, card = load_trained_model(folder)
        df = get_task(card.task).scan(run / args.copies / tag / "chest_xray", card.class_names, card.seed)
        test = load_images(df[df.split == "test"], card.image_size, progress=False)
        kind, degree = tag.rsplit("_", 1)
        for k in (kinds if kind == "clean" else (kind,)):
            print(f"{tag}: {k}", file=sys.stderr)
            results.append(shortcut_audit(model, card.backbone, test, card.class_names, k, int(degree) / 100,
                                          args.methods, args.n_images, 42, card.target_layer))
    out = run / "reaudit"
    out.mkdir(exist_ok=True)
    if args.merge:
        merged = []
        for kind in kinds:
            folder = Path(args.merge) / f"confounder_{kind}"
            if not folder.is_dir():
                continue
            for old in read_tables(folder):
                new = next((r for r in results if r.summary["confounder"] == old.summary["confounder"]
                            and r.summary["degree"] == old.summary["degree"]), None)
                if new is not None:
                    extra = new.table[new.table.method.isin(args.methods)]
                    old.table = pd.concat([old.table, extra], ignore_index=True)
                merged.append(old)
            write_tables([r for r in merged if r.summary["confounder"] == kind], out / f"confounder_{kind}")
        write_tables(merged, out / "confounders_all")
        print(to_markdown(merged))
        return
    name = "_".join(args.methods)
    (out / f"{name}.md").write_text(to_markdown(results))
    pd.concat([r.table.assign(confounder=r.summary["confounder"], degree=r.summary["degree"]) for r in results]
              ).to_csv(out / f"{name}.csv", index=False)
    print(to_markdown(results))


if __name__ == "__main__":
    main()
