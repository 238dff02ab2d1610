"""The Streamlit app, driven by Streamlit's AppTest (upload, predict, sliders, downloads, bad input) and
loaded in a real headless Chromium on localhost."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

import xai_cxr  # noqa: E402

APP = str(Path(xai_cxr.__file__).parent / "serve" / "app.py")


def _xray_png(seed=0, size=64, lesions=1):
    from xai_cxr.data.phantom import make_phantom
    img = make_phantom(np.random.default_rng(seed), size, n_lesions=lesions)[0]
    return img, cv2.imencode(".png", img)[1].tobytes()


@pytest.fixture
def app_env(phantom_weights, monkeypatch):
    monkeypatch.setenv("XAI_CXR_WEIGHTS_DIR", str(phantom_weights))
    monkeypatch.setenv("XAI_CXR_CACHE", str(phantom_weights.parents[1]))    # the phantom fallback is cached
    from streamlit.runtime.caching import cache_data, cache_resource
    cache_resource.clear()
    cache_data.clear()
    return phantom_weights


def _metric(at, label):
    return next(m.value for m in at.metric if m.label == label)


def test_upload_predicts_like_the_predictor_and_the_threshold_slider_moves_the_decision(app_env):
    from xai_cxr.serve.inference import Predictor
    predictor = Predictor.from_weights_dir(app_env)
    img, png = _xray_png()
    p_pos = predictor.predict(img[None], mc=False)[0].probabilities["PNEUMONIA"]

    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception and not at.info                      # trained weights: no phantom notice
    at.file_uploader(key="uploads").upload("chest.png", png, "image/png").run()
    assert not at.exception and not at.error
    assert _metric(at, "Prediction") == ("PNEUMONIA" if p_pos >= 0.5 else "NORMAL")
    assert _metric(at, "Calibrated confidence") == f"{max(p_pos, 1 - p_pos):.1%}"

    at.slider(key="threshold").set_value(0.95).run()            # raise the bar: PNEUMONIA only if p ≥ 0.95
    assert _metric(at, "Prediction") == ("PNEUMONIA" if p_pos >= 0.95 else "NORMAL")
    at.slider(key="threshold").set_value(0.05).run()
    assert _metric(at, "Prediction") == ("PNEUMONIA" if p_pos >= 0.05 else "NORMAL")
    at.slider(key="fraction").set_value(0.2).run()
    assert any("top 20%" in c.value for c in at.caption)
    labels = [b.label for b in at.get("download_button")]
    assert labels == ["Download overlay PNG", "Download report (HTML)"]


def test_bad_uploads_are_reported_and_the_other_files_still_served(app_env, tmp_path):
    from test_bad_input import _png_header_only
    _png_header_only(tmp_path / "bomb.png", 20000, 20000)
    _, png = _xray_png(1)
    at = AppTest.from_file(APP, default_timeout=120).run()
    uploader = at.file_uploader(key="uploads")
    uploader.upload("broken.png", b"\x89PNG not really", "image/png").upload("fine.png", png, "image/png")
    uploader.upload("bomb.png", (tmp_path / "bomb.png").read_bytes(), "image/png")
    at.run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 2 and "broken.png" in errors[0] and "bomb.png" in errors[1] and "pixel" in errors[1]
    assert [s.value for s in at.subheader] == ["fine.png"] and len(at.metric) == 3


def test_without_trained_weights_the_page_says_it_runs_the_phantom_model(app_env, tmp_path, monkeypatch):
    monkeypatch.setenv("XAI_CXR_WEIGHTS_DIR", str(tmp_path / "empty"))
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception and "No trained weights" in at.info[0].value and "phantom model" in at.info[0].value


def test_sample_picker_and_several_explainers_side_by_side(app_env):
    import importlib.util

    from xai_cxr.explain.registry import EXPLAINERS
    from xai_cxr.serve.inference import Predictor
    spec = importlib.util.spec_from_file_location("xai_app", APP)           # the page's own sample films
    page = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(page)
    predictor = Predictor.from_weights_dir(app_env)
    data = page.samples(predictor.card.image_size)["phantom_1_lesion_2.png"]
    expected = predictor.predict(predictor.load(data)[None], mc=False)[0]
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert at.multiselect[0].options == list(EXPLAINERS)                  # the page offers the registry, all of it
    at.selectbox(key="sample").set_value("phantom_1_lesion_2.png").run()
    at.multiselect[0].set_value(["gradcam", "hirescam", "integrated_gradients"]).run()
    assert not at.exception and [s.value for s in at.subheader] == ["phantom_1_lesion_2.png"]
    if expected.out_of_distribution:          # the detector is deterministic: a flagged film is referred, not answered
        assert any("Referred to a reader" in e.value for e in at.error)
    else:
        assert _metric(at, "Prediction") == expected.label


def test_weights_of_another_architecture_fall_back_to_the_phantom_model_with_a_message(app_env, tmp_path, monkeypatch):
    bad = tmp_path / "bad_weights"
    shutil.copytree(app_env, bad)
    cfg = json.loads((bad / "model_config.json").read_text())
    cfg["dense_units"] = 32                                      # the saved head has 256 units
    (bad / "model_config.json").write_text(json.dumps(cfg))
    monkeypatch.setenv("XAI_CXR_WEIGHTS_DIR", str(bad))
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception
    assert "does not fit" in at.info[0].value and "phantom model" in at.info[0].value


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_app_renders_in_headless_chromium_and_shows_a_prediction(app_env, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not chromium:
        pytest.skip("no Chromium on this machine (.ci/run installs Debian's chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "xai_cxr.cli", "app", "--port", str(port),
                             "--weights-dir", str(app_env)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        for _ in range(120):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.5)
        _, png = _xray_png(2)
        (tmp_path / "upload.png").write_bytes(png)
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"])
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}", timeout=60_000)
            page.get_by_text("Research use only").first.wait_for(timeout=90_000)
            page.locator("input[type=file]").set_input_files(str(tmp_path / "upload.png"))
            page.get_by_text("Calibrated confidence").first.wait_for(timeout=90_000)
            page.get_by_text("Download report (HTML)").first.wait_for(timeout=30_000)
            shot = tmp_path / "app.png"
            page.screenshot(path=str(shot), full_page=True)
            browser.close()
        img = cv2.imread(str(shot))
        assert img is not None and img.shape[1] >= 1200 and img.std() > 5
    finally:
        os.killpg(proc.pid, signal.SIGTERM)           # `xai-cxr app` and the streamlit server it started
        proc.wait(10)


def test_an_operating_point_in_the_card_is_the_sliders_default_and_decides(phantom_weights, tmp_path, monkeypatch):
    """A card whose threshold came from --operating-point (here 0.97, above the old slider's 0.95 end) opens with
    that threshold and decides by it."""
    from dataclasses import replace

    from streamlit.runtime.caching import cache_data, cache_resource

    from xai_cxr.models import ModelCard
    from xai_cxr.serve.inference import Predictor
    weights = tmp_path / "weights"
    shutil.copytree(phantom_weights, weights)
    replace(ModelCard.load(weights), threshold=0.97).save(weights)
    monkeypatch.setenv("XAI_CXR_WEIGHTS_DIR", str(weights))
    cache_resource.clear()
    cache_data.clear()
    img, png = _xray_png(seed=3)
    p_pos = Predictor.from_weights_dir(weights).predict(img[None], mc=False)[0].probabilities["PNEUMONIA"]
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception and at.slider(key="threshold").value == pytest.approx(0.97)
    at.file_uploader(key="uploads").upload("chest.png", png, "image/png").run()
    assert not at.exception
    assert _metric(at, "Prediction") == ("PNEUMONIA" if p_pos >= 0.97 else "NORMAL")


def test_ten_films_or_more_get_the_folder_check_in_words_and_a_foreign_folder_refers_every_film(app_env,
                                                                                               monkeypatch):
    """The app's wiring of the folder shift test (its statistics: tests/test_shift.py): with the test saying
    "foreign", the verdict leads in words and every film is referred for its folder; the error level is stated."""
    from xai_cxr.models.shift import ShiftTest
    from xai_cxr.serve.inference import Predictor
    foreign = ShiftTest(0.97, (0.95, 0.99), 1 / 1001, 500, 12, 1000)
    monkeypatch.setattr(Predictor, "folder_test", lambda self, grays, label=None: (foreign, np.zeros(len(grays))))
    at = AppTest.from_file(APP, default_timeout=180).run()
    assert any("When it answers:" in c.value for c in at.caption)
    uploader = at.file_uploader(key="uploads")
    for i in range(12):
        uploader.upload(f"film{i}.png", _xray_png(100 + i)[1], "image/png")
    at.run()
    assert not at.exception
    assert at.error[0].value.startswith("**Folder check:** these 12 films are not like the training films")
    films = [e.value for e in at.error[1:]]
    assert len(films) == 12 and all(f.startswith("**Referred to a reader") and "folder shift test" in f for f in films)
