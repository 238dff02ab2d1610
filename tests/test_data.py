"""Manifest, decoding, splits, class weights and the tf.data pipeline."""
import os

import cv2
import numpy as np
import pandas as pd
import pytest

from xai_cxr.data import (
    DatasetLayoutError,
    ImageReadError,
    class_weights,
    holdout_split,
    limit_train,
    load_images,
    make_dataset,
    parse_kermany_name,
    read_gray,
    scan_dataset,
    select_validation,
)


def _img(path, value=128, shape=(20, 24)):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full(shape, value, np.uint8))


@pytest.mark.parametrize("name, subtype, patient", [
    ("person1_bacteria_1.jpeg", "bacteria", "person1"),
    ("person1437_virus_2482.jpeg", "virus", "person1437"),
    ("IM-0115-0001.jpeg", None, "IM-0115"),
    ("NORMAL2-IM-1427-0001.jpeg", None, "NORMAL2-IM-1427"),
    ("scan.png", None, "scan"),
])
def test_parse_kermany_name_subtype_and_patient(name, subtype, patient):
    assert parse_kermany_name(name) == (subtype, patient)


def test_manifest_parses_subtypes_patients_masks_and_ignores_junk(tmp_path):
    root = tmp_path / "chest_xray"
    _img(root / "Train" / "normal" / "IM-0001-0001.jpeg")
    _img(root / "Train" / "normal" / "IM-0001-0002.jpeg")
    _img(root / "Train" / "PNEUMONIA" / "person7_bacteria_30.jpeg")
    _img(root / "Train" / "PNEUMONIA" / "person7_bacteria_30_mask.png")
    _img(root / "Train" / "PNEUMONIA" / "person8_virus_31.png")
    (root / "Train" / "PNEUMONIA" / ".DS_Store").write_bytes(b"junk")
    (root / "Train" / "PNEUMONIA" / "notes.txt").write_text("not an image")
    _img(root / "__MACOSX" / "train" / "NORMAL" / "._x.jpeg")
    _img(root / "TEST" / "Normal" / "IM-0002-0001.jpeg")
    _img(root / "TEST" / "Pneumonia" / "person9_virus_1.jpeg")
    df = scan_dataset(root)
    assert len(df) == 6 and set(df.split) == {"train", "test"}
    row = df[df.path.str.endswith("person7_bacteria_30.jpeg")].iloc[0]
    assert (row.label, row.label_idx, row.subtype, row.patient_id) == ("PNEUMONIA", 1, "bacteria", "person7")
    assert row.mask_path.endswith("person7_bacteria_30_mask.png")
    assert df[df.label == "NORMAL"].subtype.eq("normal").all()
    assert df[df.split == "train"].patient_id.value_counts()["IM-0001"] == 2
    assert df.path.is_monotonic_increasing


@pytest.mark.parametrize("case, match", [
    ("no_root", "data folder not found"),
    ("empty_class", "class folder has no images"),
    ("missing_class", "class folder missing"),
])
def test_layout_errors_name_the_folder_and_show_layout(tmp_path, case, match):
    root = tmp_path / "data"
    if case != "no_root":
        _img(root / "train" / "NORMAL" / "a.png")
        if case == "empty_class":
            (root / "train" / "PNEUMONIA").mkdir()
    with pytest.raises(DatasetLayoutError, match=match) as info:
        scan_dataset(root)
    assert str(root) in str(info.value) and "expected layout" in str(info.value)


def test_class_weights_balance_counts():
    labels = np.array([0] * 30 + [1] * 90)
    w = class_weights(labels)
    counts = np.bincount(labels)
    assert w[0] * counts[0] == pytest.approx(w[1] * counts[1]) == pytest.approx(len(labels) / 2)
    assert w[0] == pytest.approx(2.0) and w[1] == pytest.approx(2 / 3)


def test_read_gray_handles_depths_and_channels(tmp_path):
    rng = np.random.default_rng(0)
    g16 = rng.integers(0, 65535, (10, 12), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "g16.png"), g16)
    expected16 = np.round((g16 - g16.min()) / (g16.max() - g16.min()) * 255).astype(np.uint8)
    np.testing.assert_array_equal(read_gray(tmp_path / "g16.png"), expected16)

    bgra = rng.integers(0, 255, (10, 12, 4), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "rgba.png"), bgra)
    b, g, r = (bgra[..., i].astype(float) for i in range(3))
    np.testing.assert_allclose(read_gray(tmp_path / "rgba.png"), 0.299 * r + 0.587 * g + 0.114 * b, atol=1.5)

    cv2.imwrite(str(tmp_path / "gray.png"), bgra[..., 0])
    np.testing.assert_array_equal(read_gray(tmp_path / "gray.png"), bgra[..., 0])


