"""The frozen-feature cache trains the same model as the plain path."""
import numpy as np
import pytest

from xai_cxr.config import ModelConfig, TrainConfig
from xai_cxr.data import make_dataset, to_model_input
from xai_cxr.models import BACKBONES, build_model, set_trainable
from xai_cxr.models.cache import StageFeatureCache, cache_layer, extract_features, model_after

PREP = BACKBONES["vgg19"].preprocess


def _loss_and_grads(model, x, y, variables):
    import keras
    import tensorflow as tf
    with tf.GradientTape() as tape:
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=0.05)(y, model(x, training=False))
    return float(loss), [g.numpy() for g in tape.gradient(loss, variables)]


@pytest.mark.parametrize("unfreeze_from, layer, dtype", [(None, "block5_pool", np.float32),
                                                         ("block5_conv1", "block4_pool", np.float32),
                                                         (None, "block5_pool", np.float16)])
def test_one_step_loss_and_gradients_match_the_plain_path(unfreeze_from, layer, dtype):
    """Equal up to float32 round-off with the default float32 cache; within 1% with a float16 stage-1 cache."""
    model = build_model(ModelConfig(weights="none"), 32)
    set_trainable(model, unfreeze_from=unfreeze_from)
    assert cache_layer(model, False, unfreeze_from) == layer
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 32, 32), dtype=np.uint8)
    y = np.eye(2, dtype=np.float32)[np.arange(6) % 2]
    variables = model.trainable_variables
    loss, grads = _loss_and_grads(model, to_model_input(images, PREP), y, variables)
    top = model_after(model, layer)
    assert [v.path for v in top.trainable_variables] == [v.path for v in variables]    # the same variables
    feats = extract_features(model, layer, images, PREP, dtype=dtype).astype(np.float32)
    loss_c, grads_c = _loss_and_grads(top, feats, y, variables)
    tol = 1e-5 if dtype == np.float32 else 1e-2
    assert loss_c == pytest.approx(loss, rel=tol)
    for g, gc in zip(grads, grads_c):
        assert np.linalg.norm(gc - g) <= tol * np.linalg.norm(g) + 1e-12


