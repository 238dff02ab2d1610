"""The task registry (declared once, read back from the card) and the shared explanation targets."""
import numpy as np
import pytest
from conftest import build_tiny

from xai_cxr.tasks import TASKS, get_task

P = np.array([[0.70, 0.30], [0.60, 0.40], [0.20, 0.80]])


def test_binary_decision_thresholds_the_second_class_probability():
    binary = get_task("binary")
    assert binary.positive_index(("NORMAL", "PNEUMONIA")) == 1
    assert binary.decide(P, 0.5).tolist() == [0, 0, 1]
    assert binary.decide(P, 0.35).tolist() == [0, 1, 1]           # a lower threshold calls the second film positive


def test_subtype_decides_by_argmax_and_multilabel_per_label():
    p3 = np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
    assert get_task("subtype").positive_index(("NORMAL", "BACTERIA", "VIRUS")) is None
    assert get_task("subtype").decide(p3).tolist() == [1, 0]
    assert get_task("multilabel").decide(p3, 0.25).tolist() == [[0, 1, 1], [1, 0, 1]]
    assert get_task("multilabel").positive_index(("A", "B")) is None


def test_each_task_declares_its_head_and_loss():
    import keras

    from xai_cxr.config import TrainConfig
    # every task's loss fits its output layer: softmax → categorical cross-entropy, sigmoid → per-label focal loss
    loss_for = {"softmax": keras.losses.CategoricalCrossentropy, "sigmoid": keras.losses.BinaryFocalCrossentropy}
    for name, task in TASKS.items():
        assert isinstance(task.objective()(TrainConfig())[0], loss_for[task.activation]), name
    assert (TASKS["binary"].activation, TASKS["multilabel"].activation) == ("softmax", "sigmoid")
    loss = get_task("binary").objective()(TrainConfig(label_smoothing=0.1))[0]
    assert isinstance(loss, keras.losses.CategoricalCrossentropy) and loss.get_config()["label_smoothing"] == 0.1
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        get_task("nope")


def test_multilabel_objective_follows_the_loss_setting_with_its_weights():
    """focal: Keras's binary focal loss with the configured gamma/alpha; bce: the per-label weighted BCE with the
    positive weights training_weights computed (negatives / positives), checked against numpy."""
    from xai_cxr.config import TrainConfig
    task = get_task("multilabel")
    labels = np.array([[1, 0], [0, 0], [1, 1], [0, 0]], np.float32)
    weights = task.training_weights(labels, 2)
    np.testing.assert_allclose(weights["pos_weight"], [1.0, 3.0])             # 2/2 and 3/1
    focal = task.objective(**weights)(TrainConfig(focal_gamma=1.5, focal_alpha=0.4))[0].get_config()
    assert (focal["gamma"], focal["alpha"], focal["apply_class_balancing"]) == (1.5, 0.4, True)
    bce = task.objective(**weights)(TrainConfig(multilabel_loss="bce"))[0]
    p = np.array([[0.8, 0.3], [0.4, 0.6], [0.9, 0.2], [0.1, 0.1]], np.float32)
    w = np.array([1.0, 3.0])
    expected = -(w * labels * np.log(p) + (1 - labels) * np.log(1 - p)).mean(-1)
    np.testing.assert_allclose(np.asarray(bce(labels, p)), expected, rtol=1e-5)
    assert "class_weight" not in weights and get_task("binary").training_weights(np.array([0, 0, 0, 1]), 2) == {
        "class_weight": {0: 4 / 6, 1: 2.0}}


def test_binary_metrics_use_the_task_threshold():
    y = np.array([0, 1, 1])
    at_half = get_task("binary").metrics(y, P, ("NORMAL", "PNEUMONIA"), 0.5, n_boot=20)
    at_low = get_task("binary").metrics(y, P, ("NORMAL", "PNEUMONIA"), 0.35, n_boot=20)
    assert at_half["confusion_matrix"] == [[1, 0], [1, 1]] and at_low["confusion_matrix"] == [[1, 0], [0, 2]]


def test_multilabel_scan_without_labels_csv_names_the_flag(tmp_path):
    with pytest.raises(ValueError, match="--labels-csv"):
        get_task("multilabel").scan(tmp_path)


