"""Heat maps back as DICOM: valid Secondary Capture objects (built by highdicom, read back with pydicom) in the
source's study, referencing its image, carrying the PNG overlay's pixels and none of the source's identity; refusals
for PNG inputs and DICOMs without their UIDs; the same through `xai-cxr explain --dicom-out` and the HTTP API."""
import base64

import cv2
import numpy as np
import pydicom
import pytest
from conftest import write_dicom

pytest.importorskip("highdicom")

IDENTITY = {"PatientName": "Doe^Jane", "PatientID": "MRN-12345", "PatientBirthDate": "19450704",
            "PatientSex": "F", "PatientAge": "081Y", "AccessionNumber": "ACC-999", "StudyDate": "20200101",
            "InstitutionName": "St Example", "ReferringPhysicianName": "Who^Doctor", "OtherPatientIDs": "X-1"}


def _source(path, size=64, **tags):
    from xai_cxr.data.phantom import make_phantom
    img = make_phantom(np.random.default_rng(0), size, n_lesions=1)[0]
    write_dicom(path, img, StudyInstanceUID="1.2.826.0.1.3680043.8.498.1",
                SeriesInstanceUID="1.2.826.0.1.3680043.8.498.2", **{**IDENTITY, **tags})
    return path


def _assert_no_identity(ds):
    """No identifying element of the source is set, and none of its distinctive values appears anywhere."""
    for key in IDENTITY:
        assert str(ds.get(key, "") or "") == "", f"{key} leaked: {ds.get(key)!r}"
    text = str(ds)
    for value in IDENTITY.values():
        if len(value) > 3:                          # "F" occurs in any text; the names, ids and dates must not
            assert value not in text, value


def test_overlay_object_references_the_source_and_copies_no_identity(tmp_path):
    from xai_cxr.serve.dicom_out import overlay_dataset, source_references, to_bytes
    src = _source(tmp_path / "src.dcm")
    refs = source_references(src.read_bytes(), src.name)
    source = pydicom.dcmread(src)
    rgb = np.random.default_rng(1).integers(0, 256, (64, 64, 3)).astype(np.uint8)
    back = pydicom.dcmread(__import__("io").BytesIO(to_bytes(overlay_dataset(refs, rgb, "PNEUMONIA", 0.87, "ab" * 32))))
    assert back.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"                     # Secondary Capture Image Storage
    assert back.StudyInstanceUID == source.StudyInstanceUID                     # filed in the source's study …
    assert back.SeriesInstanceUID != source.SeriesInstanceUID                   # … as a new series
    assert back.SOPInstanceUID != source.SOPInstanceUID
    ref = back.SourceImageSequence[0]
    assert (ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID) == (source.SOPClassUID, source.SOPInstanceUID)
    np.testing.assert_array_equal(back.pixel_array, rgb)
    assert back.PhotometricInterpretation == "RGB" and back.BurnedInAnnotation == "NO"
    assert "PNEUMONIA 87.0%" in back.ImageComments and "ab" * 32 in back.ImageComments
    assert "research use only - not for diagnosis" in back.ImageComments
    assert "research use only" in back.SeriesDescription
    _assert_no_identity(back)


def test_png_input_and_a_dicom_without_uids_are_refused_with_the_reason(tmp_path):
    from xai_cxr.serve.dicom_out import DicomOutError, source_references
    png = cv2.imencode(".png", np.zeros((8, 8), np.uint8))[1].tobytes()
    with pytest.raises(DicomOutError, match="a.png: DICOM output needs a DICOM input"):
        source_references(png, "a.png")
    src = _source(tmp_path / "nouid.dcm")
    ds = pydicom.dcmread(src)
    del ds.StudyInstanceUID
    ds.save_as(src)
    with pytest.raises(DicomOutError, match="nouid.dcm: the DICOM header lacks StudyInstanceUID"):
        source_references(src.read_bytes(), src.name)


