"""Phantoms: lesions inside the lungs, deterministic by seed, written in the Kermany layout."""
import numpy as np

from xai_cxr.data import scan_dataset
from xai_cxr.data.phantom import PhantomConfig, make_phantom, write_phantom_dataset


def test_phantom_masks_lie_inside_lung_fields():
    for seed in range(12):
        img, lesion, lungs = make_phantom(np.random.default_rng(seed), 128, n_lesions=2)
        assert lesion.any() and not (lesion & ~lungs).any()
        assert img.dtype == np.uint8 and img.shape == (128, 128)
        # an opacity is brighter than the rest of the lung field
        assert img[lesion].mean() > img[lungs & ~lesion].mean() + 20


def test_normal_phantom_has_no_lesion():
    _, lesion, lungs = make_phantom(np.random.default_rng(0), 96, n_lesions=0)
    assert not lesion.any() and lungs.sum() > 0.1 * 96 * 96


def test_phantoms_are_deterministic_by_seed():
    a = make_phantom(np.random.default_rng(5), 64, 1)
    b = make_phantom(np.random.default_rng(5), 64, 1)
    c = make_phantom(np.random.default_rng(6), 64, 1)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


def test_written_dataset_scans_with_masks_subtypes_and_is_reproducible(tmp_path):
    cfg = PhantomConfig(image_size=48, n_train=4, n_test=2, seed=3)
    root = write_phantom_dataset(tmp_path / "a", cfg)
    df = scan_dataset(root)
    assert len(df) == 12 and df.mask_path.notna().all()
    assert set(df[df.label == "PNEUMONIA"].subtype) <= {"bacteria", "virus"}
    assert df[df.split == "train"].patient_id.nunique() == 4          # two images per patient
    df2 = scan_dataset(write_phantom_dataset(tmp_path / "b", cfg))
    for p1, p2 in zip(df.path, df2.path):
        assert open(p1, "rb").read() == open(p2, "rb").read()
