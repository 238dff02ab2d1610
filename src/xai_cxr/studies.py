"""Studies beside the main run (``pipeline.run``), each training one or more models through it: k-fold
cross-validation, a backbone comparison, Grad-CAM against NIH boxes, classify-then-segment, the label-randomized
retraining of the sanity check, the planted-shortcut audit's training on contaminated copies, and the audit of a
saved model as one report (``audit_saved_model``: the CLI's ``xai-cxr audit`` and the notebook both call it)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .config import (
    CamConfig,
    DataConfig,
    ModelConfig,
    TrainConfig,
    write_csv_atomic,
    write_json_atomic,
    write_text_atomic,
)
from .data import ImageSet, limit_train, load_images, require_splits, to_model_input
from .data.confounders import check_degree, contaminate, get_confounder, negative_class
from .explain.metrics.shortcut import ShortcutResult, gallery, shortcut_audit, write_tables
from .models import BACKBONES, ModelFolder, backbone_of, build_model
from .pipeline import (
    Prepared,
    evaluate_on_test,
    fit,
    lesion_masks,
    prepare_data,
    resolve_model,
    run,
    save_figure,
    train_class_weights,
)
from .tasks import get_task

SUMMARY_METRICS = ("accuracy", "precision", "recall", "specificity", "f1", "roc_auc")


def cross_validate(data_cfg: DataConfig, model_cfg: ModelConfig, train_cfg: TrainConfig, folds: int = 5,
                   weights_dir: str | Path = "saved_weights/cv", results_dir: str | Path = "sample_results/cv"):
    """k-fold cross-validation on the train split, grouped by patient: each fold validates on its held-out
    patients and is evaluated on the test split. Writes and returns {"folds": [...], "summary": {metric:
    {"mean", "std"}}} (std with ddof=1, across folds)."""
    import pandas as pd

    from .data import kfold_splits
    from .models.train import seed_everything
    model_cfg = resolve_model(model_cfg, data_cfg)
    prep = prepare_data(replace(data_cfg, validation="test"))           # decode once; folds index into it
    records = []
    for k, (tr, va) in enumerate(kfold_splits(prep.train.manifest, folds, data_cfg.seed)):
        part = lambda rows: ImageSet(prep.train.images[rows], prep.train.manifest.iloc[rows].reset_index(drop=True))  # noqa: E731
        fold = Prepared(part(tr), part(va), prep.test, f"fold {k + 1}/{folds}",
                        train_class_weights(prep.train.labels[tr], data_cfg))
        print(f"fold {k + 1}/{folds}: train {len(tr)}, validation {len(va)} images "
              f"({fold.val.manifest.patient_id.nunique()} patients)")
        seed_everything(train_cfg.seed, train_cfg.deterministic)
        model = build_model(model_cfg, data_cfg.image_size, get_task(data_cfg.task).activation)
        fit(model, fold, data_cfg, train_cfg, Path(weights_dir) / f"fold{k + 1}", model_cfg=model_cfg)
        m, _ = evaluate_on_test(model, prep.test, data_cfg)
        records.append({"fold": k + 1, "train_images": int(len(tr)), "val_images": int(len(va)),
                        **{key: m[key] for key in SUMMARY_METRICS if key in m}})
    table = pd.DataFrame(records)
    summary = {key: {"mean": float(table[key].mean()), "std": float(table[key].std(ddof=1))}
               for key in SUMMARY_METRICS if key in table}
    out = {"folds": records, "summary": summary, "n_folds": folds, "backbone": model_cfg.backbone,
           "note": "each fold: validation = its held-out patients; metrics on the whole test split"}
    write_json_atomic(out, Path(results_dir) / "cv_metrics.json")
    print(table.round(3).to_string(index=False))
    print("mean ± std: " + "  ".join(f"{k} {v['mean']:.3f} ± {v['std']:.3f}" for k, v in summary.items()))
    return out


def bbox_localization(model, test: ImageSet, bbox_csv: str | Path, class_names, target_layer: str,
                      fraction: float = 0.05) -> dict:
    """Grad-CAM of each boxed finding (NIH ``BBox_List_2017.csv`` format) against its box: pointing game
    (standard tolerance) and IoU / Dice of the top-``fraction`` region, per finding and overall."""
    import pandas as pd
    from PIL import Image

    from .explain.metrics.localization import iou_dice, pointing_game
    from .explain.overlay import top_fraction_mask
    from .explain.registry import make_explainer
    boxes = pd.read_csv(bbox_csv)
    cols = ["Image Index", "Finding Label", "Bbox [x", "y", "w", "h]"]
    missing = [c for c in cols if c not in boxes.columns]
    if missing:
        raise ValueError(f"{bbox_csv} lacks column(s) {missing}; the BBox_List_2017 format has {cols}")
    names = test.manifest["path"].map(lambda p: Path(p).name)
    where = {n: i for i, n in enumerate(names)}
    boxes = boxes[boxes["Image Index"].isin(where) & boxes["Finding Label"].isin(class_names)]
    if boxes.empty:
        return {"n_boxes": 0, "note": "no box of a known finding on a test image"}
    size = test.images.shape[1]
    idx = np.array([where[n] for n in boxes["Image Index"]])
    targets = np.array([list(class_names).index(f) for f in boxes["Finding Label"]])
    masks = np.zeros((len(idx), size, size), bool)
    for k, (i, (x, y, w, h)) in enumerate(zip(idx, boxes[cols[2:]].to_numpy(float))):
        w0, h0 = Image.open(test.manifest["path"].iloc[i]).size              # header only: original pixel size
        c0, c1 = int(x * size / w0), int(np.ceil((x + w) * size / w0))
        r0, r1 = int(y * size / h0), int(np.ceil((y + h) * size / h0))
        masks[k, max(r0, 0):min(r1, size), max(c0, 0):min(c1, size)] = True
    spec = BACKBONES[backbone_of(model)]
    heats = make_explainer("gradcam", model, backbone_of(model), target_layer)(to_model_input(test.images[idx],
                                                                                              spec.preprocess).numpy(),
                                                              targets)
    hits = pointing_game(heats, masks)
    iou, dice = iou_dice(np.stack([top_fraction_mask(h, fraction) for h in heats]).astype(float), masks)
    per = {f: {"n_boxes": int((boxes["Finding Label"] == f).sum()),
               "pointing_game": float(hits[(boxes["Finding Label"] == f).to_numpy()].mean())}
           for f in boxes["Finding Label"].unique()}
    return {"n_boxes": int(len(idx)), "pointing_game": float(hits.mean()), "iou_top5": float(iou.mean()),
            "dice_top5": float(dice.mean()), "per_finding": per}


def segmentation_stage(weights_dir: str | Path, data_root: str | Path, seg_cfg=None, n_show: int = 6):
    """Classify-then-segment on a data set with lesion masks: train a U-Net on the train split's masks, run
    it on the test images the classifier (from ``weights_dir``) calls positive, and score U-Net masks and
    Grad-CAM (top 5% region) against the true masks. Returns {"scores": {...}, "figure": fig}."""
    from .explain.metrics.localization import iou_dice, mask_scores
    from .explain.overlay import top_fraction_mask
    from .explain.registry import make_explainer
    from .models.segment import SegmentConfig, classify_then_segment, train_unet
    seg_cfg = seg_cfg or SegmentConfig()
    model, card = ModelFolder(weights_dir).load()
    spec = BACKBONES[card.backbone]
    df = get_task(card.task).scan(data_root, card.class_names, card.seed)
    sets = {s: load_images(df[df.split == s], card.image_size, progress=False, color=card.color,
                             clahe=card.clahe, geometry=card.geometry) for s in ("train", "test")}
    masks = {s: lesion_masks(v, card.image_size) for s, v in sets.items()}
    if masks["train"] is None or masks["test"] is None:
        raise ValueError(f"{data_root} has no lesion masks (*_mask.png beside the images): nothing to segment")
    unet, history = train_unet(sets["train"].images, masks["train"], cfg=seg_cfg)
    test, true = sets["test"], masks["test"]
    proba, pred_masks = classify_then_segment(model, spec.preprocess, unet, test.images, seg_cfg.threshold)
    heats = make_explainer("gradcam", model, card.backbone, card.target_layer)(
        to_model_input(test.images, spec.preprocess).numpy(), np.maximum(proba.argmax(1), 1))
    cam_masks = np.stack([top_fraction_mask(h, 0.05) for h in heats])
    has = true.reshape(len(true), -1).any(1)
    cam_iou, cam_dice = iou_dice(cam_masks[has].astype(float), true[has])
    scores = {"unet_classify_then_segment": mask_scores(pred_masks, true),
              "gradcam_top5": {"iou": float(cam_iou.mean()), "dice": float(cam_dice.mean()),
                               "n_images": int(has.sum())},
              "unet_final_train_loss": float(history["loss"][-1]), "epochs": seg_cfg.epochs}
    show = np.flatnonzero(has)[:n_show]
    return {"scores": scores, "figure": _segmentation_figure(test.images[show], heats[show], pred_masks[show],
                                                             true[show])}


def _segmentation_figure(grays, heats, pred_masks, true_masks):
    import matplotlib.pyplot as plt

    from .explain.overlay import mask_overlay, red_overlay
    fig, axes = plt.subplots(len(grays), 3, figsize=(7.5, 2.5 * len(grays)), squeeze=False)
    for row, (g, h, p, t) in enumerate(zip(grays, heats, pred_masks, true_masks)):
        panels = [(red_overlay(g, h), "Grad-CAM top 5% (weak)"),
                  (mask_overlay(g, p), "U-Net mask (supervised)"),
                  (g, "true lesion")]
        for ax, (img, title) in zip(axes[row], panels):
            ax.imshow(img, cmap="gray")
            if title == "true lesion":
                ax.contour(t, levels=[0.5], colors="lime", linewidths=1)
            ax.set_title(title if row == 0 else "", fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    return fig


def compare_backbones(data_cfg: DataConfig, model_cfg: ModelConfig, train_cfg: TrainConfig, backbones,
                      weights_dir: str | Path = "saved_weights/compare",
                      results_dir: str | Path = "sample_results/compare",
                      cam_cfg: CamConfig = CamConfig()):
    """Train and evaluate each backbone (e.g. the ensemble and its members) on the same data and seed; one
    table of test metrics. Writes ``compare.csv`` / ``compare.md`` and returns the DataFrame."""
    import pandas as pd
    rows = []
    for name in backbones:
        print(f"=== {name} ===")
        res = run(data_cfg, replace(model_cfg, backbone=name), train_cfg, cam_cfg, Path(weights_dir) / name,
                  Path(results_dir) / name)
        m = res["metrics"]
        rows.append({"backbone": name, "parameters": int(res["model"].count_params()),
                     **{k: m[k] for k in SUMMARY_METRICS if k in m}, "wall_time_s": m["wall_time_s"]})
    table = pd.DataFrame(rows)
    out = Path(results_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(table, out / "compare.csv")
    write_text_atomic(table.to_markdown(index=False, floatfmt=".3f") + "\n", out / "compare.md")
    print(table.to_markdown(index=False, floatfmt=".3f"))
    return table


def train_label_randomized(weights_dir: str | Path, out_dir: str | Path, data_root: str | Path | None = None,
                           seed: int = 0, epochs: int | None = None):
    """Adebayo et al.'s label randomization: retrain the model of ``weights_dir`` from scratch with its own
    saved configs (``run_config.json``) on the same training images with permuted labels. Returns the model."""
    from .explain.metrics.sanity import permuted_labels
    from .models.train import seed_everything
    cfgs = ModelFolder(weights_dir).run_configs()
    data_cfg, model_cfg, train_cfg = cfgs["DataConfig"], cfgs["ModelConfig"], cfgs["TrainConfig"]
    if data_root is not None:
        data_cfg = replace(data_cfg, root=str(data_root))
    if epochs is not None:
        train_cfg = train_cfg.with_epochs(epochs, min(epochs, train_cfg.stage2.epochs))
    prep = prepare_data(data_cfg, progress=False)
    shuffled = prep.train.manifest.assign(label_idx=permuted_labels(prep.train.labels, seed))
    prep.train = ImageSet(prep.train.images, shuffled, prep.train.skipped)
    seed_everything(train_cfg.seed, train_cfg.deterministic)
    model = build_model(model_cfg, data_cfg.image_size, get_task(data_cfg.task).activation)
    fit(model, prep, data_cfg, train_cfg, out_dir, model_cfg=model_cfg)
    return model



def run_shortcut_audit(data_cfg, model_cfg, train_cfg, cam_cfg, kinds, degrees, methods, out_dir, weights_dir,
                       copy_dir="confounded", n_images: int = 50, positive: str = "PNEUMONIA",
                       quiet: bool = False) -> list[ShortcutResult]:
    """For each degree, copy ``data_cfg.root`` with a confounder on that share of the ``positive`` training films,
    train on it with the given configs, and audit every kind on the clean test split. One model per (kind,
    degree > 0); degree 0 trains one clean model shared by every kind (the control). Writes, per kind,
    ``out_dir/confounder_<kind>/`` (table .md/.csv, flip galleries) and returns the results. ``quiet`` hides the
    training runs' own output (the notebook shows only the table)."""
    import contextlib
    import io
    if quiet:
        sink = io.StringIO()
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            return run_shortcut_audit(data_cfg, model_cfg, train_cfg, cam_cfg, kinds, degrees, methods, out_dir,
                                      weights_dir, copy_dir, n_images, positive)
    for k in kinds:
        get_confounder(k)
    degrees = [check_degree(d) for d in degrees]
    manifest = get_task(data_cfg.task).scan(data_cfg.root, data_cfg.class_names, data_cfg.seed, data_cfg.labels_csv)

    require_splits(manifest, "train", "test", root=data_cfg.root)
    negative_class(data_cfg.class_names)
    manifest = limit_train(manifest, data_cfg.limit, data_cfg.seed)     # copy only what trains
    if data_cfg.validation == "test":
        # checkpoint selection on the clean test split would pick the epoch that uses the confounder least;
        # validation must come from the (contaminated) training distribution, as in Sun et al.
        print("note: validation = holdout:0.1 of the contaminated training split (the test split stays clean and "
              "unseen)")
        data_cfg = replace(data_cfg, validation="holdout:0.1")
    results, clean_model = [], None
    for kind in kinds:
        for degree in degrees:
            tag = f"{kind}_{round(degree * 100):03d}" if degree > 0 else "clean_000"
            if degree == 0 and clean_model is not None:
                model, test = clean_model
            else:
                root = Path(copy_dir) / tag / "chest_xray"
                contaminate(manifest, data_cfg.root, root, kind, degree, positive,
                            seed=data_cfg.seed)
                print(f"=== {tag}: training on {root} ===")
                res = run(replace(data_cfg, root=str(root), limit=None), model_cfg, train_cfg, cam_cfg,
                          Path(weights_dir) / tag, Path(out_dir) / "models" / tag)
                model, test = res["model"], res["prepared"].test
                if degree == 0:
                    clean_model = (model, test)
            result = shortcut_audit(model, model.name.removesuffix("_classifier"), test, data_cfg.class_names,
                                    kind, degree, methods, n_images, data_cfg.seed, cam_cfg.target_layer)
            results.append(result)
            folder = Path(out_dir) / f"confounder_{kind}"
            save_figure(gallery(result), folder / f"gallery_{round(degree * 100):03d}.png")
            write_tables([r for r in results if r.summary["confounder"] == kind], folder)
    if len(kinds) > 1:
        write_tables(results, Path(out_dir) / "confounders_all")
    return results