def test_corrupt_images_are_skipped_and_reported(tmp_path):
    good = tmp_path / "good.jpeg"
    _img(good, 90)
    truncated = tmp_path / "truncated.jpeg"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    (tmp_path / "empty.jpeg").write_bytes(b"")
    (tmp_path / "text.jpeg").write_text("this is not a JPEG")
    for bad, why in (("truncated.jpeg", "truncated"), ("empty.jpeg", "empty"), ("text.jpeg", "not a decodable")):
        with pytest.raises(ImageReadError, match=why):
            read_gray(tmp_path / bad)
    names = ["good.jpeg", "truncated.jpeg", "empty.jpeg", "text.jpeg"]
    manifest = pd.DataFrame({"path": [str(tmp_path / n) for n in names], "label_idx": [0, 1, 1, 0]})
    out = load_images(manifest, 16, progress=False)
    assert out.images.shape == (1, 16, 16) and out.labels.tolist() == [0]
    assert sorted(os.path.basename(p) for p, _ in out.skipped) == sorted(names[1:])


def test_real_dicom_reads_as_gray(tmp_path):
    from conftest import SHARED
    path = SHARED / "dicom" / "nih-chestxray14-no-finding.dcm"
    if not path.exists():
        pytest.skip(f"{path} not present")
    img = read_gray(path)
    assert img.shape == (1024, 1024) and img.dtype == np.uint8 and img.std() > 10


def _manifest(n_patients=40, per_patient=3):
    rows = []
    for p in range(n_patients):
        for k in range(per_patient):
            rows.append({"path": f"/x/p{p}_{k}.png", "split": "train", "label_idx": p % 2,
                         "label": "PNEUMONIA" if p % 2 else "NORMAL", "patient_id": f"person{p}"})
    rows += [{"path": f"/x/t{i}.png", "split": "test", "label_idx": i % 2, "label": "?", "patient_id": f"t{i}"}
             for i in range(10)]
    return pd.DataFrame(rows)


def test_holdout_split_keeps_patients_on_one_side_and_is_seeded():
    train = _manifest()
    tr, ho = holdout_split(train[train.split == "train"], 0.2, seed=1)
    assert not set(tr.patient_id) & set(ho.patient_id)
    assert len(tr) + len(ho) == 120 and 0 < len(ho) < 60
    tr2, ho2 = holdout_split(train[train.split == "train"], 0.2, seed=1)
    assert ho.path.tolist() == ho2.path.tolist()


def test_select_validation_modes():
    df = _manifest()
    tr, val, test, note = select_validation(df, "test")
    assert val.path.tolist() == test.path.tolist() and "optimistic" in note
    tr, val, test, note = select_validation(df, "holdout:0.25")
    assert not set(tr.patient_id) & set(val.patient_id) and len(test) == 10
    with pytest.raises(DatasetLayoutError, match="no val/ split"):
        select_validation(df, "val")
    with pytest.raises(ValueError, match="holdout"):
        select_validation(df, "sideways")


def test_limit_train_is_stratified_and_keeps_test_whole():
    df = _manifest()
    small = limit_train(df, 30, seed=0)
    train = small[small.split == "train"]
    assert len(train) == 30 and train.label_idx.sum() == 15
    assert (small.split == "test").sum() == 10
    assert limit_train(df, 30, seed=0).path.tolist() == small.path.tolist()


def test_pipeline_applies_vgg19_preprocessing_and_one_hot():
    from xai_cxr.models import BACKBONES
    images = np.random.default_rng(0).integers(0, 256, (5, 8, 8), dtype=np.uint8)
    ds = make_dataset(images, np.array([0, 1, 1, 0, 1]), BACKBONES["vgg19"].preprocess, batch_size=4)
    x, y = next(iter(ds))
    # caffe mode by hand: RGB→BGR then minus the ImageNet BGR means; gray channels are identical
    expected = images[:4, ..., None].astype(np.float32) - np.array([103.939, 116.779, 123.68], np.float32)
    np.testing.assert_allclose(x.numpy(), expected, atol=1e-4)
    np.testing.assert_array_equal(y.numpy(), [[1, 0], [0, 1], [0, 1], [1, 0]])


def test_shuffle_is_seeded():
    from xai_cxr.models import BACKBONES
    images = np.arange(20, dtype=np.uint8).reshape(20, 1, 1).repeat(4, 1).repeat(4, 2)
    order = lambda seed: np.concatenate([x.numpy()[:, 0, 0, 0] for x, _ in make_dataset(  # noqa: E731
        images, np.zeros(20, int), BACKBONES["cxr-small"].preprocess, batch_size=8, shuffle=True, seed=seed)])
    assert (order(1) == order(1)).all() and not (order(1) == order(2)).all()


