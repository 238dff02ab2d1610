"""The bad-input corpus: every case is generated here, and its documented outcome is asserted —
read correctly, ignored by the scan, skipped with a reason, or a clear error naming the path."""
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import write_dicom
from PIL import Image

from xai_cxr.data import DatasetLayoutError, ImageReadError, load_images, read_gray, require_splits, scan_dataset

RNG = np.random.default_rng(0)
GRAY = RNG.integers(0, 256, (24, 32), dtype=np.uint8)


def _png_header_only(path, w, h):
    """A PNG whose IHDR claims w×h but which holds almost no data (decompression-bomb shape)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))


def _minmax(a):
    a = a.astype(np.float64)
    return np.round((a - a.min()) / (a.max() - a.min()) * 255).astype(np.uint8)


# name → (writer(path), expected): expected is an array (read exactly), a callable check, or "skip:<reason>"
def _cases():
    c = {}
    c["plain.png"] = (lambda p: cv2.imwrite(str(p), GRAY), GRAY)
    c["upper.JPEG"] = (lambda p: cv2.imwrite(str(p.with_suffix(".jpg")), GRAY, [cv2.IMWRITE_JPEG_QUALITY, 100])
                       and os.replace(p.with_suffix(".jpg"), p), lambda a: np.abs(a.astype(int) - GRAY).mean() < 3)
    g16 = RNG.integers(0, 65535, (24, 32), dtype=np.uint16)
    c["sixteen_bit.png"] = (lambda p: cv2.imwrite(str(p), g16), _minmax(g16))
    c["constant16.png"] = (lambda p: cv2.imwrite(str(p), np.full((8, 8), 4000, np.uint16)), np.zeros((8, 8), np.uint8))
    c["rgba.png"] = (lambda p: Image.fromarray(np.dstack([GRAY] * 3 + [np.full_like(GRAY, 7)]), "RGBA").save(p),
                     lambda a: np.abs(a.astype(int) - GRAY).max() <= 1)
    c["palette.png"] = (lambda p: Image.fromarray(GRAY, "L").convert("P").save(p),
                        lambda a: np.abs(a.astype(int) - GRAY).max() <= 1)
    c["cmyk.jpeg"] = (lambda p: Image.fromarray(np.dstack([GRAY] * 3), "RGB").convert("CMYK").save(p, quality=100),
                      lambda a: a.shape == GRAY.shape and np.corrcoef(a.ravel(), GRAY.ravel())[0, 1] > 0.95)
    c["tiny_1x1.png"] = (lambda p: cv2.imwrite(str(p), np.full((1, 1), 99, np.uint8)), np.full((1, 1), 99, np.uint8))
    c["wide.png"] = (lambda p: cv2.imwrite(str(p), np.tile(GRAY[:2], (1, 40))), np.tile(GRAY[:2], (1, 40)))
    c["bitmap.bmp"] = (lambda p: cv2.imwrite(str(p), GRAY), GRAY)
    c["tiff16.tif"] = (lambda p: cv2.imwrite(str(p), g16), _minmax(g16))
    f32 = RNG.random((10, 12)).astype(np.float32)
    c["float.tiff"] = (lambda p: cv2.imwrite(str(p), f32), _minmax(f32))
    c["jpeg_named.png"] = (lambda p: cv2.imwrite(str(p.with_suffix(".jpg")), GRAY, [cv2.IMWRITE_JPEG_QUALITY, 100])
                           and os.replace(p.with_suffix(".jpg"), p), lambda a: np.abs(a.astype(int) - GRAY).mean() < 3)
    c["trailing_garbage.png"] = (lambda p: (cv2.imwrite(str(p), GRAY), open(p, "ab").write(b"garbage" * 10)), GRAY)
    c["with space.png"] = (lambda p: cv2.imwrite(str(p), GRAY), GRAY)
    c["ünïcødé-ß.png"] = (lambda p: p.write_bytes(cv2.imencode(".png", GRAY)[1].tobytes()), GRAY)

    def exif_rotated(p):
        im = Image.fromarray(GRAY, "L")
        exif = im.getexif()
        exif[0x0112] = 6                            # "rotate 90° clockwise to display"
        im.save(p, quality=100, exif=exif)
    clockwise = np.rot90(GRAY, k=-1).astype(int)   # orientation 6: the stored image, turned 90° clockwise
    c["exif_rotated.jpeg"] = (exif_rotated, lambda a: a.shape == clockwise.shape
                              and np.abs(a.astype(int) - clockwise).mean() < 3
                              and np.abs(a.astype(int) - np.rot90(GRAY, k=1)).mean() > 30)

    def truncated(p):
        cv2.imwrite(str(p), RNG.integers(0, 256, (64, 64), dtype=np.uint8))
        p.write_bytes(p.read_bytes()[:400])
    c["truncated.jpeg"] = (truncated, "skip:truncated")
    c["zero_bytes.jpeg"] = (lambda p: p.write_bytes(b""), "skip:empty file")
    c["text.jpeg"] = (lambda p: p.write_text("this is a text file"), "skip:not a decodable image")
    c["bomb.png"] = (lambda p: _png_header_only(p, 20_000, 20_000), "skip:refused")

    def broken_png(p):
        cv2.imwrite(str(p), GRAY)
        data = bytearray(p.read_bytes())
        p.write_bytes(bytes(data[:60]))
    c["broken.png"] = (broken_png, "skip:not a decodable image")
    d16 = RNG.integers(0, 4096, (16, 20), dtype=np.uint16)
    c["mono2.dcm"] = (lambda p: write_dicom(p, d16), _minmax(d16))
    c["mono1.dcm"] = (lambda p: write_dicom(p, d16, "MONOCHROME1"), _minmax(d16.max() - d16.astype(np.int64)))
    c["rescaled.dcm"] = (lambda p: write_dicom(p, d16, slope=2.0, intercept=-1024), _minmax(d16 * 2.0 - 1024))
    c["nopixels.dcm"] = (lambda p: write_dicom(p, d16, with_pixels=False), "skip:no pixel data")
    c["not_really.dcm"] = (lambda p: p.write_bytes(b"DICM?" * 10), "skip:not a valid DICOM")
    return c


CASES = _cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_case_has_its_documented_outcome(tmp_path, name):
    write, expected = CASES[name]
    path = tmp_path / name
    write(path)
    if isinstance(expected, str):
        with pytest.raises(ImageReadError, match=expected.split(":", 1)[1]) as info:
            read_gray(path)
        assert info.value.path == str(path)
        return
    img = read_gray(path)
    assert img.dtype == np.uint8 and img.ndim == 2
    if callable(expected):
        assert expected(img)
    else:
        np.testing.assert_array_equal(img, expected)


def test_whole_corpus_loads_without_crashing_and_reports_every_skip(tmp_path):
    import pandas as pd
    paths = []
    for name, (write, _) in CASES.items():
        write(tmp_path / name)
        paths.append(str(tmp_path / name))
    out = load_images(pd.DataFrame({"path": paths, "label_idx": 0}), 32, progress=False)
    skipped = {Path(p).name for p, _ in out.skipped}
    assert skipped == {n for n, (_, e) in CASES.items() if isinstance(e, str)}
    assert out.images.shape == (len(CASES) - len(skipped), 32, 32)


def _layout(root, splits=("train", "test"), classes=("NORMAL", "PNEUMONIA")):
    """One good image per split/class folder, with the folder names given (their case included)."""
    for split in splits:
        for cls in classes:
            (root / split / cls).mkdir(parents=True)
            cv2.imwrite(str(root / split / cls / "ok.png"), GRAY)
    return root


def test_scan_ignores_junk_and_follows_case_insensitive_folders(tmp_path):
    root = _layout(tmp_path / "chest_xray", ("TRAIN", "test"), ("normal", "Pneumonia"))
    junk = root / "TRAIN" / "normal"
    (junk / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (junk / ".hidden.png").write_bytes(b"x")
    (junk / "folder.jpeg").mkdir()                                   # a directory named like an image
    os.symlink(junk / "loop.png", junk / "loop.png")                 # a symlink loop
    (junk / "notes.txt").write_text("x")
    (junk / "ok_mask.png").write_bytes(b"x")                         # a mask, not a sample
    (root / "__MACOSX" / "train" / "NORMAL").mkdir(parents=True)
    (root / ".Trash").mkdir()
    df = scan_dataset(root)
    assert len(df) == 4 and set(df.split) == {"train", "test"}
    assert df[(df.split == "train") & (df.label == "NORMAL")].mask_path.iloc[0].endswith("ok_mask.png")


def test_non_utf8_file_name_is_scanned_and_read(tmp_path):
    root = _layout(tmp_path / "chest_xray")
    raw = os.fsencode(root / "train" / "NORMAL") + b"/latin1-\xe9\xff.png"     # not valid UTF-8
    with open(raw, "wb") as f:
        f.write(cv2.imencode(".png", GRAY)[1].tobytes())
    df = scan_dataset(root)
    odd = [p for p in df.path if "latin1" in p]
    assert len(odd) == 1
    np.testing.assert_array_equal(read_gray(odd[0]), GRAY)


def test_missing_split_is_a_clear_error(tmp_path):
    root = _layout(tmp_path / "chest_xray", ("train",))
    df = scan_dataset(root)
    with pytest.raises(DatasetLayoutError, match=r"split folder\(s\) missing: .*test") as info:
        require_splits(df, "train", "test", root=root)
    assert "expected layout" in str(info.value)
