"""ImageNet weights as Keras gets them: the cached file when present, else a download with the published hash
checked; offline or on a bad hash a clear error with the right URL, in seconds, before any image is decoded.
The network is a local HTTP server on 127.0.0.1 serving a stand-in file in the exact Keras format."""
import ast
import hashlib
import http.server
import importlib
import inspect
import re
import threading
import time
from functools import partial
from pathlib import Path

import h5py
import numpy as np
import pytest

from xai_cxr.config import ModelConfig
from xai_cxr.models import BACKBONES, WeightsNotFoundError, build_model, fetch_imagenet

IMAGENET = sorted(n for n, b in BACKBONES.items() if b.imagenet_file)

VGG19_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
KERAS_MODULE = {"vgg19": "vgg19", "vgg16": "vgg16", "resnet50": "resnet", "densenet121": "densenet",
                "densenet169": "densenet", "mobilenetv2": "mobilenet_v2", "inceptionv3": "inception_v3",
                "xception": "xception", "efficientnetb0": "efficientnet"}


def _string_constants(module) -> set[str]:
    tree = ast.parse(inspect.getsource(module))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            out.add(node.value)
    return out


def test_every_imagenet_backbone_is_checked_against_keras():
    assert IMAGENET == sorted(KERAS_MODULE)


@pytest.mark.parametrize("name", IMAGENET)
def test_download_url_and_hash_are_the_ones_keras_itself_uses(name):
    """Each entry's URL and md5 are read back from the installed keras.applications source."""
    consts = _string_constants(importlib.import_module(f"keras.src.applications.{KERAS_MODULE[name]}"))
    url, md5 = BACKBONES[name].imagenet_url, BACKBONES[name].imagenet_md5
    folder = url.rsplit("/", 1)[0] + "/"
    assert url.endswith(BACKBONES[name].imagenet_file)
    assert url in consts or folder in consts, f"{url} not among keras.applications.{KERAS_MODULE[name]}'s URLs"
    if md5 is not None:
        assert md5 in consts
    if name == "mobilenetv2":   # the Keras source itself passes no file_hash for MobileNetV2
        assert not any(re.fullmatch(r"[0-9a-f]{32}", c) for c in consts)


def test_urls_differ_per_backbone_family():
    assert BACKBONES["resnet50"].imagenet_url.startswith(
        "https://storage.googleapis.com/tensorflow/keras-applications/resnet/")
    assert "vgg19" not in BACKBONES["densenet121"].imagenet_url


def test_cached_standin_file_is_the_one_vgg19_loads(standin_keras_home, monkeypatch):
    home, path, kernel = standin_keras_home
    monkeypatch.setenv("KERAS_HOME", str(home))
    assert fetch_imagenet("vgg19", allow_download=False) == str(path)
    model = build_model(ModelConfig(), 32)                         # defaults: vgg19 + imagenet
    np.testing.assert_array_equal(model.get_layer("block1_conv1").kernel.numpy(), kernel)
    with h5py.File(path) as f:                                     # the Keras "notop" layout
        assert "block5_conv4" in [n.decode() if isinstance(n, bytes) else n for n in f.attrs["layer_names"]]


@pytest.fixture
def server(standin_keras_home):
    """A local HTTP server on 127.0.0.1 serving the stand-in file; yields its base URL."""
    _, path, _ = standin_keras_home
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(path.parent))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def test_download_with_good_hash_lands_in_keras_cache(server, standin_keras_home, tmp_path, monkeypatch):
    _, standin, _ = standin_keras_home
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    md5 = hashlib.md5(standin.read_bytes()).hexdigest()
    got = fetch_imagenet("vgg19", allow_download=True, origin=server + VGG19_FILE, file_hash=md5)
    assert Path(got) == tmp_path / "models" / VGG19_FILE
    assert hashlib.md5(Path(got).read_bytes()).hexdigest() == md5
    assert fetch_imagenet("vgg19", allow_download=False) == got    # the next run uses the cache, no network