def test_augmentation_is_seeded_keeps_labels_and_is_off_by_default():
    from xai_cxr.config import AugmentConfig
    from xai_cxr.data import make_dataset
    yy, xx = np.mgrid[0:32, 0:32]
    imgs = np.repeat(((xx * 8) % 256).astype(np.uint8)[None], 16, axis=0)       # a horizontal ramp
    labels = np.arange(16) % 2

    def batches(augment, seed=1):
        return [(x.numpy(), y.numpy()) for x, y in make_dataset(imgs, labels, lambda t: t, 2, 8, seed=seed,
                                                                augment=augment)]
    plain = batches(None)
    np.testing.assert_array_equal(plain[0][0][..., 0], imgs[:8])                 # off: untouched pixels
    aug, again, other = batches(AugmentConfig()), batches(AugmentConfig()), batches(AugmentConfig(), seed=2)
    np.testing.assert_array_equal(aug[0][0], again[0][0])                       # same seed → same batches
    assert not np.array_equal(aug[0][0], other[0][0])
    assert not np.array_equal(aug[0][0], plain[0][0])
    np.testing.assert_array_equal(aug[0][1], plain[0][1])                       # labels unchanged
    assert aug[0][0].min() >= 0 and aug[0][0].max() <= 255
    # no flip by default: the ramp still rises left to right in every augmented image
    cols = aug[0][0][..., 0][:, 8:24, :].mean(axis=1)
    assert (cols[:, 24] > cols[:, 8]).all()


def test_configs_round_trip_through_json():
    from xai_cxr.config import AugmentConfig, CamConfig, DataConfig, ModelConfig, TrainConfig, from_json, to_json
    cfgs = (DataConfig(augment=AugmentConfig(zoom=0.2)), ModelConfig(dropout=(0.1, 0.2)),
            TrainConfig().with_epochs(3, 2), CamConfig(method="hirescam"))
    back = from_json(to_json(*cfgs))
    assert tuple(back[type(c).__name__] for c in cfgs) == cfgs


def test_kfold_splits_group_patients_cover_every_image_once_and_are_seeded():
    from xai_cxr.data import kfold_splits
    rng = np.random.default_rng(0)
    patients = [f"p{i}" for i in rng.integers(0, 40, 120)]
    df = pd.DataFrame({"patient_id": patients, "label_idx": [int(p[1:]) % 3 == 0 for p in patients]})
    splits = kfold_splits(df, 4, seed=1)
    seen = np.concatenate([va for _, va in splits])
    assert sorted(seen.tolist()) == list(range(120))                          # each image validates once
    for tr, va in splits:
        assert not set(df.patient_id.iloc[tr]) & set(df.patient_id.iloc[va])  # no patient on both sides
        assert 0.1 < df.label_idx.iloc[va].mean() < 0.6
    again = kfold_splits(df, 4, seed=1)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(splits, again))
    with pytest.raises(ValueError, match="at least 2 folds"):
        kfold_splits(df, 1)


def test_kaggle_zip_nested_layout_is_found_one_level_down(tmp_path):
    from xai_cxr.data import find_data_root
    from xai_cxr.data.phantom import PhantomConfig, write_phantom_dataset
    outer = tmp_path / "chest_xray"
    inner = write_phantom_dataset(outer / "chest_xray", PhantomConfig(image_size=32, n_train=2, n_test=2))
    (outer / "__MACOSX" / "chest_xray" / "train").mkdir(parents=True)     # the zip's metadata twin is ignored
    root, note = find_data_root(outer)
    assert root == inner and "one folder down" in note
    assert find_data_root(inner) == (inner, None)                        # the normal layout: no note
    from xai_cxr.tasks import get_task
    binary = get_task("binary")
    assert len(binary.scan(outer)) == len(binary.scan(inner)) == 8
    empty = tmp_path / "empty"
    empty.mkdir()
    assert find_data_root(empty) == (empty, None)                        # nothing found: the scan explains


def test_clahe_option_equals_opencv_clahe_after_the_resize(tmp_path):
    from xai_cxr.data import load_image
    rng = np.random.default_rng(0)
    img = (np.linspace(40, 120, 96)[None, :] + rng.normal(0, 8, (80, 96))).clip(0, 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "f.png"), img)
    by_hand = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(
        cv2.resize(img, (64, 64), interpolation=cv2.INTER_AREA))
    np.testing.assert_array_equal(load_image(tmp_path / "f.png", 64, clahe=True), by_hand)
    assert not np.array_equal(load_image(tmp_path / "f.png", 64), by_hand)


