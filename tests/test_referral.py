"""Refer instead of guess: the rule (each reason alone and together), the DICOM age rule on pydicom-built files
(the age compared, never shown), blank images refused, and the decision as the API, the app, `explain` and
`evaluate` give it."""
import json
import re
import shutil

import cv2
import numpy as np
import pytest
from conftest import write_dicom

from xai_cxr.data.population import age_outside, default_population, parse_range
from xai_cxr.models import referral

AGE = "087Y"            # an age no output may carry


def test_each_reason_alone_and_together():
    codes = referral.reasons([False, True, False, False, True],
                             referral.mc_uncertain([0.0, 0.0, 0.2, 0.0, 0.3], 0.15), [None, False, False, True, True])
    assert codes == [(), ("out_of_distribution",), ("uncertain",), ("age",),
                     ("out_of_distribution", "uncertain", "age")]
    assert [referral.decision(c) for c in codes] == ["answer"] + ["refer"] * 4
    words = referral.in_words(("out_of_distribution", "age"), branch="stem_relu")
    assert words[0].startswith("this film is unlike") and "stem_relu" in words[0] and "age" in words[1]


def test_summary_counts_coverage_reasons_and_the_accuracy_of_answered_films():
    codes = [(), (), ("uncertain",), ("out_of_distribution", "uncertain"), ()]
    s = referral.summary(codes, np.array([True, False, False, True, True]))
    assert s["coverage"] == 0.6 and s["referred"] == 0.4
    assert s["referred_uncertain"] == 0.4 and s["referred_out_of_distribution"] == 0.2 and s["referred_age"] == 0
    assert s["accuracy_answered"] == pytest.approx(2 / 3) and s["accuracy_referred"] == 0.5
    assert s["accuracy_all"] == 0.6


def _dicom_bytes(tmp_path, name="a.dcm", **tags):
    from xai_cxr.data.phantom import make_phantom
    img = make_phantom(np.random.default_rng(3), 64, n_lesions=1)[0]
    write_dicom(tmp_path / name, img, "MONOCHROME2", PatientName="Doe^Jane", **tags)
    return (tmp_path / name).read_bytes()


@pytest.mark.parametrize("age, outside", [("005Y", False), ("001Y", False), ("081Y", True), ("12M", False),
                                          ("006M", True), ("030W", True), ("81", True), ("", None),
                                          ("garbage", None), ("5 Y", False), (None, None)])
def test_dicom_age_rule_inside_outside_missing_and_malformed(tmp_path, age, outside):
    tags = {} if age is None else {"PatientAge": age}
    assert age_outside(_dicom_bytes(tmp_path, **tags), (1.0, 5.0)) is outside


def test_the_age_rule_needs_a_dicom_and_a_known_population(tmp_path):
    data = _dicom_bytes(tmp_path, PatientAge="081Y")
    assert age_outside(data, None) is None
    assert age_outside(cv2.imencode(".png", np.eye(8, dtype=np.uint8) * 200)[1].tobytes(), (1.0, 5.0)) is None
    assert age_outside(data[:200], (1.0, 5.0)) is None                       # a broken header: unknown, no crash


def test_population_flag_and_kermany_default():
    assert parse_range("1-5") == (1.0, 5.0) and parse_range("none") is None
    with pytest.raises(ValueError, match="MIN-MAX"):
        parse_range("adults")
    assert default_population("/data/chest_xray", ("NORMAL", "PNEUMONIA")) == (1.0, 5.0)
    assert default_population("/data/pets", ("cat", "dog")) is None


