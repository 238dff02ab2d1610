"""Model registry, offline weight rules, stage freezing, save/load."""
import numpy as np
import pytest

from xai_cxr.config import ModelConfig
from xai_cxr.models import (
    BACKBONES,
    ModelCard,
    WeightsNotFoundError,
    backbone_layers,
    build_model,
    load_trained_model,
    resolve_weights,
    set_trainable,
)


def test_weights_path_must_exist():
    with pytest.raises(WeightsNotFoundError, match="nowhere.h5"):
        resolve_weights("vgg19", "/nowhere.h5")


def test_head_has_dropouts_l2_and_softmax():
    model = build_model(ModelConfig(weights="none"), 32)
    assert [round(l.rate, 2) for l in model.layers if l.__class__.__name__ == "Dropout"] == [0.4, 0.3]
    dense = model.get_layer("head_dense")
    assert dense.kernel_regularizer is not None and dense.kernel_regularizer.l2 == pytest.approx(1e-4)
    assert model.output_shape == (None, 2) and model.layers[-1].activation.__name__ == "softmax"


def test_stage2_unfreezes_block5_and_head_only():
    model = build_model(ModelConfig(weights="none"), 32)
    set_trainable(model)
    assert not any(l.trainable for l in backbone_layers(model))
    set_trainable(model, unfreeze_from="block5_conv1")
    trainable = [l.name for l in backbone_layers(model) if l.trainable]
    assert trainable == ["block5_conv1", "block5_conv2", "block5_conv3", "block5_conv4", "block5_pool"]
    assert model.get_layer("head_dense").trainable
    with pytest.raises(ValueError, match="not a backbone layer"):
        set_trainable(model, unfreeze_from="block9_conv1")


