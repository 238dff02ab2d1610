"""`xai-cxr report`: the file exists, opens, states the prediction, and carries no DICOM tag."""
import re

import numpy as np
import pytest
from conftest import write_dicom

from xai_cxr.cli import main


def _dicom_xray(path):
    from xai_cxr.data.phantom import make_phantom
    img = make_phantom(np.random.default_rng(3), 64, n_lesions=1)[0]
    write_dicom(path, img.astype(np.uint16) * 16, "MONOCHROME2", PatientName="Doe^Jane", PatientID="PID-98765")


def test_html_report_states_prediction_identity_and_disclaimer_without_phi(phantom_weights, tmp_path, capsys):
    from xai_cxr.models.folder import sha256_of
    _dicom_xray(tmp_path / "scan.dcm")
    out = tmp_path / "r.html"
    assert main(["report", str(tmp_path / "scan.dcm"), "--out", str(out), "--weights-dir", str(phantom_weights),
                 "--methods", "gradcam", "lime", "--mc-passes", "4"]) == 0
    html = out.read_text()
    said = re.search(r"scan\.dcm: (\w+) \(", capsys.readouterr().out).group(1)
    if said == "REFER":                 # a 16-film phantom model may well refer a film: the page leads with it
        assert "<h2 class='refer'>REFER to a reader: " in html and "none given (referred)" in html
    else:
        assert f"<h2 class='answer'>{said} — " in html
    assert "Research use only" in html
    assert sha256_of(phantom_weights / "model.weights.h5") in html
    assert html.count("data:image/png;base64,") == 3              # input + two overlays
    text = re.sub(r"base64,[A-Za-z0-9+/=]+", "", html)             # base64 may spell anything by chance
    assert "Doe" not in text and "PID-98765" not in text


def test_pdf_report_is_a_pdf_with_the_prediction_as_subject(phantom_weights, tmp_path):
    _dicom_xray(tmp_path / "scan.dcm")
    out = tmp_path / "r.pdf"
    assert main(["report", str(tmp_path / "scan.dcm"), "--out", str(out), "--weights-dir", str(phantom_weights),
                 "--mc-passes", "1"]) == 0
    data = out.read_bytes()
    assert data.startswith(b"%PDF-") and b"%%EOF" in data[-64:]
    assert re.search(rb"/Subject \((NORMAL|PNEUMONIA|REFER to a reader)", data)
    assert not list(tmp_path.glob("*tmp*"))                      # written atomically


def test_report_of_an_unreadable_file_is_a_clear_error(phantom_weights, tmp_path, capsys):
    (tmp_path / "x.png").write_bytes(b"not a png")
    with pytest.raises(SystemExit) as e:
        main(["report", str(tmp_path / "x.png"), "--out", str(tmp_path / "r.html"),
              "--weights-dir", str(phantom_weights)])
    assert e.value.code == 2 and "x.png" in capsys.readouterr().err and not (tmp_path / "r.html").exists()


def _prediction(**kw):
    from xai_cxr.serve.inference import Prediction
    base = dict(probabilities={"NORMAL": 0.2, "PNEUMONIA": 0.8}, label="PNEUMONIA", confidence=0.8,
                uncertainty=0.01, entropy=0.5, ood_score=3.0, ood_threshold=10.0,
                ood_z={"stem_relu": 2.5, "stage1_out": 0.5})
    return Prediction(**{**base, **kw})


class _Card:
    backbone, image_size, geometry, class_names, population_age = "cxr-res", 160, "squash", ("NORMAL",
                                                                                             "PNEUMONIA"), (1, 5)


class _Predictor:
    card, weights_id, source, temperature, calibrated, refer_above = _Card, "abc", "here", 1.0, True, 0.15
    confidence_rule = staticmethod(lambda: "refer below a calibrated probability of 0.852")


def test_a_referred_film_leads_with_the_referral_and_keeps_the_output_secondary():
    from xai_cxr.serve.report import headline, ood_gauge, render_html, report_fields
    answered = report_fields(_prediction(), _Predictor, "a.png")
    assert headline(answered) == "PNEUMONIA — 80.0%" and answered["decision"] == "answered by the model"
    referred = _prediction(decision="refer", reasons=["out_of_distribution"], ood_score=25.0,
                           out_of_distribution=True, warning="outside what this model has seen",
                           reason_text=["this film is unlike the films the model was trained on"])
    fields = report_fields(referred, _Predictor, "b.png")
    assert headline(fields) == "REFER to a reader: this film is unlike the films the model was trained on"
    assert fields["prediction"].startswith("none given (referred)") and "PNEUMONIA 80.0%" in fields["prediction"]
    fill, caption = ood_gauge(referred, _Predictor)
    assert fill == 25.0 / 20.0 or fill == 1.0                   # the threshold sits at the middle of the bar
    assert "above the threshold 10.0" in caption and "z = 2.5" in caption
    assert ood_gauge(_prediction(), _Predictor)[0] == 3.0 / 20.0
    page = render_html(np.zeros((4, 4), np.uint8), {}, fields, (fill, caption))
    assert page.index("REFER to a reader") < page.index("none given (referred)")
    assert fields["training population"] == "ages 1–5 years"
