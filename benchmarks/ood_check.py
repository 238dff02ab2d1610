"""Where the truth is known: what the out-of-distribution detector of a Kermany model says off its home ground.

For each trained model folder (e.g. runs of benchmarks/accuracy.py) the detector is fitted again by the library
(`pipeline.refit_out_of_distribution`: training films of the saved run config, threshold and standardisation on
its seeded holdout — never on any film scored below) and saved beside the weights. Then, per film set: the share
flagged by the combined score (the reference design) and by variants (each depth alone, depths without the input
check, ...; each variant's threshold is the same 97th percentile of *its* holdout score), and the AUROC and the
FPR at 95% TPR of every score against the 624 Kermany test films.

Film sets: the Kermany test split (224-px copy), the same films re-saved as grayscale PNG (how the external films
are stored), the 100 original-aspect Kermany films, 50 phantoms, the 44 external adult films (normal and
pneumonia apart), the adult NIH DICOM. Writes benchmarks/results/ood_check.json.

    python benchmarks/ood_check.py --weights-dirs benchmarks/runs/cxr-res-aspect-last/seed{42,1,2}/weights
    python benchmarks/ood_check.py --table          # the docs' tables from the JSON
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results" / "ood_check.json"
QUANTILE = 0.97


def film_sets(card, prep, work: Path) -> dict[str, np.ndarray]:
    """name → decoded films (uint8, the model's input size and geometry, through the library's own paths)."""
    import cv2

    from xai_cxr.data import fit_size, load_images, read_gray, scan_dataset
    from xai_cxr.data.phantom import PhantomConfig, write_phantom_dataset
    size, clahe, geometry = card.image_size, card.clahe, card.geometry

    def folder(root, split):
        df = scan_dataset(root)
        df = df[df.split == split]
        return load_images(df, size, progress=False, clahe=clahe, geometry=geometry)

    resaved = work / "kermany_test_png"
    for path in prep.test.manifest.path:
        out = resaved / "test" / Path(path).parent.name / (Path(path).stem + ".png")
        if not out.is_file():
            out.parent.mkdir(parents=True, exist_ok=True)
            gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            scale = min(1.0, 512 / max(gray.shape))
            if scale < 1:
                gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(out), gray)
    sets = {"kermany_test": prep.test.images}
    sets["kermany_test_resaved_png"] = folder(resaved, "test").images
    sets["kermany_original_aspect"] = folder(SHARED / "kermany-original-sample" / "chest_xray", "train").images
    phantoms = write_phantom_dataset(work / f"phantoms{size}", PhantomConfig(image_size=size, n_train=0, n_test=50))
    sets["phantoms"] = folder(phantoms, "test").images
    external = folder(SHARED / "external-adult" / "chest_xray", "test")
    labels = external.labels
    sets["external_adult"] = external.images
    sets["external_adult_normal"] = external.images[labels == 0]
    sets["external_adult_pneumonia"] = external.images[labels == 1]
    dcm = SHARED / "dicom" / "nih-chestxray14-no-finding.dcm"
    sets["nih_dicom"] = fit_size(read_gray(dcm), size, clahe, geometry)[None]
    return sets


def variants(det) -> dict[str, tuple[str, ...]]:
    """Scores compared: the reference design, groups of branches, every branch alone."""
    depths = tuple(b for b in det.branches if b not in ("head", "energy") and not b.startswith("input_"))
    inputs = tuple(b for b in det.branches if b.startswith("input_"))
    out = {"combined (reference design)": det.combine, "depths + head (no input check)": (*depths, "head"),
           "depths only": depths, "input check only": tuple(b for b in inputs if b in det.combine)}
    out.update({b: (b,) for b in det.branches})
    return out


def summarise(det, holdout_z, z_by_set) -> dict:
    from sklearn.metrics import roc_auc_score
    table = {}
    for name, branches in variants(det).items():
        idx = [det.branches.index(b) for b in branches]
        thr = float(np.quantile(holdout_z[:, idx].sum(1), QUANTILE))
        ref = z_by_set["kermany_test"][:, idx].sum(1)
        row = {"threshold": thr}
        for s, z in z_by_set.items():
            score = z[:, idx].sum(1)
            row[s] = {"flagged_share": float((score > thr).mean()), "n": int(len(score))}
            if s != "kermany_test" and len(score) > 1:
                y = np.r_[np.zeros(len(ref)), np.ones(len(score))]
                row[s]["auroc"] = float(roc_auc_score(y, np.r_[ref, score]))
                row[s]["fpr_at_95tpr"] = float((ref > np.quantile(score, 0.05)).mean())
            elif s != "kermany_test":
                row[s]["score_percentile_in_kermany_test"] = float((ref < score[0]).mean())
        table[name] = row
    return table


def one_model(weights_dir: Path, work: Path) -> dict:
    from xai_cxr.models import BACKBONES, load_trained_model
    from xai_cxr.models.ood import OODDetector
    from xai_cxr.pipeline import refit_out_of_distribution
    from xai_cxr.serve.inference import Predictor
    t0 = time.time()
    summary, prep = refit_out_of_distribution(weights_dir, SHARED / "kermany224" / "chest_xray")
    fit_s = time.time() - t0
    model, card = load_trained_model(weights_dir)
    det = OODDetector.load(weights_dir)
    pre = BACKBONES[card.backbone].preprocess
    zs = lambda imgs: det.z(det.raw(det.image_values(model, imgs, pre)))  # noqa: E731
    holdout_z = zs(prep.val.images)
    sets = film_sets(card, prep, work)
    z_by_set = {k: zs(v) for k, v in sets.items()}
    pred = Predictor.from_weights_dir(weights_dir)
    external = {}
    for part in ("external_adult_normal", "external_adult_pneumonia"):
        preds = pred.predict(sets[part], mc=True)
        external[part] = {"n": len(preds), "called_pneumonia": int(sum(p.label == "PNEUMONIA" for p in preds)),
                          "flagged": int(sum(p.out_of_distribution for p in preds)),
                          "referred": int(sum(p.decision == "refer" for p in preds)),
                          "loudest_branch": {b: int(sum(p.ood_branch == b for p in preds))
                                             for b in det.combine}}
    from xai_cxr.data.population import KERMANY_AGE_YEARS, age_outside
    population = card.population_age or KERMANY_AGE_YEARS          # cards written before the field: Kermany's
    dcm = (SHARED / "dicom" / "nih-chestxray14-no-finding.dcm").read_bytes()
    nih = pred.predict(sets["nih_dicom"], mc=True, age_outside=[age_outside(dcm, population)])[0]
    return {"weights_dir": str(weights_dir), "backbone": card.backbone, "fit": summary,
            "fit_seconds": round(fit_s, 1), "branches": list(det.branches), "scores": summarise(det, holdout_z,
                                                                                                z_by_set),
            "predictions_on_external": external,
            "nih_dicom": {"label": nih.label, "confidence": nih.confidence, "decision": nih.decision,
                          "reasons": nih.reasons, "ood_score": nih.ood_score, "threshold": det.threshold,
                          "population_age": list(population)}}


SETS = ("kermany_test", "kermany_test_resaved_png", "kermany_original_aspect", "phantoms", "external_adult",
        "external_adult_normal", "external_adult_pneumonia", "nih_dicom")


def to_markdown(results: dict) -> str:
    """Two tables from the JSON: the reference design per model (flagged share; AUROC against the Kermany test
    split), then every score's mean over the models."""
    head = "| model | " + " | ".join(SETS) + " |\n|---|" + "---|" * len(SETS) + "\n"
    rows = []
    for m in results["models"]:
        row = m["scores"]["combined (reference design)"]
        cells = [f"{row[s]['flagged_share']:.0%}" + (f" (AUROC {row[s]['auroc']:.2f})" if "auroc" in row[s] else "")
                 for s in SETS]
        w = Path(m["weights_dir"])
        rows.append(f"| {w.parents[1].name}/{w.parent.name} ({m['backbone']}) | " + " | ".join(cells) + " |")
    out = head + "\n".join(rows)
    groups: dict[str, list] = {}
    for m in results["models"]:                       # the per-score table needs the same branches: per backbone
        groups.setdefault(m["backbone"], []).append(m)
    for backbone, models in groups.items():
        mean = lambda v, s, k: np.mean([m["scores"][v][s].get(k, np.nan) for m in models])  # noqa: E731
        out += (f"\n\n| score ({backbone}, mean of {len(models)}) | Kermany test flagged | external flagged (normal / "
                "pneumonia) | external AUROC | external FPR at 95% TPR | phantoms flagged | NIH DICOM flagged |\n"
                "|---|---|---|---|---|---|---|\n")
        out += "\n".join(
            f"| {v} | {mean(v, 'kermany_test', 'flagged_share'):.1%} | {mean(v, 'external_adult', 'flagged_share'):.0%}"
            f" ({mean(v, 'external_adult_normal', 'flagged_share'):.0%} / "
            f"{mean(v, 'external_adult_pneumonia', 'flagged_share'):.0%}) | {mean(v, 'external_adult', 'auroc'):.2f} | "
            f"{mean(v, 'external_adult', 'fpr_at_95tpr'):.2f} | {mean(v, 'phantoms', 'flagged_share'):.0%} | "
            f"{mean(v, 'nih_dicom', 'flagged_share'):.0%} |" for v in models[0]["scores"])
    return out


def main(argv=None) -> int:
    from xai_cxr.runtime import quiet_tensorflow
    quiet_tensorflow()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights-dirs", type=Path, nargs="+")
    p.add_argument("--work", type=Path, default=Path("benchmarks/runs/ood_check"))
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--table", action="store_true", help="print the markdown tables of --out and stop")
    p.add_argument("--append", action="store_true", help="add these models to --out instead of starting it anew")
    args = p.parse_args(argv)
    if args.table:
        print(to_markdown(json.loads(args.out.read_text())))
        return 0
    if not args.weights_dirs:
        p.error("--weights-dirs is required (or --table)")
    command = "python benchmarks/ood_check.py " + " ".join(sys.argv[1:] if argv is None else argv)
    out = json.loads(args.out.read_text()) if args.append and args.out.is_file() else \
        {"quantile": QUANTILE, "models": []}
    for w in args.weights_dirs:
        out["models"].append({"date": dt.date.today().isoformat(), "command": command, **one_model(w, args.work)})
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2))
        print(json.dumps(out["models"][-1]["scores"]["combined (reference design)"], indent=1), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