def test_train_config_records_the_population_in_the_card(tmp_path):
    from xai_cxr.cli import build_parser
    from xai_cxr.commands.configs import configs_from_args
    from xai_cxr.config import DataConfig, ModelConfig, TrainConfig
    for cls in ("NORMAL", "PNEUMONIA"):
        (tmp_path / "chest_xray" / "train" / cls).mkdir(parents=True)
    args = build_parser().parse_args(["train", "--data-dir", str(tmp_path / "chest_xray")])
    data, *_ = configs_from_args(args, DataConfig(), ModelConfig(), TrainConfig())
    assert data.population_age == (1.0, 5.0)
    args = build_parser().parse_args(["train", "--data-dir", str(tmp_path / "chest_xray"), "--population-age", "18-90"])
    assert configs_from_args(args, DataConfig(), ModelConfig(), TrainConfig())[0].population_age == (18.0, 90.0)


@pytest.fixture(scope="module")
def kermany_like_weights(phantom_weights, tmp_path_factory):
    """The phantom model with a card that records a training population of ages 1–5."""
    folder = tmp_path_factory.mktemp("aged") / "weights"
    shutil.copytree(phantom_weights, folder)
    card = json.loads((folder / "model_config.json").read_text())
    (folder / "model_config.json").write_text(json.dumps({**card, "population_age": [1, 5]}))
    return folder


def test_blank_or_constant_images_are_refused_as_bad_input(kermany_like_weights):
    from xai_cxr.data import ImageReadError
    from xai_cxr.serve.inference import Predictor
    pred = Predictor.from_weights_dir(kermany_like_weights, mc_passes=1)
    for value in (0, 128, 255):
        png = cv2.imencode(".png", np.full((64, 64), value, np.uint8))[1].tobytes()
        with pytest.raises(ImageReadError, match="blank"):
            pred.load(png, "flat.png")


def test_the_predictor_refers_below_the_rules_confidence_and_answers_above(kermany_like_weights):
    from xai_cxr.data.phantom import make_phantom
    from xai_cxr.models.selective import SelectiveRule
    from xai_cxr.serve.inference import Predictor
    img = make_phantom(np.random.default_rng(1), 64, n_lesions=1)[0]
    pred = Predictor.from_weights_dir(kermany_like_weights, mc_passes=1)
    confidence = pred.predict(img[None], mc=False)[0].confidence
    for threshold, referred in ((confidence + 1e-6, True), (confidence - 1e-6, False)):
        pred.selective = SelectiveRule(0.05, 0.05, threshold, 0.04, 0.5, 0.01, 100)
        p = pred.predict(img[None], mc=False)[0]
        assert ("uncertain" in p.reasons) is referred
        assert f"{threshold:.3f}" in pred.confidence_rule() and "5%" in pred.confidence_rule()


def test_without_an_error_level_an_mc_sd_above_the_limit_refers_every_film(kermany_like_weights):
    from xai_cxr.data.phantom import make_phantom
    from xai_cxr.serve.inference import Predictor
    img = make_phantom(np.random.default_rng(1), 64, n_lesions=1)[0]
    pred = Predictor.from_weights_dir(kermany_like_weights, mc_passes=1, refer_above=-1.0)
    pred.selective = None                                   # a folder written before the error level
    p = pred.predict(img[None], mc=False)[0]
    assert p.decision == "refer" and "uncertain" in p.reasons and p.as_dict()["answer"] is None
    assert list(p.as_dict())[:4] == ["decision", "reasons", "reason_text", "answer"]


def test_api_refers_an_adult_dicom_and_never_returns_its_age(kermany_like_weights, tmp_path):
    httpx = pytest.importorskip("httpx")
    from test_serve import _serve

    from xai_cxr.serve.api import create_app
    from xai_cxr.serve.inference import Predictor
    url, stop = _serve(create_app(Predictor.from_weights_dir(kermany_like_weights, mc_passes=2)))
    try:
        data = _dicom_bytes(tmp_path, PatientAge=AGE)
        for path in ("/predict", "/explain"):
            r = httpx.post(f"{url}{path}", files={"file": ("adult.dcm", data, "application/dicom")}, timeout=60)
            body = r.json()
            assert r.status_code == 200 and body["decision"] == "refer" and "age" in body["reasons"]
            assert body["answer"] is None and set(body["probabilities"]) == {"NORMAL", "PNEUMONIA"}
            assert AGE not in r.text and "87 y" not in r.text and "Doe" not in r.text
        blank = cv2.imencode(".png", np.zeros((64, 64), np.uint8))[1].tobytes()
        r = httpx.post(f"{url}/predict", files={"file": ("black.png", blank, "image/png")}, timeout=60)
        assert r.status_code == 422 and "blank" in r.json()["detail"]
    finally:
        stop()


