"""Short end-to-end runs on tiny phantoms, the CLI, and real Kermany images when ../shared has them."""
import json

import cv2
import numpy as np
import pytest

from xai_cxr.config import CamConfig, DataConfig, ModelConfig, TrainConfig
from xai_cxr.data.phantom import PhantomConfig, write_phantom_dataset


@pytest.fixture(scope="module")
def phantom_root(tmp_path_factory):
    cfg = PhantomConfig(image_size=64, n_train=12, n_test=6, seed=1)
    return write_phantom_dataset(tmp_path_factory.mktemp("data") / "chest_xray", cfg)


@pytest.fixture(scope="module")
def trained(phantom_root, tmp_path_factory):
    from xai_cxr.pipeline import run
    out = tmp_path_factory.mktemp("run")
    data = DataConfig(root=str(phantom_root), image_size=64, batch_size=8)
    train = TrainConfig(verbose=0).with_epochs(2, 0)
    result = run(data, ModelConfig(backbone="cxr-small", weights="none"), train, CamConfig(n_samples=4),
                 out / "weights", out / "results")
    return out, result


def test_short_train_on_phantoms_writes_weights_metrics_and_figure(trained):
    out, result = trained
    for f in ("weights/model.weights.h5", "weights/model_config.json", "weights/history.json",
              "weights/training_curves.png", "results/metrics.json", "results/sample_results.png",
              "results/confusion_matrix.png", "results/roc_curve.png", "results/reliability.png",
              "weights/calibration.json", "weights/selective.json"):
        assert (out / f).is_file(), f
    metrics = json.loads((out / "results/metrics.json").read_text())
    assert metrics["n_images"] == 12 and metrics["backbone"] == "cxr-small"
    # the temperature is the one fitted on the validation probabilities (here the test split's): refit it by hand
    from xai_cxr.models.calibration import fit_temperature
    from xai_cxr.models.predict import predict_images
    test = result["prepared"].test
    refit = fit_temperature(predict_images(result["model"], test.images), test.labels)
    assert metrics["calibration"]["temperature"] == pytest.approx(round(refit, 4), abs=1e-4)
    assert "optimistic" in metrics["calibration"]["note"]
    assert sum(map(sum, metrics["confusion_matrix"])) == 12
    cm = np.array(metrics["confusion_matrix"])
    assert metrics["accuracy"] == pytest.approx(np.trace(cm) / cm.sum()) and "optimistic" in metrics["validation_note"]
    pg = metrics["gradcam_pointing_game"]                         # 6 positive test phantoms, all with lesions
    assert pg["n_images"] == 6 and pg["hit_rate"] * 6 == pytest.approx(round(pg["hit_rate"] * 6))
    assert len(json.loads((out / "weights/history.json").read_text())["stage1"]["loss"]) == 2
    grid = cv2.imread(str(out / "results/sample_results.png"))
    assert grid.shape[0] > 100 and grid.shape[1] > 300 and grid.std() > 10


def test_saved_weights_reload_to_the_same_predictions(trained):
    from xai_cxr.models import load_trained_model
    out, result = trained
    loaded, card = load_trained_model(out / "weights")
    x = np.random.default_rng(0).random((3, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), result["model"].predict(x, verbose=0), atol=1e-5)
    assert card.target_layer == "block4_relu2" and card.image_size == 64


