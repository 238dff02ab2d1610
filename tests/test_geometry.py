"""Input geometry (squash / crop / pad): exact pixels on hand-made images, the card round trip, and the card's
geometry reaching every entry point (app and report through Predictor.load, the HTTP API, explain, evaluate)."""
import json
import shutil
from dataclasses import replace

import cv2
import numpy as np
import pytest

from xai_cxr.data import fit_size


def _columns():
    """A 2×4 film (wide: aspect 2) whose columns are 10, 20, 30, 40."""
    return np.tile(np.array([10, 20, 30, 40], np.uint8), (2, 1))


def test_squash_averages_the_width_into_the_square():
    np.testing.assert_array_equal(fit_size(_columns(), 2, geometry="squash"), [[15, 35], [15, 35]])


def test_crop_keeps_the_centre_square():
    np.testing.assert_array_equal(fit_size(_columns(), 2, geometry="crop"), [[20, 30], [20, 30]])


def test_pad_letterboxes_the_whole_film_on_black():
    out = fit_size(_columns(), 4, geometry="pad")
    expected = np.zeros((4, 4), np.uint8)
    expected[1:3] = [10, 20, 30, 40]
    np.testing.assert_array_equal(out, expected)
    tall = fit_size(_columns().T.copy(), 4, geometry="pad")          # portrait: bars left and right
    np.testing.assert_array_equal(tall, expected.T)


def test_square_films_are_the_same_under_every_geometry():
    img = np.random.default_rng(0).integers(0, 255, (32, 32), np.uint8)
    out = [fit_size(img, 16, geometry=g) for g in ("squash", "crop", "pad")]
    np.testing.assert_array_equal(out[0], out[1])
    np.testing.assert_array_equal(out[0], out[2])


def test_unknown_geometry_is_a_clear_error():
    with pytest.raises(ValueError, match="choose from .*squash.*crop.*pad"):
        fit_size(_columns(), 2, geometry="stretch")


def test_the_card_keeps_the_geometry_and_old_cards_mean_squash(tmp_path):
    from xai_cxr.models import ModelCard
    card = ModelCard("cxr-small", 32, ("NORMAL", "PNEUMONIA"), geometry="pad")
    card.save(tmp_path)
    assert ModelCard.load(tmp_path) == card
    raw = json.loads((tmp_path / "model_config.json").read_text())
    del raw["geometry"]                                          # a card written before the field existed
    (tmp_path / "model_config.json").write_text(json.dumps(raw))
    assert ModelCard.load(tmp_path).geometry == "squash"


def test_training_saves_the_data_configs_geometry_in_the_card(tmp_path):
    from xai_cxr.config import DataConfig, ModelConfig, TrainConfig
    from xai_cxr.models import ModelCard
    from xai_cxr.pipeline import save_description
    save_description(tmp_path, DataConfig(geometry="crop"), ModelConfig(backbone="cxr-small"), TrainConfig())
    assert ModelCard.load(tmp_path).geometry == "crop"


# --- the card's geometry at every entry point: a padded model must never see a squashed film ---

@pytest.fixture(scope="module")
def padded_model(phantom_weights, tmp_path_factory):
    """The phantom model's folder with its card saying "pad", and a wide film (aspect 3) on which squash and
    pad give very different inputs."""
    from xai_cxr.models import ModelCard
    folder = tmp_path_factory.mktemp("padded") / "weights"
    shutil.copytree(phantom_weights, folder)
    card = ModelCard.load(folder)
    replace(card, geometry="pad").save(folder)
    from xai_cxr.data.phantom import make_phantom
    film = cv2.resize(make_phantom(np.random.default_rng(3), 64, n_lesions=1)[0], (192, 64))
    return folder, ModelCard.load(folder), film


def _png(img):
    return cv2.imencode(".png", img)[1].tobytes()


def _proba(folder, grays):
    from xai_cxr.serve.inference import Predictor
    return Predictor.from_weights_dir(folder).predict(grays, mc=False)