def test_cached_training_updates_the_full_model_and_saves_it(tmp_path):
    from xai_cxr.models.train import train_two_stage
    rng = np.random.default_rng(1)
    images, labels = rng.integers(0, 256, (16, 32, 32), dtype=np.uint8), np.arange(16) % 2
    model = build_model(ModelConfig(weights="none"), 32)
    before = model.get_layer("block5_conv1").get_weights()[0].copy()
    head_before = model.get_layer("head_dense").get_weights()[0].copy()
    stage_data = StageFeatureCache(model, images, labels, images, labels, PREP, batch_size=8,
                                   finetune_from="block5_conv1")
    ds = make_dataset(images, labels, PREP, batch_size=8)
    history = train_two_stage(model, ds, ds, TrainConfig(verbose=0).with_epochs(1, 1), tmp_path,
                              stage_data=stage_data)
    assert set(history) == {"stage1", "stage2"}
    assert not np.allclose(model.get_layer("block5_conv1").get_weights()[0], before)
    assert not np.allclose(model.get_layer("head_dense").get_weights()[0], head_before)
    fresh = build_model(ModelConfig(weights="none"), 32)
    fresh.load_weights(tmp_path / "model.weights.h5")
    x = to_model_input(images, PREP)
    np.testing.assert_allclose(fresh.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


def test_backbone_that_trains_whole_bypasses_the_cache():
    model = build_model(ModelConfig(backbone="cxr-small", weights="none"), 32)
    assert cache_layer(model, True, None) is None


def test_stage1_features_derived_from_the_stage2_cache_equal_direct_extraction():
    from xai_cxr.config import StageConfig
    model = build_model(ModelConfig(weights="none"), 32)
    set_trainable(model)
    images = np.random.default_rng(2).integers(0, 256, (5, 32, 32), dtype=np.uint8)
    labels = np.arange(5) % 2
    stage_data = StageFeatureCache(model, images, labels, images, labels, PREP, batch_size=4,
                                   finetune_from="block5_conv1")
    top, train_ds, _ = stage_data(StageConfig(epochs=1, learning_rate=1e-3))
    cached = np.concatenate([f.numpy() for f, _ in train_ds])                 # shuffled: compare sorted
    direct = extract_features(model, "block5_pool", images, PREP)
    key = lambda a: a[np.argsort(a.reshape(len(a), -1).sum(1))]  # noqa: E731
    np.testing.assert_allclose(key(cached), key(direct), rtol=1e-5, atol=1e-4)


def _tiny_vgg_and_images(n=6, seed=3):
    model = build_model(ModelConfig(weights="none"), 32)
    images = np.random.default_rng(seed).integers(0, 256, (n, 32, 32), dtype=np.uint8)
    return model, images


def test_disk_cache_hit_equals_fresh_features_and_any_change_misses(tmp_path, capsys):
    from xai_cxr.models.cache import cache_key, disk_features
    model, images = _tiny_vgg_and_images()
    first = disk_features(model, "block4_pool", images, PREP, tmp_path)
    second = disk_features(model, "block4_pool", images, PREP, tmp_path)
    assert "hit" in capsys.readouterr().out and isinstance(second, np.memmap)
    np.testing.assert_array_equal(np.asarray(second), extract_features(model, "block4_pool", images, PREP))
    np.testing.assert_array_equal(np.asarray(first), np.asarray(second))
    key = cache_key(model, "block4_pool", images, PREP)
    changed = images.copy()
    changed[0, 0, 0] ^= 1
    assert cache_key(model, "block4_pool", changed, PREP) != key                       # image content
    assert cache_key(model, "block5_pool", images, PREP) != key                        # layer
    assert cache_key(model, "block4_pool", images, BACKBONES["cxr-small"].preprocess) != key  # preprocessing
    w = model.get_layer("block1_conv1").get_weights()
    model.get_layer("block1_conv1").set_weights([w[0] * 1.01, w[1]])
    assert cache_key(model, "block4_pool", images, PREP) != key                        # weights
    fresh = disk_features(model, "block4_pool", images, PREP, tmp_path)
    assert not np.allclose(np.asarray(fresh), np.asarray(first))                       # never the stale entry
    assert len(list(tmp_path.iterdir())) == 2


@pytest.mark.parametrize("problem", ["not_a_folder", "full", "corrupt"])
def test_bad_cache_folder_falls_back_to_correct_features(tmp_path, monkeypatch, capsys, problem):
    from xai_cxr.models import cache
    model, images = _tiny_vgg_and_images()
    cache_dir = tmp_path / "cache"
    if problem == "not_a_folder":
        cache_dir.write_text("a file where the cache folder should be")
    elif problem == "full":
        monkeypatch.setattr(cache, "_free_bytes", lambda folder: 1024)
    else:
        cache.disk_features(model, "block4_pool", images, PREP, cache_dir)
        (entry,) = cache_dir.iterdir()
        (entry / "features.npy").write_bytes(b"\x93NUMPY garbage")
    got = cache.disk_features(model, "block4_pool", images, PREP, cache_dir)
    out = capsys.readouterr().out
    assert ("recomputing" if problem == "corrupt" else "cannot write") in out
    np.testing.assert_array_equal(np.asarray(got), extract_features(model, "block4_pool", images, PREP))


def test_memory_mapped_features_give_the_same_batches_and_training(tmp_path):
    from xai_cxr.models.cache import disk_features, feature_dataset
    model, images = _tiny_vgg_and_images(n=10)
    labels = np.arange(10) % 2
    mem = extract_features(model, "block4_pool", images, PREP)
    mm = disk_features(model, "block4_pool", images, PREP, tmp_path)
    for shuffle in (False, True):
        a = [(f.numpy(), y.numpy()) for f, y in feature_dataset(mem, labels, 2, 4, shuffle=shuffle, seed=1)]
        b = [(f.numpy(), y.numpy()) for f, y in feature_dataset(mm, labels, 2, 4, shuffle=shuffle, seed=1)]
        assert [len(f) for f, _ in a] == [len(f) for f, _ in b] == [4, 4, 2]
        key = lambda batches: sorted((f.sum().round(3), int(y.argmax())) for fs, ys in batches  # noqa: E731
                                     for f, y in zip(fs, ys))
        assert key(a) == key(b)                                   # same (feature, label) pairs


def test_branching_backbone_caches_stage1_but_runs_stage2_plain():
    from xai_cxr.config import StageConfig
    model = build_model(ModelConfig(backbone="mobilenetv2", weights="none"), 32)
    images = np.random.default_rng(4).integers(0, 256, (4, 32, 32), dtype=np.uint8)
    labels = np.arange(4) % 2
    stage_data = StageFeatureCache(model, images, labels, images, labels, BACKBONES["mobilenetv2"].preprocess,
                                   batch_size=4, finetune_from="block_16_expand")
    assert stage_data(StageConfig(epochs=1, learning_rate=1e-5, unfreeze_from="block_16_expand")) is None
    top, train_ds, _ = stage_data(StageConfig(epochs=1, learning_rate=1e-3))
    feats = next(iter(train_ds))[0]
    np.testing.assert_allclose(np.asarray(top(feats)).sum(1), 1.0, atol=1e-5)   # head on cached features
