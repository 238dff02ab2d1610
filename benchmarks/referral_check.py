"""The referral rule measured end to end on one trained model: which per-film detector, chosen how, and what the
whole rule (detector + error level) does on Kermany films and on films from elsewhere.

Protocol (fixed before any external film is scored; the external films choose nothing):
1. Candidates — per-film detectors: Mahalanobis at every depth (the reference design), k-nearest-neighbour on
   L2-normalised features (Sun et al. 2022) with k = 1, 10, 50, the self-supervised encoder of the training films
   alone (``models/contrastive.py``, k-NN or Mahalanobis on its representation), the reference design with the
   encoder's branch summed in, and combinations of two detectors' scores: their sum after each is standardised on
   the holdout, or "either" (the larger of their holdout percentiles). The classifier-feature candidates share the
   model's saved input-level autoencoder; every threshold is the 97th percentile of the holdout's score (an expected
   3% of Kermany-like films referred).
2. Choice — leave-one-shift-out over the synthetic shifts of ``xai_cxr.data.shifts`` applied to the holdout films:
   for each shift, the candidate with the highest mean detection on the *other* shifts is picked and scored on the
   one left out (how well choosing on shifts generalises to an unseen shift); the candidate chosen is the best over
   all shifts.
3. The error level: ``models/selective.py`` fitted on the holdout films the candidate does not refer (level 0.05);
   reported on the Kermany test split (coverage, accuracy of the answered films, whether the bound held) and per
   class on the 44 external adult films.
4. The folder shift test's power: the holdout split in halves, reference = one half, folders of n films drawn from
   the other half shifted (and unshifted: the false-positive rate); share called foreign at p < 0.001.

Writes benchmarks/results/referral_check.json; ``--table`` prints the docs' tables.

    python benchmarks/referral_check.py --weights-dir benchmarks/runs/recipe-seed7/weights
    python benchmarks/referral_check.py --table
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
RESULTS = Path(__file__).resolve().parent / "results" / "referral_check.json"
QUANTILE = 0.97
ERROR_LEVEL = 0.05
POWER_N = (10, 20, 40)
POWER_REPEATS = 10
POWER_SHIFTS = ("gamma", "contrast", "blur")      # those single films rarely show (the others: docs/results.md)


def candidates():
    """name → (the branches it scores: "classifier" = every branch but the encoder's, "encoder" = only it, "all";
    the branch distance, ``models.ood.fit_detector``'s ``distance``)."""
    from functools import partial

    from xai_cxr.models.ood import fit_knn, fit_mahalanobis
    return {"mahalanobis (reference design)": ("classifier", fit_mahalanobis),
            "knn k=1": ("classifier", partial(fit_knn, k=1)), "knn k=10": ("classifier", partial(fit_knn, k=10)),
            "knn k=50": ("classifier", partial(fit_knn, k=50)),
            "encoder, knn k=10": ("encoder", partial(fit_knn, k=10)),
            "encoder, mahalanobis": ("encoder", fit_mahalanobis),
            "reference design with the encoder's branch": ("all", fit_mahalanobis)}


# two candidates' scores combined: "sum" of their holdout-standardised scores, or "either" (the larger holdout
# percentile: a film is referred when either detector finds it unusual, at the same 3% of the holdout overall)
COMBINED = {"mahalanobis + knn k=10": ("sum", "mahalanobis (reference design)", "knn k=10"),
            "mahalanobis + encoder": ("sum", "mahalanobis (reference design)", "encoder, mahalanobis"),
            "mahalanobis or encoder": ("either", "mahalanobis (reference design)", "encoder, mahalanobis")}


def combine_scores(how: str, a: dict, b: dict) -> dict:
    """Two detectors' scores per film set (name → (N,)) combined as in ``COMBINED``, both set on the "holdout"."""
    def standard(s):
        return {k: (v - s["holdout"].mean()) / s["holdout"].std() for k, v in s.items()}

    def percentile(s):
        ref = np.sort(s["holdout"])
        return {k: np.searchsorted(ref, v, side="right") / len(ref) for k, v in s.items()}
    f = standard if how == "sum" else percentile
    fa, fb = f(a), f(b)
    return {k: fa[k] + fb[k] if how == "sum" else np.maximum(fa[k], fb[k]) for k in a}


def decode(manifest, card, clahe_after: bool):
    from xai_cxr.data import load_images
    return load_images(manifest, card.image_size, progress=False, clahe=card.clahe and not clahe_after,
                       geometry=card.geometry)


def main(argv=None) -> int:
    from xai_cxr.runtime import cpu_description, quiet_tensorflow
    quiet_tensorflow()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights-dir", type=Path)
    p.add_argument("--data-dir", type=Path, default=SHARED / "kermany224" / "chest_xray")
    p.add_argument("--external", type=Path, default=SHARED / "external-adult" / "chest_xray")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--append", action="store_true", help="add this model to --out instead of starting it anew")
    p.add_argument("--table", action="store_true")
    p.add_argument("--no-power", action="store_true", help="skip the folder test's power curve (the slow part)")
    p.add_argument("--power-shifts", nargs="+", default=list(POWER_SHIFTS),
                   help="shifts of the power curve (default: the subtle ones, which single films rarely show)")
    args = p.parse_args(argv)
    if args.table:
        print(to_markdown(json.loads(args.out.read_text())))
        return 0
    if args.weights_dir is None:
        p.error("--weights-dir is required (or --table)")
    command = "python benchmarks/referral_check.py " + " ".join(sys.argv[1:] if argv is None else argv)
    out = json.loads(args.out.read_text()) if args.append and args.out.is_file() else {"models": []}
    head = {"date": dt.date.today().isoformat(), "command": command, "machine": cpu_description()}

    def save(found: dict) -> None:            # after the candidates, and again after each shift of the power curve
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"models": [*out["models"], {**head, **found}]}, indent=1))

    one_model(args.weights_dir, args.data_dir, args.external, [] if args.no_power else args.power_shifts, save)
    print(to_markdown(json.loads(args.out.read_text())))
    return 0