def test_trained_model_round_trip_and_wrong_size_error(tmp_path):
    cfg = ModelConfig(backbone="cxr-small", weights="none")
    model = build_model(cfg, 32)
    model.save_weights(tmp_path / "model.weights.h5")
    ModelCard("cxr-small", 32, ("NORMAL", "PNEUMONIA"), target_layer="block4_relu2").save(tmp_path)
    loaded, card = load_trained_model(tmp_path)
    x = np.random.default_rng(0).random((2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    assert card.class_names == ("NORMAL", "PNEUMONIA")
    ModelCard("vgg19", 32, ("NORMAL", "PNEUMONIA")).save(tmp_path)      # weights of another architecture
    with pytest.raises(ValueError, match="does not fit a vgg19 model"):
        load_trained_model(tmp_path)


def test_training_refuses_to_start_without_disk_space(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    from xai_cxr.config import TrainConfig
    from xai_cxr.models.train import train_two_stage
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 10**6, 10**6))
    model = build_model(ModelConfig(backbone="cxr-small", weights="none"), 32)
    with pytest.raises(OSError, match="MiB free on the disk of"):
        train_two_stage(model, None, None, TrainConfig(verbose=0).with_epochs(1, 0), tmp_path, finetune_from=None)
    assert not (tmp_path / "model.weights.h5").exists()


def test_weights_with_another_head_shape_name_both_shapes(tmp_path):
    build_model(ModelConfig(backbone="cxr-small", weights="none", num_classes=3), 32).save_weights(
        tmp_path / "model.weights.h5")
    ModelCard("cxr-small", 32, ("NORMAL", "PNEUMONIA")).save(tmp_path)
    with pytest.raises(ValueError, match=r"\(256, 2\).*\(256, 3\)") as info:
        load_trained_model(tmp_path)
    assert "Target variable" not in str(info.value) and "2 classes" in str(info.value)


def test_nan_loss_stops_training_with_a_message(tmp_path, capsys):
    from xai_cxr.config import TrainConfig
    from xai_cxr.data import make_dataset
    from xai_cxr.models.train import train_two_stage
    images = np.zeros((8, 32, 32), np.uint8)
    nan_preprocess = lambda x: x * np.float32("nan")  # noqa: E731
    ds = make_dataset(images, np.arange(8) % 2, nan_preprocess, batch_size=4)
    model = build_model(ModelConfig(backbone="cxr-small", weights="none"), 32)
    history = train_two_stage(model, ds, ds, TrainConfig(verbose=0).with_epochs(3, 0), tmp_path, finetune_from=None)
    assert len(history["stage1"].get("loss", [])) <= 1
    assert "loss became nan" in capsys.readouterr().out


def test_mixed_bfloat16_model_matches_float32_predictions_and_gradcam():
    """Same weights under the mixed_bfloat16 policy: probabilities within 0.05, Grad-CAM ranks alike."""
    import keras

    from xai_cxr.explain.cam import GradCAM
    from xai_cxr.explain.metrics.sanity import spearman_per_image
    from xai_cxr.models.train import set_precision
    cfg = ModelConfig(backbone="cxr-small", weights="none")
    ref = build_model(cfg, 32)
    x = np.random.default_rng(0).random((4, 32, 32, 3)).astype("float32")
    try:
        set_precision("mixed_bfloat16")
        mixed = build_model(cfg, 32)
        mixed.set_weights(ref.get_weights())
        assert mixed.get_layer("block1_conv1").compute_dtype == "bfloat16"
        assert mixed.output.dtype == "float32"
        p_ref, p_mixed = ref.predict(x, verbose=0), mixed.predict(x, verbose=0)
        maps = GradCAM(mixed, "block4_relu2")(x, 1)
    finally:
        set_precision("float32")
    np.testing.assert_allclose(p_mixed, p_ref, atol=0.05)
    assert spearman_per_image(GradCAM(ref, "block4_relu2")(x, 1), maps).min() > 0.8
    assert keras.mixed_precision.global_policy().name == "float32"
    with pytest.raises(ValueError, match="precision must be one of"):
        set_precision("float8")


def test_a_saved_model_is_read_in_float32_under_a_mixed_policy_and_the_policy_is_kept(tmp_path):
    """Every reader builds the saved model in float32, so a detector or temperature fitted after mixed-precision
    training (run() reads the folder back the same way) sees the numbers the readers will."""
    import keras

    from xai_cxr.models import ModelCard, ModelFolder
    from xai_cxr.models.train import set_precision
    cfg = ModelConfig(backbone="cxr-small", weights="none")
    build_model(cfg, 32).save_weights(tmp_path / "model.weights.h5")
    ModelCard("cxr-small", 32, ("NORMAL", "PNEUMONIA")).save(tmp_path)
    try:
        set_precision("mixed_bfloat16")
        model, _ = ModelFolder(tmp_path).load()
        assert model.get_layer("block1_conv1").compute_dtype == "float32"
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    finally:
        set_precision("float32")


@pytest.mark.parametrize("name", sorted(n for n in BACKBONES if not BACKBONES[n].members))
def test_every_registry_backbone_builds_with_its_layers_and_gradcam(name):
    """Single networks; the stacked ensemble is built, trained and explained in test_cli_compare_*."""
    from xai_cxr.explain.cam import GradCAM
    spec = BACKBONES[name]
    size = max(spec.min_size, 48)
    model = build_model(ModelConfig(backbone=name, weights="none"), size)
    names = [l.name for l in model.layers]
    for layer in (spec.target_layer, *spec.fusion_layers, *([spec.finetune_from] if spec.finetune_from else [])):
        assert layer in names, layer
    x = np.asarray(spec.preprocess(np.random.default_rng(0).random((2, size, size, 3)).astype("float32") * 255))
    assert model.predict(x, verbose=0).shape == (2, 2)
    assert GradCAM(model, spec.target_layer)(x, 1).shape == (2, size, size)
    if spec.finetune_from:
        set_trainable(model, unfreeze_from=spec.finetune_from)
        trainable = [l.name for l in backbone_layers(model) if l.trainable]
        assert trainable[0] == spec.finetune_from and len(trainable) < len(backbone_layers(model))


def test_unknown_backbone_and_too_small_input_are_clear_errors():
    with pytest.raises(ValueError, match="choose from .*densenet121"):
        build_model(ModelConfig(backbone="resnet9000", weights="none"), 64)
    with pytest.raises(ValueError, match="at least 75px"):
        build_model(ModelConfig(backbone="inceptionv3", weights="none"), 64)


def test_budget_stops_after_the_last_epoch_that_fits_and_keeps_the_best_epoch(tmp_path, monkeypatch):
    """Epochs of 10 s on a fake clock and a 35 s budget: epochs 1-3 end at 10/20/30 s; a 4th would end at 40 s,
    so training stops after epoch 3 of 20, and the weights kept are the best holdout epoch's: their validation
    loss, evaluated again, is the minimum of the three logged."""
    import itertools

    import keras

    from xai_cxr.config import TrainConfig
    from xai_cxr.data import make_dataset
    from xai_cxr.models import callbacks
    from xai_cxr.models.train import train_two_stage
    ticks = itertools.chain([0.0], itertools.chain.from_iterable((10.0 * k, 10.0 * (k + 1)) for k in range(100)))
    monkeypatch.setattr(callbacks, "now", lambda: next(ticks))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (16, 32, 32)).astype(np.uint8)
    labels = np.arange(16) % 2
    ds = make_dataset(images, labels, lambda x: x / 255.0, batch_size=8)
    model = build_model(ModelConfig(backbone="cxr-small", weights="none"), 32)
    cfg = TrainConfig(verbose=0, budget_minutes=35 / 60, early_stopping_patience=50).with_epochs(20, 0)
    history = train_two_stage(model, ds, ds, cfg, tmp_path, finetune_from=None)
    val = history["stage1"]["val_loss"]
    assert len(val) == 3
    model.compile(loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing))
    again = model.evaluate(ds, verbose=0, return_dict=True)["loss"]
    assert again == pytest.approx(min(val), rel=1e-4)