def test_cli_explain_and_evaluate(trained, phantom_root, capsys):
    from xai_cxr.cli import main
    out, _ = trained
    image = sorted((phantom_root / "test" / "PNEUMONIA").glob("person*[0-9].png"))[0]
    bad = out / "broken.jpeg"
    bad.write_bytes(b"nope")
    assert main(["explain", str(image), str(bad), "--weights-dir", str(out / "weights"),
                 "--out", str(out / "explain")]) == 0
    captured = capsys.readouterr()
    panel = cv2.cvtColor(cv2.imread(str(out / "explain" / f"{image.stem}_gradcam.png")), cv2.COLOR_BGR2RGB)
    assert panel.shape == (64, 128, 3)
    # the left half is the top 5% of the predicted class's Grad-CAM, recomputed here from the saved model
    from xai_cxr.data import load_image, to_model_input
    from xai_cxr.explain.cam import GradCAM
    from xai_cxr.explain.overlay import red_overlay
    from xai_cxr.models import BACKBONES, load_trained_model
    model, card = load_trained_model(out / "weights")
    gray = load_image(image, card.image_size)
    x = to_model_input(gray[None], BACKBONES[card.backbone].preprocess).numpy()
    pred = model.predict(x, verbose=0).argmax(1)
    expected = red_overlay(gray, GradCAM(model, card.target_layer)(x, pred)[0], 0.05)
    assert np.abs(panel[:, :64].astype(int) - expected.astype(int)).max() <= 1
    assert "broken.jpeg" in captured.err and ("PNEUMONIA" in captured.out or "NORMAL" in captured.out)
    assert main(["evaluate", "--data-dir", str(phantom_root), "--weights-dir", str(out / "weights"),
                 "--results-dir", str(out / "eval")]) == 0
    a = json.loads((out / "eval/metrics.json").read_text())
    b = json.loads((out / "results/metrics.json").read_text())
    assert a["confusion_matrix"] == b["confusion_matrix"]
    # the referral rule over the test split: coverage and accuracies agree with the confusion matrix
    r = a["referral"]
    assert r["coverage"] + r["referred"] == pytest.approx(1.0)
    assert r["accuracy_all"] == pytest.approx(a["accuracy"])
    answered = r["coverage"] * 12
    if 0 < answered < 12:
        assert answered * r["accuracy_answered"] + (12 - answered) * r["accuracy_referred"] == \
            pytest.approx(12 * a["accuracy"])
    assert a["risk_coverage_by_uncertainty"]["100%"] == pytest.approx(a["accuracy"])


def test_fit_ood_rebuilds_the_detector_from_the_same_training_films(trained, tmp_path):
    import shutil

    from xai_cxr.cli import main
    from xai_cxr.models.ood import OODDetector
    out, _ = trained
    copy = tmp_path / "weights"
    shutil.copytree(out / "weights", copy)
    (copy / "ood.npz").unlink()
    assert main(["fit-ood", str(copy)]) == 0
    before, after = OODDetector.load(out / "weights"), OODDetector.load(copy)
    assert after.branches == before.branches
    assert after.calibrated_on == before.calibrated_on == "train, held out of the detector"
    for b, f in zip(before.branches, before.fits):      # the features' class means: the same films, the same model
        if f is not None and not b.startswith("input_"):
            np.testing.assert_allclose(after.fits[after.branches.index(b)].means, f.means, rtol=1e-4, atol=1e-5)
    # --input-checks: the self-supervised encoder joins the detector; refitted without it, a stale file is not read
    assert main(["fit-ood", str(copy), "--input-checks", "autoencoder", "contrastive"]) == 0
    both = OODDetector.load(copy)
    assert "input_contrastive" in both.combine and (copy / "contrastive.weights.h5").is_file()
    encoder_fit = both.fits[both.branches.index("input_contrastive")]
    assert encoder_fit.means.shape[1] == 256                 # its representation, scored by Mahalanobis
    assert sorted(type(c).__name__ for c in both.input_checks) == ["ContrastiveCheck", "InputCheck"]
    assert main(["fit-ood", str(copy)]) == 0
    again = OODDetector.load(copy)
    assert again.branches == before.branches and [type(c).__name__ for c in again.input_checks] == ["InputCheck"]


def test_cli_missing_imagenet_weights_is_a_clear_error(phantom_root, tmp_path, monkeypatch, capsys):
    from xai_cxr.cli import main
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    code = main(["train", "--data-dir", str(phantom_root), "--image-size", "32", "--weights-dir",
                 str(tmp_path / "w"), "--results-dir", str(tmp_path / "r")])
    assert code == 2
    assert "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5" in capsys.readouterr().err
    assert not (tmp_path / "w" / "model.weights.h5").exists()


