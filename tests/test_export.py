"""Export to SavedModel and ONNX: round trips against the Keras model's calibrated probabilities for cxr-small,
cxr-res and VGG19 (random weights), and refusals (no card, a changed file, a mismatched export, a missing package)."""
import json
import shutil

import numpy as np
import pytest

from xai_cxr.config import ModelConfig
from xai_cxr.models import ModelCard, build_model


def _saved(folder, backbone, size=32, temperature=1.7, seed=0):
    """A model folder with random weights, its card and a fitted temperature."""
    import keras
    keras.utils.set_random_seed(seed)
    model = build_model(ModelConfig(backbone=backbone, weights="none"), size)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_weights(folder / "model.weights.h5")
    ModelCard(backbone, size, ("NORMAL", "PNEUMONIA"), clahe=True).save(folder)
    (folder / "calibration.json").write_text(json.dumps({"temperature": temperature}))
    return folder


def _films(n=6, size=32, seed=1):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size)).astype(np.uint8)


def _keras_calibrated(folder, films):
    """By hand: the Keras model on the films as the package prepares them, then softmax(log p / T)."""
    from xai_cxr.data import to_model_input
    from xai_cxr.models import BACKBONES, load_trained_model
    model, card = load_trained_model(folder)
    p = np.asarray(model(to_model_input(films, BACKBONES[card.backbone].preprocess), training=False), np.float64)
    t = json.loads((folder / "calibration.json").read_text())["temperature"]
    z = np.log(p) / t
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("backbone", ["cxr-small", "cxr-res", pytest.param("vgg19", marks=pytest.mark.slow)])
@pytest.mark.parametrize("fmt", ["savedmodel", "onnx"])
def test_export_round_trip_gives_the_keras_calibrated_probabilities(tmp_path, backbone, fmt):
    if fmt == "onnx":
        pytest.importorskip("tf2onnx")
        pytest.importorskip("onnxruntime")
    from xai_cxr.serve.export import PARITY_ATOL, check_export, export, run_export
    folder = _saved(tmp_path / "w", backbone)
    summary = export(folder, fmt, tmp_path / "out")
    films = _films()                                              # other films than the export's parity batch
    got = run_export(tmp_path / "out" / summary["file"], fmt, films)
    np.testing.assert_allclose(got, _keras_calibrated(folder, films), atol=PARITY_ATOL)
    assert summary["parity_max_abs_diff"] <= PARITY_ATOL and summary["temperature"] == 1.7
    assert check_export(tmp_path / "out")["sha256"] == summary["sha256"]
    assert ModelCard.load(tmp_path / "out") == ModelCard.load(folder)
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "uint8, shape batch×32×32" in readme and "CLAHE" in readme and "Research use only" in readme


def test_a_changed_export_file_is_refused(tmp_path):
    pytest.importorskip("onnxruntime")
    from xai_cxr.serve.export import ExportError, check_export, export
    export(_saved(tmp_path / "w", "cxr-small"), "onnx", tmp_path / "out")
    onnx_file = tmp_path / "out" / "model.onnx"
    data = bytearray(onnx_file.read_bytes())
    data[-10] ^= 0xFF
    onnx_file.write_bytes(bytes(data))
    with pytest.raises(ExportError, match="changed since it was exported"):
        check_export(tmp_path / "out")


def test_an_export_of_another_model_is_refused(tmp_path):
    """The file of model B under model A's export.json (its hash updated, as a careless copy would leave it):
    the parity batch says it is not the model the folder describes."""
    from xai_cxr.serve.export import ExportError, _sha256, check_export, export
    export(_saved(tmp_path / "a", "cxr-small", seed=0), "savedmodel", tmp_path / "out_a")
    export(_saved(tmp_path / "b", "cxr-small", seed=5), "savedmodel", tmp_path / "out_b")
    shutil.rmtree(tmp_path / "out_a" / "model")
    shutil.copytree(tmp_path / "out_b" / "model", tmp_path / "out_a" / "model")
    meta = json.loads((tmp_path / "out_a" / "export.json").read_text())
    meta["sha256"] = _sha256(tmp_path / "out_a" / "model")
    (tmp_path / "out_a" / "export.json").write_text(json.dumps(meta))
    with pytest.raises(ExportError, match="mismatched export"):
        check_export(tmp_path / "out_a")


def test_export_of_a_folder_without_a_card_names_the_missing_file(tmp_path):
    from xai_cxr.cli import main
    (tmp_path / "w").mkdir()
    assert main(["export", str(tmp_path / "w"), "--format", "savedmodel", "--out", str(tmp_path / "o")]) == 2


def test_onnx_export_without_tf2onnx_says_which_extra_to_install(tmp_path, monkeypatch):
    import sys

    from xai_cxr.serve.export import ExportError, export
    monkeypatch.setitem(sys.modules, "tf2onnx", None)
    with pytest.raises(ExportError, match=r"pip install 'xai-cxr\[export\]'"):
        export(_saved(tmp_path / "w", "cxr-small"), "onnx", tmp_path / "out")