def one_model(weights_dir: Path, data_dir: Path, external_dir: Path, power_shifts=(), save=print) -> dict:
    from dataclasses import replace

    from xai_cxr.data import equalize, scan_dataset
    from xai_cxr.data.shifts import SHIFTS, shift_films
    from xai_cxr.models import BACKBONES, ModelFolder
    from xai_cxr.models.contrastive import BRANCH
    from xai_cxr.models.ood import INPUT_CHECKS, NOT_SUMMED, fit_detector, image_branch_values
    from xai_cxr.models.predict import predict_images
    from xai_cxr.models.selective import fit_selective, predicted_confidence
    from xai_cxr.pipeline import prepare_data
    from xai_cxr.tasks import get_task
    t0 = time.time()
    folder = ModelFolder(weights_dir)
    model, card = folder.load()
    saved = folder.detector()
    task = get_task(card.task)
    pre = BACKBONES[card.backbone].preprocess
    data_cfg = replace(folder.run_configs()["DataConfig"], root=str(data_dir))
    prep = prepare_data(data_cfg, progress=False)
    # the holdout before CLAHE, so that a shift acts on the film and CLAHE after it, as on a real film
    raw_holdout = decode(prep.val.manifest, card, clahe_after=True).images
    finish = (lambda f: np.stack([equalize(x) for x in f])) if card.clahe else (lambda f: f)  # noqa: E731
    ext = decode(scan_dataset(external_dir).query("split == 'test'"), card, clahe_after=False)
    films = {"holdout": prep.val.images, "kermany_test": prep.test.images,
             "external_normal": ext.images[ext.labels == 0], "external_pneumonia": ext.images[ext.labels == 1]}
    films.update({f"shift:{s}": finish(shift_films(raw_holdout, s, seed=1)) for s in SHIFTS})
    labels = {"holdout": prep.val.labels, "kermany_test": prep.test.labels,
              "external_normal": np.zeros((ext.labels == 0).sum(), int),
              "external_pneumonia": np.ones((ext.labels == 1).sum(), int)}
    encoder = INPUT_CHECKS["contrastive"].fit(prep.train.images, seed=data_cfg.seed, progress=True)
    checks = (*saved.input_checks, encoder)
    values = lambda f: image_branch_values(model, f, pre, saved.layers, checks, saved.grid)  # noqa: E731
    train_values = values(prep.train.images)
    branch_values = {k: values(f) for k, f in films.items()}
    temperature = folder.temperature()
    proba = {k: task.calibrate(predict_images(model, films[k]), temperature) for k in labels}
    feature_s = time.time() - t0

    plain = tuple(b for b in NOT_SUMMED if b in train_values)      # scored as they are, not summed
    scores = {}
    keep = {"classifier": lambda b: b != BRANCH, "encoder": lambda b: b == BRANCH, "all": lambda b: True}
    for name, (which, dist) in candidates().items():
        pick = lambda v: {b: x for b, x in v.items() if keep[which](b)}  # noqa: E731
        det = fit_detector(pick(train_values), prep.train.labels, pick(branch_values["holdout"]),
                           tuple(b for b in plain if keep[which](b)), quantile=QUANTILE, grid=saved.grid,
                           distance=dist)
        scores[name] = {k: det.combined(det.z(det.raw(pick(v)))) for k, v in branch_values.items()}
    for name, (how, a, b) in COMBINED.items():
        scores[name] = combine_scores(how, scores[a], scores[b])
    thresholds = {n: float(np.quantile(s["holdout"], QUANTILE)) for n, s in scores.items()}
    flagged = {n: {k: s[k] > thresholds[n] for k in s} for n, s in scores.items()}
    shift_names = [k for k in branch_values if k.startswith("shift:")]
    detection = {n: {k: float(f[k].mean()) for k in shift_names} for n, f in flagged.items()}

    # leave one shift out: choose on the others, score on the one left out
    loso = {}
    for left in shift_names:
        others = [k for k in shift_names if k != left]
        pick = max(detection, key=lambda n: np.mean([detection[n][k] for k in others]))
        loso[left] = {"chosen": pick, "detection": detection[pick][left]}
    chosen = max(detection, key=lambda n: np.mean(list(detection[n].values())))

    predicted = {k: task.decide(proba[k], card.threshold) for k in labels}
    conf = {k: predicted_confidence(proba[k], predicted[k]) for k in labels}
    rows = {}
    for n in scores:
        rule = fit_selective(conf["holdout"], predicted["holdout"] == labels["holdout"], ERROR_LEVEL,
                             eligible=~flagged[n]["holdout"])
        row = {"threshold": thresholds[n], "shift_detection": detection[n],
               "mean_shift_detection": float(np.mean(list(detection[n].values()))),
               "min_confidence": rule.min_confidence, "holdout_error_bound": rule.error_bound}
        for k in ("kermany_test", "external_normal", "external_pneumonia"):
            ood = flagged[n][k]
            answered = ~ood & rule.answers(conf[k])
            right = predicted[k] == labels[k]
            row[k] = {"n": int(len(ood)), "referred_ood": float(ood.mean()), "referred": float((~answered).mean()),
                      "accuracy_all": float(right.mean()),
                      "accuracy_answered": float(right[answered].mean()) if answered.any() else None,
                      "answered": int(answered.sum())}
        rows[n] = row
    found = {"weights_dir": str(weights_dir), "backbone": card.backbone, "image_size": card.image_size,
             "shifts": {k: SHIFTS[k][1] for k in SHIFTS}, "candidates": rows, "leave_one_shift_out": loso,
             "chosen": chosen, "error_level": ERROR_LEVEL, "quantile": QUANTILE, "folder_power": {},
             "encoder_loss": [round(v, 4) for v in encoder.history],
             "feature_seconds": round(feature_s, 1)}
    save(found)
    for shift in ["no shift", *power_shifts] if power_shifts else []:
        found["folder_power"][shift] = folder_power(saved, branch_values, shift)
        found["seconds"] = round(time.time() - t0, 1)
        save(found)
    return found