def test_cli_wrong_root_shows_layout(tmp_path, capsys):
    from xai_cxr.cli import main
    assert main(["train", "--data-dir", str(tmp_path / "nothing"), "--weights", "none"]) == 2
    err = capsys.readouterr().err
    assert "nothing" in err and "expected layout" in err


def test_vgg19_two_stage_freezes_then_finetunes_block5(tmp_path):
    """Stage 1 changes only the head; stage 2 also block5; blocks 1-4 never change."""
    from xai_cxr.data import make_dataset
    from xai_cxr.models import BACKBONES, build_model
    from xai_cxr.models.train import train_two_stage
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (16, 32, 32), dtype=np.uint8), np.arange(16) % 2
    ds = make_dataset(images, labels, BACKBONES["vgg19"].preprocess, batch_size=8, shuffle=True)
    model = build_model(ModelConfig(weights="none"), 32)
    snap = lambda: {n: model.get_layer(n).get_weights()[0].copy()  # noqa: E731
                    for n in ("block1_conv1", "block4_conv4", "block5_conv1", "head_dense")}
    before = snap()
    cfg = TrainConfig(verbose=0).with_epochs(1, 0)
    train_two_stage(model, ds, ds, cfg, tmp_path, {0: 1.0, 1: 1.0})
    after1 = snap()
    assert not np.allclose(before["head_dense"], after1["head_dense"])
    for n in ("block1_conv1", "block4_conv4", "block5_conv1"):
        np.testing.assert_array_equal(before[n], after1[n])
    history = train_two_stage(model, ds, ds, TrainConfig(verbose=0).with_epochs(1, 1), tmp_path)
    after2 = snap()
    assert set(history) == {"stage1", "stage2"}
    assert not np.allclose(after1["block5_conv1"], after2["block5_conv1"])
    for n in ("block1_conv1", "block4_conv4"):
        np.testing.assert_array_equal(before[n], after2[n])
    assert (tmp_path / "model.weights.h5").is_file() and not list(tmp_path.glob("*.tmp.*"))


def test_real_kermany_scan_pipeline_forward_and_gradcam(kermany224):
    """The real 224-px Kermany copy: manifest counts, then decode → pipeline → forward → Grad-CAM."""
    from xai_cxr.data import load_images, make_dataset, scan_dataset
    from xai_cxr.explain.cam import GradCAM
    from xai_cxr.models import BACKBONES, build_model
    df = scan_dataset(kermany224)
    test = df[df.split == "test"]
    assert (test.label.value_counts()[["NORMAL", "PNEUMONIA"]] == [234, 390]).all()
    assert (test.subtype.value_counts()[["bacteria", "virus"]] == [242, 148]).all()
    assert df[df.split == "train"].shape[0] == 5216 and not (df.split == "val").any()
    few = test.groupby("label").head(3)
    images = load_images(few, 64, progress=False)
    assert images.images.shape == (6, 64, 64) and not images.skipped
    model = build_model(ModelConfig(weights="none"), 64)
    x = next(iter(make_dataset(images.images, None, BACKBONES["vgg19"].preprocess, batch_size=6)))
    proba = model.predict(x, verbose=0)
    np.testing.assert_allclose(proba.sum(1), 1, atol=1e-5)
    maps = GradCAM(model, "block5_conv3")(x.numpy())
    assert maps.shape == (6, 64, 64) and np.isfinite(maps).all()