def test_cli_explain_writes_the_png_overlay_as_dicom(phantom_weights, tmp_path):
    from xai_cxr.cli import main
    from xai_cxr.data import fit_size, read_gray
    from xai_cxr.models import ModelCard
    src = _source(tmp_path / "film.dcm")
    assert main(["explain", str(src), "--weights-dir", str(phantom_weights), "--out", str(tmp_path / "png"),
                 "--dicom-out", str(tmp_path / "dcm")]) in (0, None)
    back = pydicom.dcmread(tmp_path / "dcm" / "film_gradcam.dcm")
    panel = cv2.cvtColor(cv2.imread(str(tmp_path / "png" / "film_gradcam.png")), cv2.COLOR_BGR2RGB)
    size = ModelCard.load(phantom_weights).image_size
    np.testing.assert_array_equal(back.pixel_array, panel[:, :size])        # the PNG's red overlay, pixel for pixel
    assert back.StudyInstanceUID == "1.2.826.0.1.3680043.8.498.1"
    _assert_no_identity(back)
    assert fit_size(read_gray(src), size).shape == back.pixel_array.shape[:2]


def test_cli_explain_refuses_dicom_out_for_a_png_before_any_work(phantom_weights, tmp_path, capsys):
    from xai_cxr.cli import main
    cv2.imwrite(str(tmp_path / "film.png"), np.zeros((32, 32), np.uint8))
    with pytest.raises(SystemExit) as exit_:
        main(["explain", str(tmp_path / "film.png"), "--weights-dir", str(phantom_weights), "--out",
              str(tmp_path / "png"), "--dicom-out", str(tmp_path / "dcm")])
    assert "film.png: DICOM output needs a DICOM input" in str(exit_.value)
    assert not (tmp_path / "png").exists() and not (tmp_path / "dcm").exists()


def test_api_explain_returns_the_overlay_as_dicom_and_refuses_it_for_a_png(phantom_weights, tmp_path):
    httpx = pytest.importorskip("httpx")
    from test_serve import _serve

    from xai_cxr.serve.api import create_app
    from xai_cxr.serve.inference import Predictor
    predictor = Predictor.from_weights_dir(phantom_weights, mc_passes=1)
    url, stop = _serve(create_app(predictor))
    src = _source(tmp_path / "film.dcm")
    try:
        r = httpx.post(f"{url}/explain", params={"dicom": "true"},
                       files={"file": ("film.dcm", src.read_bytes(), "application/dicom")}, timeout=60)
        png = cv2.imencode(".png", np.zeros((32, 32), np.uint8))[1].tobytes()
        refused = httpx.post(f"{url}/explain", params={"dicom": "true"},
                             files={"file": ("film.png", png, "image/png")}, timeout=60)
    finally:
        stop()
    assert r.status_code == 200, r.text
    body = r.json()
    back = pydicom.dcmread(__import__("io").BytesIO(base64.b64decode(body["overlay_dicom_base64"])))
    overlay = cv2.cvtColor(cv2.imdecode(np.frombuffer(base64.b64decode(body["overlay_png_base64"]), np.uint8),
                                        cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(back.pixel_array, overlay)
    assert predictor.weights_id in back.ImageComments
    _assert_no_identity(back)
    assert refused.status_code == 422 and "DICOM output needs a DICOM input" in refused.json()["detail"]


def test_cli_report_writes_its_first_methods_overlay_as_dicom(phantom_weights, tmp_path):
    from xai_cxr.cli import main
    src = _source(tmp_path / "film.dcm")
    assert main(["report", str(src), "--weights-dir", str(phantom_weights), "--out", str(tmp_path / "r.html"),
                 "--mc-passes", "1", "--dicom-out", str(tmp_path / "dcm")]) in (0, None)
    back = pydicom.dcmread(tmp_path / "dcm" / "film_gradcam.dcm")
    assert back.StudyInstanceUID == "1.2.826.0.1.3680043.8.498.1" and "gradcam" in back.ImageComments
    _assert_no_identity(back)