def test_explain_and_report_lead_with_the_referral_and_keep_the_age_out(kermany_like_weights, tmp_path, capsys):
    from xai_cxr.cli import main
    _dicom_bytes(tmp_path, "adult.dcm", PatientAge=AGE)
    out = tmp_path / "maps"
    assert main(["explain", str(tmp_path / "adult.dcm"), "--weights-dir", str(kermany_like_weights),
                 "--out", str(out)]) in (0, None)
    report = tmp_path / "r.html"
    assert main(["report", str(tmp_path / "adult.dcm"), "--weights-dir", str(kermany_like_weights),
                 "--out", str(report), "--mc-passes", "2"]) in (0, None)
    said = capsys.readouterr().out
    rows = (out / "decisions.csv").read_text()
    assert "adult.dcm: REFER (" in said and ",refer," in rows and "age" in rows
    html = re.sub(r"base64,[A-Za-z0-9+/=]+", "", report.read_text())     # base64 may spell anything by chance
    assert "REFER to a reader" in html and "outside the model&#x27;s training population" in html
    for text in (said, rows, html):
        assert AGE not in text and "Doe" not in text


def test_app_leads_with_the_referral_and_shows_no_headline_prediction(kermany_like_weights, tmp_path, monkeypatch):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest
    from test_app import APP
    monkeypatch.setenv("XAI_CXR_WEIGHTS_DIR", str(kermany_like_weights))
    from streamlit.runtime.caching import cache_data, cache_resource
    cache_resource.clear()
    cache_data.clear()
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.file_uploader(key="uploads").upload("adult.dcm", _dicom_bytes(tmp_path, PatientAge=AGE),
                                           "application/dicom").run()
    assert not at.exception
    errors = " ".join(e.value for e in at.error)
    assert "Referred to a reader" in errors and "training population" in errors
    assert not [m for m in at.metric if m.label == "Prediction"]             # no answer shown as if given
    page = " ".join([errors, *(c.value for c in at.caption), *(m.value for m in at.markdown)])
    assert AGE not in page
    blank = cv2.imencode(".png", np.full((64, 64), 7, np.uint8))[1].tobytes()
    at.file_uploader(key="uploads").upload("black.png", blank, "image/png").run()
    assert any("blank" in e.value for e in at.error)


def test_the_predictors_folder_test_is_the_shift_test_of_its_holdout_against_the_films_z_scores(kermany_like_weights):
    from xai_cxr.data.phantom import make_phantom
    from xai_cxr.models import BACKBONES
    from xai_cxr.models.shift import c2st
    from xai_cxr.serve.inference import Predictor
    pred = Predictor.from_weights_dir(kermany_like_weights, mc_passes=1)
    films = np.stack([make_phantom(np.random.default_rng(50 + i), 64, n_lesions=1)[0] for i in range(12)])
    det = pred.ood
    test, scores = pred.folder_test(films)
    z = det.z(det.raw(det.image_values(pred.model, films, BACKBONES[pred.card.backbone].preprocess)))
    assert test == c2st(det.reference_z[:, det.summed], z[:, det.summed])
    np.testing.assert_allclose(scores, det.combined(z))
    assert pred.folder_test(films[:4]) is None                             # too few films to test
    assert (det.reference_labels == 1).sum() < 5 and pred.folder_test(films, label=1) is None   # too few of a class