def test_keep_last_saves_the_final_epoch_not_the_best(tmp_path):
    """``keep="last"``: the kept file holds the final epoch's weights — equal to the resume backup Keras's
    BackupAndRestore wrote after that epoch — and the model is left at them, even when an earlier epoch had the
    lower validation loss."""
    from xai_cxr.config import TrainConfig
    from xai_cxr.data import make_dataset
    from xai_cxr.models.train import train_two_stage
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (16, 32, 32)).astype(np.uint8)
    ds = make_dataset(images, np.arange(16) % 2, lambda x: x / 255.0, batch_size=8)
    val = make_dataset(images[:8], 1 - np.arange(8) % 2, lambda x: x / 255.0, batch_size=8)   # labels flipped:
    model = build_model(ModelConfig(backbone="cxr-small", weights="none"), 32)            # its loss rises
    cfg = TrainConfig(verbose=0, schedule="cosine", keep="last").with_epochs(4, 0)
    history = train_two_stage(model, ds, val, cfg, tmp_path, finetune_from=None)
    assert len(history["stage1"]["val_loss"]) == 4
    assert int(np.argmin(history["stage1"]["val_loss"])) != 3          # the best epoch is not the last one
    backup = build_model(ModelConfig(backbone="cxr-small", weights="none"), 32)
    backup.load_weights(tmp_path / "train_state" / "stage1" / "latest.weights.h5")
    kept = build_model(ModelConfig(backbone="cxr-small", weights="none"), 32)
    kept.load_weights(tmp_path / "model.weights.h5")
    for a, b, c in zip(kept.get_weights(), backup.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_cxr_res_trains_a_step_saves_reloads_to_the_same_predictions_and_has_residual_cam_layer(tmp_path):
    import keras

    from xai_cxr.explain.cam import GradCAM
    from xai_cxr.models import load_trained_model
    model = build_model(ModelConfig(backbone="cxr-res", weights="none"), 64)
    adds = [l for l in model.layers if isinstance(l, keras.layers.Add)]
    assert len(adds) == 4                                               # one residual block per stage
    assert model.get_layer("stage4_out").output.shape[1:3] == (4, 4)    # 64 px / 16
    x = np.random.default_rng(0).random((8, 64, 64, 3)).astype("float32")
    y = np.eye(2, dtype="float32")[np.arange(8) % 2]
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="categorical_crossentropy")
    before = [w.copy() for w in model.get_weights()]
    model.train_on_batch(x, y)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    model.save_weights(tmp_path / "model.weights.h5")
    ModelCard("cxr-res", 64, ("NORMAL", "PNEUMONIA"), target_layer="stage4_out").save(tmp_path)
    again, card = load_trained_model(tmp_path)
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    assert GradCAM(again, card.target_layer)(x[:2], 1).shape == (2, 64, 64)


def test_cosine_schedule_warms_up_then_decays_to_zero_at_the_last_epoch():
    from xai_cxr.config import StageConfig, TrainConfig
    from xai_cxr.models.train import make_optimizer
    cfg = TrainConfig(schedule="cosine", warmup_epochs=1, optimizer="adamw", weight_decay=1e-3)
    opt = make_optimizer(StageConfig(epochs=5, learning_rate=1e-3), cfg, steps_per_epoch=10)
    sched = opt._learning_rate
    by_step = np.array([float(sched(s)) for s in (0, 5, 10, 30, 50)])
    # warm-up 0 → 1e-3 over 10 steps, then 0.5·(1 + cos(π·t/40))·1e-3 for t = steps after warm-up
    expected = [0.0, 5e-4, 1e-3, 0.5 * (1 + np.cos(np.pi * 20 / 40)) * 1e-3, 0.0]
    np.testing.assert_allclose(by_step, expected, atol=1e-9)
    assert type(opt).__name__ == "AdamW" and float(opt.weight_decay) == pytest.approx(1e-3)


