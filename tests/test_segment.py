"""The U-Net segmentation stage: loss against numpy, learning on phantom lesions, classify-then-segment."""
import numpy as np
import pytest

from xai_cxr.data.phantom import make_phantom
from xai_cxr.explain.metrics.localization import mask_scores
from xai_cxr.models.segment import SegmentConfig, build_unet, classify_then_segment, dice_bce_loss, segment, train_unet


def _phantoms(n, size=64, seed=0):
    rng = np.random.default_rng(seed)
    pairs = [make_phantom(rng, size, n_lesions=i % 2, lesion_radius=(6.0, 10.0)) for i in range(n)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]).astype(bool)


def test_dice_bce_loss_matches_numpy():
    rng = np.random.default_rng(1)
    y = (rng.random((2, 8, 8, 1)) > 0.7).astype("float32")
    p = rng.uniform(0.05, 0.95, (2, 8, 8, 1)).astype("float32")
    dice = (2 * (y * p).sum((1, 2, 3)) + 1) / (y.sum((1, 2, 3)) + p.sum((1, 2, 3)) + 1)
    bce = -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()
    assert float(dice_bce_loss(y, p)) == pytest.approx((1 - dice).mean() + bce, rel=1e-4)


def test_unet_shapes_and_size_check():
    assert build_unet(32, SegmentConfig(base_filters=4, depth=2)).output_shape == (None, 32, 32, 1)
    with pytest.raises(ValueError, match="divisible by 8"):
        build_unet(36)


@pytest.mark.slow
def test_unet_learns_phantom_lesions_dice_rises():
    images, masks = _phantoms(64)
    test_images, test_masks = _phantoms(16, seed=9)
    cfg = SegmentConfig(base_filters=8, depth=3, epochs=1, batch_size=8, seed=0)
    short, _ = train_unet(images, masks, cfg=cfg)
    before = mask_scores(segment(short, test_images) >= 0.5, test_masks)["dice"]
    long, history = train_unet(images, masks, cfg=SegmentConfig(base_filters=8, depth=3, epochs=12, batch_size=8,
                                                                seed=0))
    after = mask_scores(segment(long, test_images) >= 0.5, test_masks)["dice"]
    assert history["loss"][-1] < history["loss"][0]
    assert after > before + 0.1 and after > 0.3, (before, after)


class _FixedClassifier:
    """Stands in for a classifier: says 'positive' for the images listed."""
    def __init__(self, positive):
        self.positive = positive

    def predict(self, x, batch_size=None, verbose=0):
        p = np.zeros((len(x), 2), np.float32)
        p[:, 0] = 1
        p[self.positive] = [0, 1]
        return p


def test_classify_then_segment_runs_unet_only_on_positives():
    images, _ = _phantoms(4)
    class _KnownUNet:                          # lesion probability = the image's own brightness in [0, 1]
        def predict(self, x, batch_size=None, verbose=0):
            return np.asarray(x, np.float32)[..., :1]
    proba, masks = classify_then_segment(_FixedClassifier([1, 3]), lambda x: x, _KnownUNet(), images, threshold=0.5)
    assert proba.argmax(1).tolist() == [0, 1, 0, 1]
    assert not masks[[0, 2]].any()                                # negatives: never segmented
    from xai_cxr.models.segment import _inputs
    expected = _inputs(images[[1, 3]])[..., 0] >= 0.5             # positives: the U-Net's map at the threshold
    assert np.array_equal(masks[[1, 3]], expected) and 0 < expected.mean() < 1


def test_mask_scores_skip_images_without_lesion():
    true = np.zeros((3, 4, 4), bool)
    true[1, :2, :2] = True
    true[2, :, :2] = True
    pred = np.zeros_like(true)
    pred[1, :2, :2] = True                       # perfect on image 1
    pred[2, :, :1] = True                        # half of image 2's lesion
    s = mask_scores(pred, true)
    assert s["n_images"] == 2
    assert s["iou"] == pytest.approx((1 + 0.5) / 2) and s["dice"] == pytest.approx((1 + 2 * 4 / 12) / 2)
