"""Same seed → same manifest, split, weights and metrics (CPU, tiny model)."""
import json

import numpy as np
import pytest

from xai_cxr.config import CamConfig, DataConfig, ModelConfig, TrainConfig
from xai_cxr.data.phantom import PhantomConfig, write_phantom_dataset


def _run(root, out, seed):
    from xai_cxr.pipeline import run
    data = DataConfig(root=str(root), image_size=48, batch_size=8, validation="holdout:0.25", seed=seed)
    train = TrainConfig(verbose=0, seed=seed).with_epochs(2, 0)
    result = run(data, ModelConfig(backbone="cxr-small", weights="none"), train, CamConfig(n_samples=2),
                 out / "w", out / "r")
    return result


@pytest.mark.slow
def test_two_runs_with_one_seed_are_identical(tmp_path):
    root = write_phantom_dataset(tmp_path / "data", PhantomConfig(image_size=48, n_train=10, n_test=4, seed=2))
    a, b = _run(root, tmp_path / "a", 7), _run(root, tmp_path / "b", 7)
    pa, pb = a["prepared"], b["prepared"]
    assert pa.train.manifest.path.tolist() == pb.train.manifest.path.tolist()
    assert pa.val.manifest.path.tolist() == pb.val.manifest.path.tolist()
    for wa, wb in zip(a["model"].get_weights(), b["model"].get_weights()):
        np.testing.assert_array_equal(wa, wb)
    ma = json.loads((tmp_path / "a/r/metrics.json").read_text())
    mb = json.loads((tmp_path / "b/r/metrics.json").read_text())
    for m in (ma, mb):                           # wall-clock figures: the only fields allowed to differ
        m.pop("wall_time_s")
        m.pop("training_minutes")
    assert ma == mb
    untimed = lambda h: {s: {k: v for k, v in m.items() if k != "epoch_seconds"} for s, m in h.items()}  # noqa: E731
    assert untimed(a["history"]) == untimed(b["history"])
    c = _run(root, tmp_path / "c", 8)
    assert not all(np.array_equal(x, y) for x, y in zip(a["model"].get_weights(), c["model"].get_weights()))