def test_predictor_load_used_by_app_report_and_api_applies_the_cards_geometry(padded_model):
    from xai_cxr.serve.inference import Predictor
    folder, card, film = padded_model
    gray = Predictor.from_weights_dir(folder).load(_png(film), "wide.png")
    np.testing.assert_array_equal(gray, fit_size(film, card.image_size, card.clahe, "pad"))
    assert gray[0].max() == 0 and gray[-1].max() == 0                # the letterbox bars


def test_http_api_predicts_on_the_padded_film(padded_model):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    from test_serve import _serve

    from xai_cxr.serve.api import create_app
    from xai_cxr.serve.inference import Predictor
    folder, card, film = padded_model
    predictor = Predictor.from_weights_dir(folder, mc_passes=1)
    url, stop = _serve(create_app(predictor))
    try:
        r = httpx.post(f"{url}/predict", files={"file": ("wide.png", _png(film), "image/png")}, timeout=60)
    finally:
        stop()
    assert r.status_code == 200, r.text
    padded = predictor.predict(fit_size(film, card.image_size, geometry="pad")[None], mc=False)[0]
    squashed = predictor.predict(fit_size(film, card.image_size, geometry="squash")[None], mc=False)[0]
    assert abs(padded.probabilities["PNEUMONIA"] - squashed.probabilities["PNEUMONIA"]) > 1e-3
    assert r.json()["probabilities"] == pytest.approx(padded.probabilities, abs=1e-5)


def test_explain_draws_its_overlay_on_the_padded_film(padded_model, tmp_path):
    from xai_cxr.cli import main
    folder, card, film = padded_model
    cv2.imwrite(str(tmp_path / "wide.png"), film)
    assert main(["explain", str(tmp_path / "wide.png"), "--weights-dir", str(folder), "--out",
                 str(tmp_path / "out")]) in (0, None)
    panel = cv2.imread(str(next((tmp_path / "out").glob("wide_*.png"))))       # BGR: overlay | jet
    bar = (card.image_size - round(64 * card.image_size / 192)) // 2
    left = panel[:bar, :card.image_size]
    assert left[..., 0].max() == 0 and left[..., 1].max() == 0          # black bars (red paint adds R only)


def test_evaluate_scores_the_padded_films(padded_model, tmp_path):
    """Labels chosen so that the padded films' probabilities rank them perfectly (ROC-AUC 1) while the squashed
    ones' do not: evaluate's AUC says which geometry it used."""
    from sklearn.metrics import roc_auc_score

    from xai_cxr.cli import main
    folder, card, _ = padded_model
    from xai_cxr.data.phantom import make_phantom
    films = [cv2.resize(make_phantom(np.random.default_rng(s), 64, n_lesions=s % 3)[0], (192, 64))
             for s in range(10)]
    p_pad = np.array([p.probabilities["PNEUMONIA"] for p in
                      _proba(folder, np.stack([fit_size(f, card.image_size, geometry="pad") for f in films]))])
    p_squash = np.array([p.probabilities["PNEUMONIA"] for p in
                         _proba(folder, np.stack([fit_size(f, card.image_size) for f in films]))])
    labels = (p_pad > np.median(p_pad)).astype(int)
    assert roc_auc_score(labels, p_squash) < 0.99                      # the test can tell the two apart
    for i, (f, y) in enumerate(zip(films, labels)):
        d = tmp_path / "data" / "test" / ("PNEUMONIA" if y else "NORMAL")
        d.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(d / f"film{i}.png"), f)
    assert main(["evaluate", "--data-dir", str(tmp_path / "data"), "--weights-dir", str(folder),
                 "--results-dir", str(tmp_path / "res")]) in (0, None)
    metrics = json.loads((tmp_path / "res" / "metrics.json").read_text())
    assert metrics["roc_auc"] == pytest.approx(1.0)
