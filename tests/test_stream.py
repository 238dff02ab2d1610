"""Streaming evaluation + Grad-CAM: same answers as the in-memory path, and memory that does not grow
with the number of images (1k vs 10k phantoms, each in a fresh process)."""
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import build_tiny

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "stream_memory.py"


def _bench():
    spec = importlib.util.spec_from_file_location("stream_memory", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_stream_predict_matches_in_memory_and_skips_bad_files(tmp_path):
    import cv2

    from xai_cxr.data import load_images, to_model_input
    from xai_cxr.data.stream import stream_predict
    from xai_cxr.explain.cam import GradCAM
    rng = np.random.default_rng(0)
    paths = []
    for i in range(11):
        p = tmp_path / f"img{i:02d}.png"
        cv2.imwrite(str(p), rng.integers(0, 256, (8, 8), dtype=np.uint8))
        paths.append(str(p))
    (tmp_path / "img05.png").write_bytes(b"broken")
    manifest = pd.DataFrame({"path": paths, "label_idx": np.arange(11) % 2})
    model = build_tiny("flatten", seed=1, channels=3)
    prep = lambda t: t / 255.0  # noqa: E731
    out = stream_predict(model, manifest, 8, prep, chunk=4, cam=GradCAM(model, "conv"))
    full = load_images(manifest, 8, progress=False)
    x = to_model_input(full.images, prep).numpy()
    np.testing.assert_allclose(out["proba"], model.predict(x, verbose=0), atol=1e-6)
    assert out["labels"].tolist() == full.labels.tolist() and len(out["skipped"]) == 1
    maps = GradCAM(model, "conv")(x, targets=out["proba"].argmax(1))
    expected = np.stack(np.unravel_index(maps.reshape(len(maps), -1).argmax(1), maps.shape[1:]), 1)
    np.testing.assert_array_equal(out["peaks"], expected)


@pytest.mark.slow
def test_streaming_memory_does_not_grow_from_1k_to_10k_images(tmp_path):
    bench = _bench()
    size = 128
    root = bench.phantom_root(10_000, size, tmp_path)
    small, large = bench.measure(root, 1_000, size), bench.measure(root, 10_000, size)
    assert (small["n_images"], large["n_images"]) == (1_000, 10_000)
    held = 9_000 * size * size / 2 ** 20                     # 141 MB of extra uint8 images if they were kept
    assert large["peak_rss_mb"] - small["peak_rss_mb"] < 0.5 * held, (small, large)