@pytest.mark.slow
def test_cli_audit_writes_tables_figures_and_galleries(trained, phantom_root):
    import pandas as pd

    from xai_cxr.cli import main
    out, _ = trained
    assert main(["audit", "--weights-dir", str(out / "weights"), "--data-dir", str(phantom_root),
                 "--methods", "gradcam", "hirescam", "fused", "smoothgrad", "--n-images", "4", "--steps", "4",
                 "--label-randomization", "--out", str(out / "audit")]) == 0
    loc = pd.read_csv(out / "audit" / "audit_localization.csv")
    assert loc.method.tolist() == ["gradcam", "hirescam", "fused", "smoothgrad", "random", "centre"]
    assert loc[["pointing_game", "top5_hit_rate", "iou", "dice"]].apply(lambda c: c.between(0, 1).all()).all()
    faith = pd.read_csv(out / "audit" / "audit_faithfulness.csv").set_index("method")
    for m in ("gradcam", "fused"):             # the ratio column is each method's AUC over the random map's
        ratio = faith.loc[m, "deletion_auc"] / faith.loc["random", "deletion_auc"]
        assert faith.loc[m, "deletion_vs_random"] == pytest.approx(ratio, rel=1e-3)
    sanity = pd.read_csv(out / "audit" / "audit_sanity.csv")
    assert set(sanity.verdict.str.split().str[0]) <= {"pass", "FAIL"} and len(sanity) == 4
    assert sanity.rho_label_randomized.between(-1, 1).all()
    assert (out / "audit" / "label_randomized_weights" / "model.weights.h5").is_file()
    assert "label randomization" in (out / "audit" / "audit.md").read_text()
    assert (out / "audit" / "methods" / "fused.png").is_file()
    assert (out / "audit" / "galleries" / "class_pneumonia.png").is_file()


def test_subtype_task_trains_three_classes_end_to_end(phantom_root, tmp_path):
    from xai_cxr.models import ModelCard
    from xai_cxr.pipeline import prepare_data, run
    from xai_cxr.tasks import TASKS
    data = DataConfig(root=str(phantom_root), image_size=64, batch_size=8, task="subtype",
                      class_names=TASKS["subtype"].class_names)
    prep = prepare_data(data, progress=False)
    subtypes = prep.train.manifest["subtype"].map({"normal": 0, "bacteria": 1, "virus": 2}).to_numpy()
    np.testing.assert_array_equal(prep.train.labels, subtypes)
    assert set(prep.class_weight) == {0, 1, 2}
    result = run(data, ModelConfig(backbone="cxr-small", weights="none"), TrainConfig(verbose=0).with_epochs(1, 0),
                 CamConfig(n_samples=3), tmp_path / "w", tmp_path / "r")
    assert result["model"].output_shape == (None, 3)
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert np.array(m["confusion_matrix"]).shape == (3, 3) and np.sum(m["confusion_matrix"]) == 12
    assert set(m["per_class"]) >= {"NORMAL", "BACTERIA", "VIRUS"}
    card = ModelCard.load(tmp_path / "w")
    assert card.task == "subtype" and card.class_names == TASKS["subtype"].class_names
    assert (tmp_path / "r" / "sample_results.png").is_file() and (tmp_path / "r" / "roc_curve.png").is_file()


@pytest.mark.slow
def test_cli_kfold_cross_validation_reports_mean_and_std_of_folds(phantom_root, tmp_path):
    from xai_cxr.cli import main
    assert main(["train", "--folds", "2", "--data-dir", str(phantom_root), "--backbone", "cxr-small",
                 "--weights", "none", "--image-size", "64", "--batch-size", "8", "--epochs1", "1",
                 "--weights-dir", str(tmp_path / "w"), "--results-dir", str(tmp_path / "r")]) == 0
    cv = json.loads((tmp_path / "r" / "cv" / "cv_metrics.json").read_text())
    assert [f["fold"] for f in cv["folds"]] == [1, 2]
    assert sum(f["val_images"] for f in cv["folds"]) == 24                     # every train image validates once
    accs = [f["accuracy"] for f in cv["folds"]]
    assert cv["summary"]["accuracy"]["mean"] == pytest.approx(np.mean(accs))
    assert cv["summary"]["accuracy"]["std"] == pytest.approx(np.std(accs, ddof=1))
    assert (tmp_path / "w" / "cv" / "fold2" / "model.weights.h5").is_file()