def test_ema_checkpoint_keeps_the_moving_average_of_the_best_epoch_not_the_live_weights(tmp_path, monkeypatch):
    """With --ema the weights kept are the exponential moving average, computed here by hand from the live
    weights after every step (avg = w after the first step, then m·avg + (1-m)·w), at the best holdout epoch."""
    import keras

    from xai_cxr.config import TrainConfig
    from xai_cxr.data import make_dataset
    from xai_cxr.models import callbacks
    from xai_cxr.models.train import train_two_stage
    live = []

    class Recorder(callbacks.NaNGuard):                         # rides on a callback the stage always has
        def on_train_batch_end(self, batch, logs=None):
            super().on_train_batch_end(batch, logs)
            live.append([w.numpy().copy() for w in self.model.trainable_weights])
    monkeypatch.setattr(callbacks, "NaNGuard", Recorder)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (32, 32, 32)).astype(np.uint8)
    labels = np.arange(32) % 2
    ds = make_dataset(images, labels, lambda x: x / 255.0, batch_size=8)
    keras.utils.set_random_seed(0)
    model = build_model(ModelConfig(backbone="cxr-small", weights="none"), 32)
    m = 0.9
    cfg = TrainConfig(verbose=0, ema_momentum=m).with_epochs(3, 0)
    history = train_two_stage(model, ds, ds, cfg, tmp_path, finetune_from=None)
    steps = len(live) // 3
    avg = [w.copy() for w in live[0]]
    by_epoch = []
    for t, weights in enumerate(live):
        if t:
            avg = [m * a + (1 - m) * w for a, w in zip(avg, weights)]
        if (t + 1) % steps == 0:
            by_epoch.append(avg)
    best = int(np.argmin(history["stage1"]["val_loss"]))
    kept = [w.numpy() for w in model.trainable_weights]
    for k, e, w in zip(kept, by_epoch[best], live[(best + 1) * steps - 1]):
        np.testing.assert_allclose(k, e, atol=1e-5)
    assert any(not np.allclose(k, w, atol=1e-4) for k, w in zip(kept, live[(best + 1) * steps - 1]))


def test_planned_cosine_equals_keras_cosine_decay_until_replanned():
    """Unplanned, the movable schedule is Keras's own CosineDecay with warm-up, step for step; after ``plan(n)``
    it is the same curve squeezed to end at step n (0 there and after)."""
    import keras

    from xai_cxr.models.schedule import PlannedCosine
    ours = PlannedCosine(1e-3, 10, 200)
    keras_ = keras.optimizers.schedules.CosineDecay(0.0, 190, warmup_target=1e-3, warmup_steps=10)
    steps = [0, 3, 10, 11, 57, 120, 199, 200, 250]
    np.testing.assert_allclose([float(ours(s)) for s in steps], [float(keras_(s)) for s in steps], atol=1e-9)
    ours.plan(110)
    squeezed = keras.optimizers.schedules.CosineDecay(0.0, 100, warmup_target=1e-3, warmup_steps=10)
    np.testing.assert_allclose([float(ours(s)) for s in steps], [float(squeezed(s)) for s in steps], atol=1e-9)
    assert float(ours(110)) == 0.0


@pytest.mark.parametrize("done, longest, remaining, expected", [
    (1, 10.0, 25.0, 3),       # two more 10-s epochs fit in 25 s
    (1, 10.0, 5.0, 1),        # none fits: stop now
    (1, 10.0, 1e6, 20),       # never more than planned
    (4, 0.0, 0.0, 20),        # no timing yet: the plan stands
])
def test_plan_epochs_counts_the_epochs_that_fit(done, longest, remaining, expected):
    from xai_cxr.models.schedule import plan_epochs
    assert plan_epochs(done, longest, remaining, 20) == expected