def test_tta_averages_exactly_the_listed_views(tmp_path):
    """A model whose output depends on position: TTA's probabilities = the mean of the model on the identity
    and the 90% centre zoom, computed here by hand (crop, resize, predict, average)."""
    import keras

    from xai_cxr.data import scan_dataset
    from xai_cxr.data.phantom import PhantomConfig, write_phantom_dataset
    from xai_cxr.data.stream import stream_predict
    root = write_phantom_dataset(tmp_path / "p", PhantomConfig(image_size=40, n_train=0, n_test=3, seed=1))
    manifest = scan_dataset(root)
    inp = keras.Input((40, 40, 3))
    out = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(inp))
    model = keras.Model(inp, out)
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 0.01, w.shape).astype("float32") for w in model.get_weights()])
    unit = lambda x: x / 255.0  # noqa: E731
    res = stream_predict(model, manifest, 40, unit, tta=("identity", "zoom"))
    grays = np.stack([cv2.resize(cv2.imread(p, cv2.IMREAD_GRAYSCALE), (40, 40), interpolation=cv2.INTER_AREA)
                      for p in res["paths"]])
    zoomed = np.stack([cv2.resize(g[2:38, 2:38], (40, 40), interpolation=cv2.INTER_LINEAR) for g in grays])
    probs = [model.predict(np.repeat(v[..., None], 3, -1).astype("float32") / 255.0, verbose=0) for v in (grays,
                                                                                                          zoomed)]
    np.testing.assert_allclose(res["proba"], (probs[0] + probs[1]) / 2, rtol=1e-5, atol=1e-6)
    plain = stream_predict(model, manifest, 40, unit)["proba"]
    assert not np.allclose(plain, res["proba"], atol=1e-6)
    with pytest.raises(ValueError, match="unknown test-time transform"):
        stream_predict(model, manifest, 40, unit, tta=("flip",))


def test_random_gamma_is_one_power_curve_per_image_within_its_range_and_identity_at_inference():
    """Each augmented image is 255·(x/255)^γ for a single γ of its own (recovered from one pixel, checked on
    all of them by numpy) with |log γ| ≤ factor; the images get different γ; inference leaves x alone."""
    import tensorflow as tf

    from xai_cxr.data.gamma import RandomGamma
    ramp = np.linspace(0, 255, 32 * 32, dtype=np.float32).reshape(1, 32, 32, 1)
    x = np.repeat(ramp, 6, axis=0)
    y = RandomGamma(0.4, seed=3)(tf.constant(x), training=True).numpy()
    u = x[0, 16, 0, 0] / 255.0                                   # a mid-grey pixel
    gammas = np.log(y[:, 16, 0, 0] / 255.0) / np.log(u)
    expected = 255.0 * (x / 255.0) ** gammas[:, None, None, None]
    np.testing.assert_allclose(y, expected, atol=0.05)
    assert np.all(np.abs(np.log(gammas)) <= 0.4 + 1e-5) and len(np.unique(gammas.round(4))) == 6
    np.testing.assert_array_equal(RandomGamma(0.4, seed=3)(tf.constant(x), training=False).numpy(), x)


def test_aspect_augmentation_changes_the_width_alone_within_its_range():
    """`--augment aspect`: a centred white bar keeps its height exactly; its width is zoomed by 1/(1 ± 0.3),
    both narrower and wider across draws (the squash-shortcut lever)."""
    import tensorflow as tf

    from xai_cxr.config import AUGMENT_PRESETS, AugmentConfig
    from xai_cxr.data.batches import augmenter
    only = AugmentConfig(rotation_deg=0, zoom=0, translate=0, brightness=0, contrast=0,
                         aspect=AUGMENT_PRESETS["aspect"].aspect)
    img = np.zeros((64, 64, 64, 1), np.float32)
    img[:, 20:44, 24:40] = 255                                                  # 24 tall, 16 wide
    out = np.asarray(augmenter(only, seed=3)(tf.constant(img), training=True))[..., 0] > 127
    heights = out.any(axis=2).sum(axis=1)
    widths = out.any(axis=1).sum(axis=1)
    np.testing.assert_array_equal(heights, 24)
    assert widths.min() >= np.floor(16 / 1.3) and widths.max() <= np.ceil(16 / 0.7)
    assert widths.min() < 15 and widths.max() > 17                              # narrower and wider both drawn
    assert AugmentConfig().aspect == 0                                          # off unless asked for