def test_any_folder_per_class_dataset_with_four_classes(tmp_path):
    """A non-X-ray layout: four classes of textured images, class names read from the folders."""
    from xai_cxr.cli import main
    from xai_cxr.data import detect_classes
    rng = np.random.default_rng(0)
    classes = ["apple", "bread", "cheese", "dates"]
    for split, n in (("train", 6), ("test", 3)):
        for k, name in enumerate(classes):
            folder = tmp_path / "food" / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                img = (rng.random((40, 40)) * 60 + 40 * k).astype(np.uint8)
                cv2.imwrite(str(folder / f"{name}_{i}.png"), img)
    assert detect_classes(tmp_path / "food") == tuple(classes)
    assert main(["train", "--data-dir", str(tmp_path / "food"), "--classes", "auto", "--backbone", "cxr-small",
                 "--weights", "none", "--image-size", "32", "--batch-size", "8", "--epochs1", "1",
                 "--weights-dir", str(tmp_path / "w"), "--results-dir", str(tmp_path / "r")]) == 0
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["classes"] == classes and np.array(m["confusion_matrix"]).shape == (4, 4)
    assert np.sum(m["confusion_matrix"]) == 12


def test_cli_segment_scores_unet_and_gradcam_against_masks(trained, phantom_root):
    from xai_cxr.cli import main
    out, _ = trained
    assert main(["segment", "--weights-dir", str(out / "weights"), "--data-dir", str(phantom_root),
                 "--epochs", "2", "--out", str(out / "seg")]) == 0
    scores = json.loads((out / "seg" / "segmentation.json").read_text())
    for key in ("unet_classify_then_segment", "gradcam_top5"):
        assert scores[key]["n_images"] == 6                        # the 6 positive test phantoms, all with lesions
    # Grad-CAM's top 5% is 5% of the image; a lesion covers less, so its Dice is bounded by the area ratio
    assert scores["gradcam_top5"]["dice"] < 0.9
    assert cv2.imread(str(out / "seg" / "segmentation.png")).std() > 10


@pytest.mark.slow
def test_cli_compare_ensemble_against_its_members(phantom_root, tmp_path):
    import pandas as pd

    from xai_cxr.cli import main
    assert main(["compare", "--backbones", "mobilenetv2", "ensemble", "--data-dir",
                 str(phantom_root), "--weights", "none", "--image-size", "32", "--batch-size", "8",
                 "--epochs1", "1", "--epochs2", "0", "--weights-dir", str(tmp_path / "w"),
                 "--results-dir", str(tmp_path / "r")]) == 0
    table = pd.read_csv(tmp_path / "r" / "compare" / "compare.csv")
    assert table.backbone.tolist() == ["mobilenetv2", "ensemble"]
    # the ensemble holds MobileNetV2 (2.26 M without its top) and DenseNet169 (12.6 M) plus its own head
    params = table.set_index("backbone").parameters
    assert params["ensemble"] > params["mobilenetv2"] + 12_000_000
    for name in table.backbone:
        metrics = json.loads((tmp_path / "r" / "compare" / name / "metrics.json").read_text())
        assert metrics["backbone"] == name and metrics["n_images"] == 12
        row = table.set_index("backbone").loc[name]                 # the table is the runs' own metrics
        assert row.accuracy == pytest.approx(metrics["accuracy"]) and row.f1 == pytest.approx(metrics["f1"])
    assert (tmp_path / "r" / "compare" / "ensemble" / "sample_results.png").is_file()