def test_download_with_wrong_hash_is_an_error_and_keeps_no_file(server, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(WeightsNotFoundError, match="hash") as info:   # the stand-in is not Keras's real file
        fetch_imagenet("vgg19", allow_download=True, origin=server + VGG19_FILE)
    assert server + VGG19_FILE in str(info.value)
    assert not (tmp_path / "models" / VGG19_FILE).exists()
    assert not list((tmp_path / "models").glob("*"))


def test_closed_port_fails_fast_with_url_and_fix(tmp_path, monkeypatch):
    import socket
    with socket.socket() as s:                     # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    origin = f"http://127.0.0.1:{port}/{VGG19_FILE}"
    t0 = time.perf_counter()
    with pytest.raises(WeightsNotFoundError) as info:
        fetch_imagenet("vgg19", allow_download=True, origin=origin, timeout=3)
    assert time.perf_counter() - t0 < 5, "a refused connection must not hang"
    msg = str(info.value)
    assert origin in msg and str(tmp_path / "models" / VGG19_FILE) in msg and "--backbone cxr-small" in msg
    assert not (tmp_path / "models" / VGG19_FILE).exists()


@pytest.mark.parametrize("name", ["vgg19", "resnet50", "densenet169", "efficientnetb0"])
def test_no_download_error_names_this_backbones_file_and_url(name, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(WeightsNotFoundError) as info:
        fetch_imagenet(name, allow_download=False)
    msg = str(info.value)
    assert BACKBONES[name].imagenet_url in msg and BACKBONES[name].imagenet_file in msg
    assert "downloads are switched off" in msg


def test_environment_variable_forbids_download(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setenv("XAI_CXR_NO_DOWNLOAD", "1")
    with pytest.raises(WeightsNotFoundError, match="XAI_CXR_NO_DOWNLOAD"):
        fetch_imagenet("vgg19")


def test_train_stops_on_missing_weights_before_decoding_any_image(tmp_path, monkeypatch, capsys):
    from xai_cxr import cli
    from xai_cxr.data.phantom import PhantomConfig, write_phantom_dataset
    from xai_cxr.pipeline import prepare as pipeline
    root = write_phantom_dataset(tmp_path / "chest_xray", PhantomConfig(image_size=32, n_train=4, n_test=2))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty_keras"))

    def no_decoding(*a, **k):
        raise AssertionError("an image was decoded before the weights were checked")
    monkeypatch.setattr(pipeline, "load_images", no_decoding)
    t0 = time.perf_counter()
    assert cli.main(["train", "--data-dir", str(root), "--no-download", "--device", "cpu"]) == 2
    assert time.perf_counter() - t0 < 10
    err = capsys.readouterr().err
    assert BACKBONES["vgg19"].imagenet_url in err and "--backbone cxr-small" in err


@pytest.mark.slow
def test_train_with_defaults_runs_the_reference_path_on_standin_weights(standin_keras_home, tmp_path, monkeypatch,
                                                                        capsys):
    """`xai-cxr train` with no model flags = VGG19 + ImageNet: stage 1 trains the head only, stage 2 unfreezes
    block5_conv1 on with clipnorm 1.0, Grad-CAM on block5_conv3. Trainable counts checked against VGG19's
    layer shapes worked out by hand."""
    import json

    from xai_cxr import cli
    from xai_cxr.data.phantom import PhantomConfig, write_phantom_dataset
    home, _, kernel = standin_keras_home
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    root = write_phantom_dataset(tmp_path / "chest_xray", PhantomConfig(image_size=32, n_train=6, n_test=4))
    assert cli.main(["train", "--data-dir", str(root), "--image-size", "32", "--epochs1", "1", "--epochs2", "1",
                     "--batch-size", "4", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    head = (512 * 256 + 256) + (256 * 2 + 2)                     # Dense 256 on 512 GAP features + softmax layer
    block5 = 4 * (3 * 3 * 512 * 512 + 512)                       # block5_conv1..conv4
    assert f"[stage1] lr=0.0003 clipnorm=None epochs<=1 trainable params={head:,}" in out
    assert f"[stage2] lr=1e-05 clipnorm=1.0 epochs<=1 trainable params={head + block5:,}" in out
    card = json.loads((tmp_path / "saved_weights" / "model_config.json").read_text())
    assert card["backbone"] == "vgg19" and card["target_layer"] == "block5_conv3"
    run = json.loads((tmp_path / "saved_weights" / "run_config.json").read_text())
    assert run["TrainConfig"]["stage2"]["unfreeze_from"] == "block5_conv1"
    assert run["ModelConfig"]["weights"] == "imagenet"
    history = json.loads((tmp_path / "saved_weights" / "history.json").read_text())
    assert set(history) == {"stage1", "stage2"}
    # stage 1 left block1 (frozen in both stages) exactly as the stand-in file had it
    from xai_cxr.models import load_trained_model
    model, _ = load_trained_model(tmp_path / "saved_weights")
    np.testing.assert_array_equal(model.get_layer("block1_conv1").kernel.numpy(), kernel)
    assert (tmp_path / "sample_results" / "sample_results.png").is_file()


def test_demo_on_phantoms_uses_compact_cnn_without_trying_the_network(tmp_path, monkeypatch):
    from xai_cxr.models import imagenet as models
    from xai_cxr.recipes import demo_configs
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(models, "fetch_imagenet", lambda *a, **k: pytest.fail("the demo tried to fetch weights"))
    _, model, _, note = demo_configs(None)
    assert (model.backbone, model.weights) == ("cxr-small", "none")
    assert "does not download" in note and str(tmp_path / "keras" / "models") in note


def test_demo_on_phantoms_uses_vgg19_when_its_file_is_cached(standin_keras_home, tmp_path, monkeypatch):
    from xai_cxr.recipes import demo_configs
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KERAS_HOME", str(standin_keras_home[0]))
    _, model, _, note = demo_configs(None)
    assert (model.backbone, model.weights) == ("vgg19", "imagenet") and "cxr-small" not in note


def test_demo_on_real_data_offline_without_the_file_trains_the_from_scratch_recipe(tmp_path, monkeypatch):
    """Kaggle layout, no VGG19 file, downloads off: the demo does not stop, it runs the measured cxr-res recipe;
    with downloads allowed it keeps VGG19 (fetched like Keras)."""
    from xai_cxr.data.phantom import PhantomConfig, write_phantom_dataset
    from xai_cxr.recipes import demo_configs
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    root = write_phantom_dataset(tmp_path / "chest_xray", PhantomConfig(image_size=32, n_train=2, n_test=2))
    data, model, train, note = demo_configs(root, allow_download=False)
    assert (model.backbone, model.weights) == ("cxr-res", "none") and "from scratch" in note
    assert (data.image_size, data.clahe, data.validation, data.augment.aspect) == (160, True, "holdout:0.1", 0.3)
    assert (train.optimizer, train.schedule, train.budget_minutes, train.stage1.learning_rate, train.keep,
            train.operating_point) == ("adamw", "cosine", 30.0, 1e-3, "last", None)
    _, model, _, _ = demo_configs(root, allow_download=True)
    assert model.backbone == "vgg19"


def test_cli_flags_left_unset_keep_the_recipe_and_given_flags_override_it(tmp_path):
    from xai_cxr.cli import build_parser
    from xai_cxr.commands.configs import configs_from_args
    from xai_cxr.recipes import load_recipe
    data, model, train, _ = load_recipe("cxr-res", tmp_path)
    args = build_parser().parse_args(["train", "--data-dir", str(tmp_path)])
    d, _, t, _ = configs_from_args(args, data, model, train)
    assert (d.clahe, d.validation, d.augment is not None, t.optimizer, t.schedule) == \
        (True, "holdout:0.1", True, "adamw", "cosine")
    args = build_parser().parse_args(["train", "--data-dir", str(tmp_path), "--validation", "test",
                                      "--optimizer", "adam", "--schedule", "plateau"])
    d, _, t, _ = configs_from_args(args, data, model, train)
    assert (d.validation, t.optimizer, t.schedule) == ("test", "adam", "plateau")
    args = build_parser().parse_args(["train", "--data-dir", str(tmp_path), "--augment", "strong", "--ema", "0.99"])
    d, _, t, _ = configs_from_args(args, data, model, train)
    assert (d.augment.gamma, d.augment.contrast, t.ema_momentum) == (0.4, 0.3, 0.99)
    args = build_parser().parse_args(["train", "--data-dir", str(tmp_path), "--augment", "--clahe"])
    d, _, t, _ = configs_from_args(args, data, model, train)
    assert (d.augment.gamma, d.augment.contrast, d.clahe, t.ema_momentum) == (0.0, 0.1, True, None)
