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
    from xai_cxr.serve.inference import weights_sha256
    _dicom_xray(tmp_path / "scan.dcm")
    out = tmp_path / "r.html"
    assert main(["report", str(tmp_path / "scan.dcm"), "--out", str(out), "--weights-dir", str(phantom_weights),
                 "--methods", "gradcam", "lime", "--mc-passes", "4"]) == 0
    html = out.read_text()
    label = re.search(r"scan\.dcm: (\w+) \(", capsys.readouterr().out).group(1)
    assert f"<h2>{label} — " in html and "Research use only" in html
    assert weights_sha256(phantom_weights / "model.weights.h5") in html
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
    assert re.search(rb"/Subject \((NORMAL|PNEUMONIA)\)", data)
    assert not list(tmp_path.glob("*.tmp"))                      # written atomically


def test_report_of_an_unreadable_file_is_a_clear_error(phantom_weights, tmp_path, capsys):
    (tmp_path / "x.png").write_bytes(b"not a png")
    with pytest.raises(SystemExit) as e:
        main(["report", str(tmp_path / "x.png"), "--out", str(tmp_path / "r.html"),
              "--weights-dir", str(phantom_weights)])
    assert e.value.code == 2 and "x.png" in capsys.readouterr().err and not (tmp_path / "r.html").exists()
