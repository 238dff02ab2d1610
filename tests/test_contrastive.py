"""The self-supervised input check: SimCLR's loss by hand, its training on phantoms, its representation saved and
read back (its branch in a model's detector: tests/test_end_to_end.py, ``fit-ood --input-checks``)."""
import numpy as np
import pytest


def test_nt_xent_is_the_cross_entropy_of_finding_each_views_partner_by_hand():
    from xai_cxr.models.contrastive import nt_xent
    rng = np.random.default_rng(0)
    z1, z2 = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    z = np.concatenate([z1, z2])
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    t, n2 = 0.5, 10
    losses = []
    for i in range(n2):
        partner = (i + 5) % n2
        others = [j for j in range(n2) if j != i]
        logits = np.array([z[i] @ z[j] / t for j in others])
        losses.append(-(z[i] @ z[partner] / t) + np.log(np.exp(logits).sum()))
    assert float(nt_xent(z1.astype(np.float32), z2.astype(np.float32), t)) == pytest.approx(np.mean(losses),
                                                                                            rel=1e-5)


def _phantoms(folder, n, seed):
    from xai_cxr.data import load_images, scan_dataset
    from xai_cxr.data.phantom import PhantomConfig, write_phantom_dataset
    root = write_phantom_dataset(folder, PhantomConfig(image_size=64, n_train=0, n_test=n, seed=seed))
    return load_images(scan_dataset(root), 64, progress=False).images


def test_the_encoders_loss_falls_on_phantoms_and_its_representation_survives_save_and_load(tmp_path):
    from xai_cxr.models.contrastive import BRANCH, ContrastiveCheck, fit_contrastive_check
    films = _phantoms(tmp_path / "phantoms", 128, seed=5)
    check = fit_contrastive_check(films, seed=1, epochs=15, batch_size=32)
    # chance for 63 candidates is log(63) = 4.14; the loss must fall well below its first epoch
    assert check.history[-1] < check.history[0] - 0.3
    check.save(tmp_path)
    back = ContrastiveCheck.load(tmp_path)
    np.testing.assert_allclose(back.branch_values(films[:8])[BRANCH], check.branch_values(films[:8])[BRANCH],
                               rtol=1e-5, atol=1e-6)
    assert ContrastiveCheck.load(tmp_path / "nowhere") is None