@dataclass
class AuditSection:
    """One part of a saved model's audit: its markdown (headings included), the tables it writes (CSV file name →
    DataFrame) and its figures (PNG path relative to the audit folder → matplotlib figure)."""
    key: str
    markdown: str
    tables: dict = field(default_factory=dict)
    figures: dict = field(default_factory=dict)


@dataclass
class AuditReport:
    """What ``audit_saved_model`` found, section by section; ``result`` is the explanation audit's own output (the
    tables and every method's maps) for callers that draw more."""
    heading: str
    sections: list[AuditSection]
    result: dict

    def section(self, key: str) -> AuditSection:
        found = [s for s in self.sections if s.key == key]
        if not found:
            raise KeyError(f"no audit section {key!r}; this audit has {[s.key for s in self.sections]}")
        return found[0]

    def to_markdown(self) -> str:
        return f"# Explanation audit\n\n{self.heading}\n\n" + "\n\n".join(s.markdown.strip() for s in self.sections) \
            + "\n"

    def write(self, folder: str | Path) -> Path:
        """Every section's tables and figures, then ``audit.md``, into ``folder``; returns the markdown's path."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for s in self.sections:
            for name, table in s.tables.items():
                write_csv_atomic(table, folder / name)
            for name, fig in s.figures.items():
                save_figure(fig, folder / name)
        return write_text_atomic(self.to_markdown(), folder / "audit.md")


def audit_saved_model(weights_dir: str | Path, data_dir: str | Path, cfg=None, target_layer: str | None = None,
                      labels_csv: str | None = None, label_randomization_dir: str | Path | None = None,
                      progress=print) -> AuditReport:
    """The audit of a saved model on the test split of ``data_dir``, as one report: the explanation audit
    (localization against lesion masks when the data have them, ROAD and deletion faithfulness, randomization
    sanity checks; ``cfg``: an ``AuditConfig``), each method's maps and Grad-CAM's error galleries, where the heat
    lies by region, the measured recommendation of explainers, and — for two-class models — what the model reads
    (width, border and corner probes, the metadata-only baseline). ``label_randomization_dir``: retrain there on
    permuted labels for the label-randomization check. A new section is one more ``AuditSection`` here."""
    from .config import AuditConfig
    from .explain.metrics.audit import audit, error_galleries
    from .explain.metrics.audit import to_markdown as maps_markdown
    from .explain.metrics.probes import data_baseline, model_predictor, what_the_model_reads
    from .explain.metrics.probes import to_markdown as reads_markdown
    from .explain.metrics.regions import where_it_looks
    from .explain.overlay import gallery as map_gallery
    from .explain.recommend import to_markdown as recommendation_markdown
    cfg = cfg or AuditConfig()
    folder = ModelFolder(weights_dir)
    model, card = folder.load()
    task = get_task(card.task)
    manifest = task.scan(data_dir, card.class_names, card.seed, labels_csv)
    require_splits(manifest, "test", root=data_dir)
    test = load_images(manifest[manifest.split == "test"], card.image_size, color=card.color, clahe=card.clahe,
                       geometry=card.geometry)
    masks = lesion_masks(test, card.image_size)
    label_model = None
    if label_randomization_dir is not None:
        progress("label randomization: retraining the same model on permuted training labels ...")
        label_model = train_label_randomized(weights_dir, label_randomization_dir, data_dir, cfg.seed)
    result = audit(model, card.backbone, test, masks, cfg, target_layer, progress=progress, label_model=label_model)

    figures = {}
    for name, (idx, maps) in result["maps"].items():
        k = idx[:12]
        figures[f"methods/{name}.png"] = map_gallery(
            test.images[k], maps[:12], [test.manifest.path[i].split("/")[-1][:22] for i in k],
            None if masks is None else masks[k], suptitle=f"{name}: top 5% of heat")
    for name, fig in error_galleries(model, card.backbone, test, masks, target_layer=target_layer,
                                     class_names=card.class_names).items():
        figures[f"galleries/{name}.png"] = fig
    tables = {f"audit_{key}.csv": result[key] for key in ("localization", "faithfulness", "sanity")
              if result[key] is not None}
    sections = [AuditSection("maps", maps_markdown(result), tables, figures)]

    progress("where the model looks: Grad-CAM's top-5% heat per region ...")
    regions, fig = where_it_looks(model, card.backbone, test, card.class_names, target_layer=target_layer)
    sections.append(AuditSection(
        "regions", "### Where the model looks: share of Grad-CAM's top-5% heat per region, by predicted class "
        "(share_of_image = what a random map gets)\n\n" + regions.to_markdown(index=False, floatfmt=".3f"),
        {"regions.csv": regions}, {"mean_maps.png": fig}))
    sections.append(AuditSection("recommendation", "### Which explainer to trust for which shortcut\n\n"
                                 + recommendation_markdown()))
    if task.operating_point_applies(card.class_names):          # two classes: the shortcut probes apply
        progress("probing what the model reads (width, border, corners; metadata-only baseline) ...")
        reads = what_the_model_reads(model_predictor(model, card.backbone, folder.temperature()), test.images,
                                     test.labels, 1, card.threshold, data_baseline(manifest, seed=cfg.seed))
        sections.append(AuditSection(
            "reads", "### What does the model read? Shortcut probes (thresholds in docs/results.md)\n\n"
            + reads_markdown(reads), {f"what_it_reads_{n}.csv": getattr(reads, n)
                                      for n in ("verdict", "width", "regions")}))
    heading = f"model: {card.backbone} at {card.image_size}px ({weights_dir}); data: {data_dir} test split"
    return AuditReport(heading, sections, result)