@pytest.mark.slow
def test_mask_layout_like_lgg_brain_mri_trains_and_audits_against_masks(tmp_path):
    """<case>/<name>.tif with <name>_mask.tif beside it (RGB TIFF slices), no split folders."""
    import pandas as pd

    from xai_cxr.cli import main
    from xai_cxr.data.phantom import make_phantom
    from xai_cxr.tasks import get_task
    rng = np.random.default_rng(5)
    root = tmp_path / "lgg"
    for case in range(8):
        folder = root / f"TCGA_CS_{4941 + case}_19960909"
        folder.mkdir(parents=True)
        for s in range(6):
            img, lesion, _ = make_phantom(rng, 64, n_lesions=s % 2, lesion_radius=(6.0, 10.0))
            stem = f"{folder.name}_{s + 1}"
            cv2.imwrite(str(folder / f"{stem}.tif"), np.repeat(img[..., None], 3, axis=2))
            cv2.imwrite(str(folder / f"{stem}_mask.tif"), lesion.astype(np.uint8) * 255)
    df = get_task("mask").scan(root)
    assert (df.label_idx == df.mask_path.map(lambda p: cv2.imread(p, 0).any())).all()
    assert not set(df[df.split == "train"].patient_id) & set(df[df.split == "test"].patient_id)
    assert main(["train", "--data-dir", str(root), "--task", "mask", "--backbone", "cxr-small", "--weights", "none",
                 "--image-size", "64", "--batch-size", "8", "--epochs1", "1", "--validation", "holdout:0.2",
                 "--weights-dir", str(tmp_path / "w"), "--results-dir", str(tmp_path / "r")]) == 0
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["positive_class"] == "LESION" and "gradcam_pointing_game" in m
    assert main(["audit", "--weights-dir", str(tmp_path / "w"), "--data-dir", str(root), "--methods", "gradcam",
                 "--n-images", "3", "--steps", "4", "--out", str(tmp_path / "audit")]) == 0
    loc = pd.read_csv(tmp_path / "audit" / "audit_localization.csv")
    assert loc.method.tolist()[0] == "gradcam"
    assert (loc.pointing_game * loc.n_images).round(6).apply(float.is_integer).all()   # hits out of n images


@pytest.mark.slow
def test_colour_data_set_stays_in_colour_through_training_explain_and_faithfulness(tmp_path):
    """Two classes that differ only in hue (same gray value): the pipeline must keep RGB all the way."""
    from xai_cxr.cli import main
    from xai_cxr.data import load_images, scan_dataset, to_model_input
    from xai_cxr.explain.metrics.faithfulness import deletion_insertion
    from xai_cxr.models import BACKBONES
    rng = np.random.default_rng(2)
    colours = {"reddish": (60, 60, 200), "greenish": (60, 140, 80)}          # BGR for cv2.imwrite
    for split, n in (("train", 8), ("test", 4)):
        for name, bgr in colours.items():
            folder = tmp_path / "fruit" / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                img = np.clip(np.array(bgr)[None, None] + rng.normal(0, 10, (40, 40, 3)), 0, 255).astype(np.uint8)
                cv2.imwrite(str(folder / f"{name}_{i}.png"), img)
    df = scan_dataset(tmp_path / "fruit", ("greenish", "reddish"))
    images = load_images(df[df.split == "test"], 32, progress=False, color=True)
    assert images.images.shape == (8, 32, 32, 3)
    red = images.images[images.labels == 1].reshape(-1, 3).mean(0)
    assert red[0] > red[2] + 80                                               # RGB order, red channel high
    x = to_model_input(images.images, BACKBONES["cxr-small"].preprocess).numpy()
    np.testing.assert_allclose(x, images.images / 255.0, atol=1e-6)          # colours reach the model as is
    dele, ins = deletion_insertion(lambda im: np.full((len(im), 2), 0.5) + 0 * im.reshape(len(im), -1)[:, :2],
                                   images.images[:2], np.random.default_rng(0).random((2, 32, 32)), [1, 1], steps=4)
    assert np.allclose(dele, 0.5) and np.allclose(ins, 0.5)                  # colour images perturb cleanly
    assert main(["train", "--data-dir", str(tmp_path / "fruit"), "--classes", "greenish,reddish", "--color",
                 "--backbone", "cxr-small", "--weights", "none", "--image-size", "32", "--batch-size", "8",
                 "--epochs1", "1", "--weights-dir", str(tmp_path / "w"), "--results-dir", str(tmp_path / "r")]) == 0
    image = sorted((tmp_path / "fruit" / "test" / "reddish").glob("*.png"))[0]
    assert main(["explain", str(image), "--weights-dir", str(tmp_path / "w"), "--out", str(tmp_path / "x")]) == 0
    overlays = list((tmp_path / "x").glob("*.png"))
    assert overlays and cv2.imread(str(overlays[0])).std() > 5