def folder_power(detector, branch_values, shift: str) -> dict:
    """Share of folders of n films called foreign (p < 0.001) by the shift test of ``models/shift.py``: reference =
    one half of the holdout, folders drawn from the other half under ``shift`` ("no shift": as they are)."""
    from xai_cxr.models.shift import c2st
    z = lambda k: detector.z(detector.raw(branch_values[k]))[:, detector.summed]  # noqa: E731
    reference = z("holdout")
    films = reference if shift == "no shift" else z(f"shift:{shift}")
    rng = np.random.default_rng(0)
    order = rng.permutation(len(reference))
    ref_idx, other_idx = order[: len(order) // 2], order[len(order) // 2:]
    out = {}
    for n in POWER_N:
        hits = [c2st(reference[ref_idx], films[rng.choice(other_idx, n, replace=False)], seed=r).foreign
                for r in range(POWER_REPEATS)]
        out[n] = float(np.mean(hits))
    print(f"folder power, {shift}: {out}", flush=True)
    return out


SUMMARY = ("mahalanobis (reference design)", "reference design with the encoder's branch", "encoder, mahalanobis",
           "mahalanobis + encoder")


def across_models(results: dict) -> str:
    """One row per model and candidate of ``SUMMARY``: the choice, the synthetic shifts' mean, what each refers."""
    out = ["| model | detector | shifts caught (mean) | Kermany test referred (detector / + error level) | external "
           "normal referred (detector / + error level) | external pneumonia referred (detector / + error level) |",
           "|---|---|---|---|---|---|"]
    for m in results["models"]:
        for n in SUMMARY:
            r = m["candidates"].get(n)
            if r is None:
                continue
            k, en, ep = r["kermany_test"], r["external_normal"], r["external_pneumonia"]
            chosen = " (chosen)" if n == m["chosen"] else ""
            out.append(f"| {Path(m['weights_dir']).parent.name} | {n}{chosen} | {r['mean_shift_detection']:.0%} | "
                       f"{k['referred_ood']:.1%} / {k['referred']:.1%} | "
                       f"{en['referred_ood']:.0%} / {en['referred']:.0%} | {ep['referred_ood']:.0%} / "
                       f"{ep['referred']:.0%} |")
    return "\n".join(out)


def to_markdown(results: dict) -> str:
    from xai_cxr.runtime import cpu_line
    out = [across_models(results), ""] if len(results["models"]) > 1 else []
    for m in results["models"]:
        w = Path(m["weights_dir"])
        machine = cpu_line(m["machine"]) if isinstance(m.get("machine"), dict) else m.get("machine", "")
        out.append(f"**{w.parent.name}** ({m['backbone']}, {m['image_size']} px; {m['date']}, {machine}; "
                   f"chosen by leave-one-shift-out: {m['chosen']})\n")
        shifts = list(next(iter(m["candidates"].values()))["shift_detection"])
        out.append("| detector | " + " | ".join(s.split(":")[1] for s in shifts) + " | mean | Kermany test referred "
                   "(detector / + error level) | accuracy answered | external normal referred (detector / + error "
                   "level) | external pneumonia referred (detector / + error level) | external accuracy answered "
                   "(normal / pneumonia) |")
        out.append("|---|" + "---|" * (len(shifts) + 6))
        for n, r in m["candidates"].items():
            k, en, ep = r["kermany_test"], r["external_normal"], r["external_pneumonia"]
            fmt = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
            out.append(f"| {n} | " + " | ".join(f"{r['shift_detection'][s]:.0%}" for s in shifts)
                       + f" | {r['mean_shift_detection']:.0%} | {k['referred_ood']:.1%} / {k['referred']:.1%} | "
                       f"{fmt(k['accuracy_answered'])} | "
                       f"{en['referred_ood']:.0%} / {en['referred']:.0%} of {en['n']} | "
                       f"{ep['referred_ood']:.0%} / {ep['referred']:.0%} of {ep['n']} | "
                       f"{fmt(en['accuracy_answered'])} / "
                       f"{fmt(ep['accuracy_answered'])} |")
        out.append("\nLeave one shift out: " + "; ".join(
            f"{s.split(':')[1]} → {v['chosen']} ({v['detection']:.0%})" for s, v in m["leave_one_shift_out"].items()))
        if not m["folder_power"]:
            continue
        out.append("\n| folder of n films | " + " | ".join(str(n) for n in POWER_N) + " |")
        out.append("|---|" + "---|" * len(POWER_N))
        for s, v in m["folder_power"].items():
            out.append(f"| {s} | " + " | ".join(f"{v[str(n)] if str(n) in v else v[n]:.0%}" for n in POWER_N) + " |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
