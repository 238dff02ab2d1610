"""DICOM input: the same decoder for files, uploads and API requests; pixels checked against numpy."""
import numpy as np
import pytest
from conftest import SHARED, write_dicom

from xai_cxr.data import ImageReadError, decode_image, read_gray

RNG = np.random.default_rng(7)


def test_dicom_window_centre_width_matches_the_dicom_linear_formula(tmp_path):
    d16 = RNG.integers(0, 4096, (20, 30), dtype=np.uint16)
    c, w = 2000.0, 1000.0
    write_dicom(tmp_path / "w.dcm", d16, window=(c, w))
    x = d16.astype(np.float64)
    expected = np.clip((x - (c - 0.5)) / (w - 1) + 0.5, 0, 1) * 255    # PS3.3 C.11.2.1.2.1, then 0..255
    got = read_gray(tmp_path / "w.dcm").astype(np.float64)
    assert np.abs(got - expected).max() <= 1.0
    assert (got[x < c - w / 2] == 0).all() and (got[x > c + w / 2] == 255).all()


def test_dicom_monochrome1_with_rescale_inverts_after_the_modality_lut(tmp_path):
    d12 = RNG.integers(0, 4096, (16, 16), dtype=np.uint16)
    write_dicom(tmp_path / "m1.dcm", d12, "MONOCHROME1", slope=0.5, intercept=-100)
    hu = d12 * 0.5 - 100
    inv = hu.max() - hu
    expected = np.round((inv - inv.min()) / (inv.max() - inv.min()) * 255)
    assert np.array_equal(read_gray(tmp_path / "m1.dcm"), expected.astype(np.uint8))


def test_uploaded_dicom_without_suffix_is_recognised_by_its_magic(tmp_path):
    d16 = RNG.integers(0, 65535, (8, 8), dtype=np.uint16)
    write_dicom(tmp_path / "a.dcm", d16)
    data = (tmp_path / "a.dcm").read_bytes()
    assert np.array_equal(decode_image(data, "upload.bin"), read_gray(tmp_path / "a.dcm"))


def test_dicom_without_pixel_data_names_the_file(tmp_path):
    write_dicom(tmp_path / "sr.dcm", np.zeros((4, 4), np.uint16), with_pixels=False)
    with pytest.raises(ImageReadError, match=r"sr\.dcm: DICOM file has no pixel data"):
        read_gray(tmp_path / "sr.dcm")


def test_real_nih_dicom_decodes_the_same_from_bytes_and_from_disk():
    path = SHARED / "dicom" / "nih-chestxray14-no-finding.dcm"
    if not path.exists():
        pytest.skip(f"{path} not present (../shared/data is only on project machines)")
    img = decode_image(path.read_bytes(), "scan")
    assert np.array_equal(img, read_gray(path))
    assert img.min() == 0 and img.max() == 255