def test_mask_layout_under_the_binary_task_points_to_task_mask(tmp_path):
    import cv2
    for k in range(5):
        case = tmp_path / f"case{k}"
        case.mkdir()
        cv2.imwrite(str(case / "a.png"), np.zeros((8, 8), np.uint8))
        cv2.imwrite(str(case / "a_mask.png"), np.full((8, 8), 255 * (k % 2), np.uint8))
    from xai_cxr.data import DatasetLayoutError
    with pytest.raises(DatasetLayoutError, match="--task mask"):
        get_task("binary").scan(tmp_path)
    df = get_task("mask").scan(tmp_path)
    assert df.label.tolist() == ["NO_LESION", "LESION"] * 2 + ["NO_LESION"] and set(df.split) == {"train", "test"}


def test_predictor_label_follows_the_card_threshold():
    """The same probabilities give NORMAL at the card's 0.5 and PNEUMONIA at a 0.01 threshold."""
    import keras

    from xai_cxr.models import ModelCard
    from xai_cxr.serve.inference import Predictor
    inp = keras.Input((8, 8, 1))
    out = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(inp))
    model = keras.Model(inp, out)
    model.set_weights([np.zeros((64, 2), np.float32), np.array([2.0, 0.0], np.float32)])   # p(PNEUMONIA) = 0.12
    card = ModelCard("cxr-small", 8, ("NORMAL", "PNEUMONIA"))
    pred = Predictor(model, card, mc_passes=1)
    pred._inputs = lambda g: np.asarray(g, np.float32)[..., None] / 255.0
    gray = np.zeros((1, 8, 8), np.uint8)
    assert pred.predict(gray, mc=False)[0].label == "NORMAL"
    low = pred.predict(gray, mc=False, threshold=0.01)[0]
    assert low.label == "PNEUMONIA" and low.confidence == pytest.approx(1 / (1 + np.e ** 2), rel=1e-5)


def _linear_softmax(seed=0, size=4):
    import keras
    inp = keras.Input((size, size, 1))
    out = keras.layers.Dense(3, activation="softmax", name="predictions")(keras.layers.Flatten()(inp))
    model = keras.Model(inp, out)
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 1, w.shape).astype("float32") for w in model.get_weights()])
    return model


def test_probability_target_gradient_matches_numpy_softmax_derivative():
    """∂p_c/∂x = p_c (W_c − Σ_k p_k W_k) for x → softmax(W x + b), computed by hand; the logit target's
    gradient is W_c."""
    from xai_cxr.explain.attribution import SmoothGrad
    from xai_cxr.explain.targets import ClassProbability
    model = _linear_softmax()
    W, b = (v.numpy() for v in model.get_layer("predictions").weights)
    x = np.random.default_rng(1).normal(size=(2, 4, 4, 1)).astype("float32")
    t = np.array([2, 0], np.int32)
    z = x.reshape(2, -1) @ W + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    expected = np.stack([p[i, t[i]] * (W[:, t[i]] - W @ p[i]) for i in range(2)]).reshape(x.shape)
    grads, scores = SmoothGrad(model, target=ClassProbability()).gradients(x, t)
    np.testing.assert_allclose(scores, p[[0, 1], t], rtol=1e-5)
    np.testing.assert_allclose(grads, expected, rtol=1e-4, atol=1e-6)
    logit_grads, _ = SmoothGrad(model).gradients(x, t)
    np.testing.assert_allclose(logit_grads, W[:, t].T.reshape(x.shape), rtol=1e-5)


def test_cam_and_attribution_default_to_the_same_predicted_class():
    """No targets given: Grad-CAM and SmoothGrad explain the class the model predicts (one rule, targets.py)."""
    from xai_cxr.explain.attribution import SmoothGrad
    from xai_cxr.explain.cam import GradCAM
    model = build_tiny("gap", seed=7, size=12)                  # a model that calls 6 of these films 0 and 10 of them 1
    x = np.random.default_rng(2).normal(size=(16, 12, 12, 1)).astype("float32")
    pred = model.predict(x, verbose=0).argmax(1)
    assert set(pred.tolist()) == {0, 1}            # both classes predicted: a fixed default class would show
    cam = GradCAM(model)
    np.testing.assert_allclose(cam(x), cam(x, targets=pred), atol=1e-6)
    sg = SmoothGrad(model, n=2, noise=0.0)
    np.testing.assert_allclose(sg(x), sg(x, targets=pred), atol=1e-6)
