"""The disk-backed image store: the same pixels as decoding into memory, reused by key, never reused half-built,
and batches read from the map equal to the in-memory pipeline's."""
import numpy as np
import pytest

from xai_cxr.data import load_images, make_dataset, scan_dataset
from xai_cxr.data.phantom import PhantomConfig, write_phantom_dataset
from xai_cxr.data.store import load_images_stored


@pytest.fixture
def phantoms(tmp_path):
    root = write_phantom_dataset(tmp_path / "p", PhantomConfig(image_size=48, n_train=10, n_test=2, seed=3))
    (root / "train" / "NORMAL" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    return scan_dataset(root)


def test_store_holds_the_same_pixels_and_skips_what_memory_skips(phantoms, tmp_path):
    memory = load_images(phantoms, 40, progress=False, clahe=True)
    stored = load_images_stored(phantoms, 40, tmp_path / "store", clahe=True, chunk=7, progress=False)
    assert isinstance(stored.images, np.memmap) and not stored.images.flags.writeable
    np.testing.assert_array_equal(np.asarray(stored.images), memory.images)
    assert stored.manifest["path"].tolist() == memory.manifest["path"].tolist()
    assert [p for p, _ in stored.skipped] == [p for p, _ in memory.skipped] and len(stored.skipped) == 1


def test_store_is_reused_by_key_and_rebuilt_when_settings_change(phantoms, tmp_path, monkeypatch):
    from xai_cxr.data import store
    load_images_stored(phantoms, 40, tmp_path / "store", progress=False)
    monkeypatch.setattr(store, "load_images", lambda *a, **k: pytest.fail("decoded again"))
    load_images_stored(phantoms, 40, tmp_path / "store", progress=False)          # same key: no decode
    monkeypatch.undo()
    load_images_stored(phantoms, 32, tmp_path / "store", progress=False)          # other size: a new entry
    assert len([d for d in (tmp_path / "store").iterdir() if not d.name.endswith(".tmp")]) == 2


def test_a_half_built_store_is_not_reused(phantoms, tmp_path, monkeypatch):
    from xai_cxr.data import store
    calls = []

    def fail_on_second_chunk(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return load_images(*a, **k)
    monkeypatch.setattr(store, "load_images", fail_on_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        load_images_stored(phantoms, 40, tmp_path / "store", chunk=5, progress=False)
    monkeypatch.undo()
    again = load_images_stored(phantoms, 40, tmp_path / "store", chunk=5, progress=False)
    np.testing.assert_array_equal(np.asarray(again.images), load_images(phantoms, 40, progress=False).images)


def test_batches_from_the_map_equal_the_in_memory_pipeline(phantoms, tmp_path):
    stored = load_images_stored(phantoms, 40, tmp_path / "store", progress=False)
    memory = load_images(phantoms, 40, progress=False)
    unit = lambda x: x / 255.0  # noqa: E731
    for a, b in zip(make_dataset(stored.images, stored.labels, unit, batch_size=6),
                    make_dataset(memory.images, memory.labels, unit, batch_size=6)):
        np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
        np.testing.assert_array_equal(a[1].numpy(), b[1].numpy())
    shuffled = make_dataset(stored.images, stored.labels, unit, batch_size=6, shuffle=True, seed=1)
    label_of = {np.round(img * 1.0).astype(np.uint8).tobytes(): y for img, y in zip(memory.images, memory.labels)}
    seen = []
    for x, y in shuffled:                                   # every image once, each with its own label
        for img, onehot in zip(x.numpy(), y.numpy()):
            key = np.round(img[..., 0] * 255.0).astype(np.uint8).tobytes()
            assert label_of[key] == onehot.argmax()
            seen.append(key)
    assert sorted(seen) == sorted(label_of) and len(seen) == len(memory.images)