@pytest.mark.slow
def test_cli_evaluate_streams_across_the_chunk_boundary_like_the_in_memory_path(trained, tmp_path):
    """300 test films > one 256-image chunk: the CLI's streamed metrics equal the in-memory evaluation."""
    from xai_cxr.cli import main
    from xai_cxr.config import DataConfig
    from xai_cxr.data import load_images, scan_dataset
    from xai_cxr.models import load_trained_model
    from xai_cxr.pipeline import evaluate_on_test
    out, _ = trained
    root = write_phantom_dataset(tmp_path / "many", PhantomConfig(image_size=48, n_train=1, n_test=150, seed=9))
    assert main(["evaluate", "--data-dir", str(root), "--weights-dir", str(out / "weights"), "--batch-size", "50",
                 "--results-dir", str(tmp_path / "eval")]) == 0
    streamed = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    model, card = load_trained_model(out / "weights")
    df = scan_dataset(root)
    test = load_images(df[df.split == "test"], card.image_size, progress=False)
    in_memory, _ = evaluate_on_test(model, test, DataConfig(image_size=card.image_size, batch_size=50))
    assert streamed["n_images"] == 300
    assert streamed["confusion_matrix"] == in_memory["confusion_matrix"]
    # chunks of 256 batch the films differently from one pass over 300: float rounding may swap a near-tied pair or
    # two of the 150 × 150 (each pair moves the AUC by 1/22,500)
    assert streamed["roc_auc"] == pytest.approx(in_memory["roc_auc"], abs=2.5 / (150 * 150))


def test_evaluate_writes_one_decision_per_film_as_the_predictor_decides_and_referral_per_class(trained, phantom_root):
    import pandas as pd

    from xai_cxr.cli import main
    from xai_cxr.data import load_images, scan_dataset
    from xai_cxr.serve.inference import Predictor
    out, _ = trained
    assert main(["evaluate", "--data-dir", str(phantom_root), "--weights-dir", str(out / "weights"),
                 "--results-dir", str(out / "eval_decisions")]) == 0
    table = pd.read_csv(out / "eval_decisions" / "decisions.csv")
    manifest = scan_dataset(phantom_root)
    test = load_images(manifest[manifest.split == "test"], 64, progress=False)
    preds = Predictor.from_weights_dir(out / "weights").predict(test.images)       # MC dropout seeded as there
    assert table.file.tolist() == test.manifest.path.tolist()
    assert table.true_label.tolist() == [("NORMAL", "PNEUMONIA")[k] for k in test.labels]
    assert table.label.tolist() == [p.label for p in preds] and table.decision.tolist() == [p.decision for p in preds]
    np.testing.assert_allclose(table.p_PNEUMONIA, [p.probabilities["PNEUMONIA"] for p in preds], rtol=1e-5)
    np.testing.assert_allclose(table.ood_score, [p.ood_score for p in preds], rtol=1e-5)
    np.testing.assert_allclose(table.uncertainty, [p.uncertainty for p in preds], rtol=1e-4, atol=1e-6)
    metrics = json.loads((out / "eval_decisions" / "metrics.json").read_text())
    for name in ("NORMAL", "PNEUMONIA"):
        rows = table[table.true_label == name]
        assert metrics["referral_by_class"][name]["referred"] == pytest.approx((rows.decision == "refer").mean())
    level, answered = metrics["error_level"], table[table.decision == "answer"]     # the rule fitted after training
    assert level["coverage"] == pytest.approx(len(answered) / len(table))
    accuracy = (answered.label == answered.true_label).mean() if len(answered) else None
    assert level["held"] == (None if accuracy is None else accuracy >= 1 - level["level"])


