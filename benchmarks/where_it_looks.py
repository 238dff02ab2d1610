"""Where a trained model's Grad-CAM looks on the Kermany test split (share of the top-5% heat per region, by predicted
class; a random map's share = the region's share of the image) and its false-positive gallery. Writes
WEIGHTS_DIR-named figures and benchmarks/results/where_it_looks_<name>.json.

    python benchmarks/where_it_looks.py --weights-dir benchmarks/runs/cxr-res/seed42/weights --name cxr-res-seed42
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def main(argv=None) -> int:
    from xai_cxr.runtime import quiet_tensorflow
    quiet_tensorflow()
    import matplotlib
    matplotlib.use("Agg")
    from xai_cxr.data import load_images, scan_dataset
    from xai_cxr.explain.metrics.audit import error_galleries
    from xai_cxr.explain.metrics.regions import where_it_looks
    from xai_cxr.models import load_trained_model
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights-dir", type=Path, required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--out", type=Path, default=Path("sample_results"))
    args = p.parse_args(argv)
    model, card = load_trained_model(args.weights_dir)
    df = scan_dataset(SHARED / "kermany224" / "chest_xray")
    test = load_images(df[df.split == "test"], card.image_size, progress=False, clahe=card.clahe)
    regions, fig = where_it_looks(model, card.backbone, test, card.class_names)
    out = args.out / f"where_it_looks_{args.name}"
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "mean_maps.png", dpi=100, bbox_inches="tight")
    galleries = error_galleries(model, card.backbone, test, class_names=card.class_names)
    galleries["false_positives"].savefig(out / "false_positives.png", dpi=100, bbox_inches="tight")
    result = {"date": dt.date.today().isoformat(), "weights_dir": str(args.weights_dir),
              "command": f"python benchmarks/where_it_looks.py --weights-dir {args.weights_dir} --name {args.name}",
              "regions": regions.to_dict(orient="records")}
    Path(__file__).parent.joinpath("results", f"where_it_looks_{args.name}.json").write_text(json.dumps(result,
                                                                                                        indent=2))
    print(regions.to_markdown(index=False, floatfmt=".3f"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