def test_budget_replans_the_cosine_so_the_last_epoch_run_gets_the_floor_and_keep_last_keeps_it(tmp_path, monkeypatch):
    """A slow machine on a fake clock: epochs of 10 s, a 35-s budget, 20 planned cosine epochs. After epoch 1 the
    planner sees 25 s left → 3 epochs in all; the schedule's end moves to epoch 3, training stops there, the rate of
    the last step is 4% of the peak (not the ~0.9·peak of epoch 3 of 20), and ``keep="last"`` keeps it."""
    import itertools

    from xai_cxr.config import TrainConfig
    from xai_cxr.data import make_dataset
    from xai_cxr.models import callbacks
    from xai_cxr.models.train import train_two_stage
    ticks = itertools.chain([0.0], itertools.chain.from_iterable((10.0 * k, 10.0 * (k + 1)) for k in range(100)))
    monkeypatch.setattr(callbacks, "now", lambda: next(ticks))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (16, 32, 32)).astype(np.uint8)
    ds = make_dataset(images, np.arange(16) % 2, lambda x: x / 255.0, batch_size=4)       # 4 steps per epoch
    model = build_model(ModelConfig(backbone="cxr-small", weights="none"), 32)
    cfg = TrainConfig(verbose=0, schedule="cosine", keep="last", budget_minutes=35 / 60).with_epochs(20, 0)
    history = train_two_stage(model, ds, ds, cfg, tmp_path, finetune_from=None)
    assert len(history["stage1"]["loss"]) == 3
    schedule = model.optimizer._learning_rate
    assert schedule.planned_steps == 3 * 4
    last_step_rate = float(schedule(3 * 4 - 1))                         # step 11: 7 of 8 decay steps done
    np.testing.assert_allclose(last_step_rate, 0.5 * (1 + np.cos(np.pi * 7 / 8)) * schedule.peak, rtol=1e-5)
    assert last_step_rate < 0.05 * schedule.peak and float(schedule(3 * 4)) == 0.0
    unplanned = 0.5 * (1 + np.cos(np.pi * (3 * 4 - 1 - 4) / (20 * 4 - 4))) * schedule.peak
    assert unplanned > 0.9 * schedule.peak                              # what a cut schedule would have kept
    kept = build_model(ModelConfig(backbone="cxr-small", weights="none"), 32)
    kept.load_weights(tmp_path / "model.weights.h5")
    for a, b in zip(kept.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("epoch_s, expected", [(6.0, 6), (30.0, 6), (70.0, 6), (84.0, 5), (150.0, 2)])
def test_demo_recipe_keeps_its_epochs_on_ordinary_machines_and_ends_at_the_floor_on_slower_ones(epoch_s, expected,
                                                                                                 monkeypatch):
    """The demo's recipe on a fake clock: its 6 cosine epochs of ~6 s on the reference CPU all run on a machine 5×
    or even 10× slower; slower still, the 7-minute budget re-plans the schedule so the last epoch run ends at the
    floor of the cosine."""
    import types

    from xai_cxr.models import callbacks
    from xai_cxr.models.schedule import BudgetPlanner
    from xai_cxr.models.train import learning_rate
    from xai_cxr.recipes import load_recipe
    _, _, train, _ = load_recipe("demo-phantoms")
    steps = 19                                                     # 300 phantoms in batches of 16
    schedule = learning_rate(train.stage1, train, steps)
    clock = [0.0]
    monkeypatch.setattr(callbacks, "now", lambda: clock[0])
    planner = BudgetPlanner(60 * train.budget_minutes, schedule, steps, train.stage1.epochs)
    planner.set_model(types.SimpleNamespace(stop_training=False))
    ran = 0
    while ran < train.stage1.epochs and not planner.model.stop_training:
        planner.on_epoch_begin(ran)
        clock[0] += epoch_s
        planner.on_epoch_end(ran)
        ran += 1
    assert ran == expected
    assert float(schedule(ran * steps)) == 0.0 and float(schedule(ran * steps - 1)) > 0.0


def test_the_card_stores_the_output_activation_and_reads_older_cards_by_their_task(tmp_path):
    import json

    from xai_cxr.config import CamConfig, DataConfig, TrainConfig
    from xai_cxr.models import ModelCard
    from xai_cxr.pipeline.fit import save_description
    card = save_description(tmp_path, DataConfig(task="multilabel", class_names=("A", "B", "C")),
                            ModelConfig(backbone="cxr-small", weights="none", num_classes=3), TrainConfig(),
                            CamConfig())
    assert ModelCard.load(tmp_path).activation == card.activation == "sigmoid"
    for task, expected in (("multilabel", "sigmoid"), ("binary", "softmax"), ("subtype", "softmax")):
        raw = json.loads((tmp_path / "model_config.json").read_text())
        raw.pop("activation", None)
        raw["task"] = task
        (tmp_path / "model_config.json").write_text(json.dumps(raw))       # as a card of an earlier version
        assert ModelCard.load(tmp_path).output_activation == expected