def test_evaluate_refers_every_film_of_a_foreign_folder_and_keeps_the_film_by_film_decision(trained, tmp_path,
                                                                                           monkeypatch):
    """evaluate's wiring of the folder verdict (the test's statistics: tests/test_shift.py; this model's holdout is
    too small for them): with the shift test saying "foreign", every film is referred for its folder."""
    import cv2
    import pandas as pd

    from xai_cxr.cli import main
    from xai_cxr.models import shift
    monkeypatch.setattr(shift, "MIN_FILMS", 1)
    monkeypatch.setattr(shift, "c2st", lambda reference, films: shift.ShiftTest(0.97, (0.95, 0.99), 1 / 1001,
                                                                                 len(reference), len(films), 1000))
    out, _ = trained
    root = write_phantom_dataset(tmp_path / "inverted", PhantomConfig(image_size=64, n_train=1, n_test=15, seed=5))
    for path in (root / "test").rglob("*.png"):                  # a folder of films unlike any training film
        cv2.imwrite(str(path), 255 - cv2.imread(str(path), cv2.IMREAD_GRAYSCALE))
    assert main(["evaluate", "--data-dir", str(root), "--weights-dir", str(out / "weights"),
                 "--results-dir", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    table = pd.read_csv(tmp_path / "eval" / "decisions.csv", keep_default_na=False)
    assert metrics["shift"]["all films"]["foreign"]
    assert (table.decision == "refer").all() and table.reasons.str.contains("foreign_folder").all()
    assert metrics["referral"]["coverage"] == 0
    assert metrics["error_level"]["coverage"] == metrics["referral_per_film"]["coverage"]   # checked film by film
    # film by film, a film was answered exactly when the folder was its only reason
    assert metrics["referral_per_film"]["coverage"] == pytest.approx((table.reasons == "foreign_folder").mean())


def test_fit_ood_writes_the_ages_into_a_card_without_them_and_explain_then_refers_an_adult_dicom(trained, tmp_path,
                                                                                                  capsys):
    import shutil

    from conftest import write_dicom

    from xai_cxr.cli import main
    from xai_cxr.data.phantom import make_phantom
    from xai_cxr.models import ModelCard, ModelFolder
    out, _ = trained
    copy = tmp_path / "weights"
    shutil.copytree(out / "weights", copy)
    assert ModelCard.load(copy).population_age is None                 # as a card written before the age rule
    assert main(["fit-ood", str(copy)]) == 0
    assert "does not name the training population's ages" in capsys.readouterr().out
    assert main(["fit-ood", str(copy), "--population-age", "1-5", "--error-level", "0.2"]) == 0
    assert ModelCard.load(copy).population_age == (1.0, 5.0)
    assert ModelFolder(copy).selective().error_level == 0.2                    # refitted at the level asked for
    write_dicom(tmp_path / "adult.dcm", make_phantom(np.random.default_rng(3), 64, n_lesions=0)[0], "MONOCHROME2",
                PatientAge="081Y", PatientName="Doe^Jane")
    capsys.readouterr()
    assert main(["explain", str(tmp_path / "adult.dcm"), "--weights-dir", str(copy), "--out",
                 str(tmp_path / "maps")]) == 0
    said, rows = capsys.readouterr().out, (tmp_path / "maps" / "decisions.csv").read_text()
    assert "adult.dcm: REFER (" in said and "age" in rows.splitlines()[1].split(",")[2].split(";")
    assert all("081" not in text and "Doe" not in text for text in (said, rows))
