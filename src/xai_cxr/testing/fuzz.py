"""Seeded mutations of real image bytes, to throw thousands of malformed files at the decoder.

``mutants(seeds, n, rng)`` yields (name, bytes): bit flips, truncations, overwritten windows, and format-aware
edits — absurd widths/heights in PNG IHDR, JPEG SOF and DICOM Rows/Columns, a wrong DICOM transfer syntax.
Used by ``tests/test_fuzz.py`` (≥ 500 cases) and ``benchmarks/fuzz_decoder.py`` (≥ 5,000). The contract it
checks: ``decode_image`` returns an image or raises ``ImageReadError`` naming the file, fast, in bounded memory.
"""
from __future__ import annotations

import io
import struct

import numpy as np

HUGE = (0, 1, 65535, 0x7FFFFFFF, 0xFFFFFFFF)


def flip_bits(data: bytes, rng, k: int | None = None) -> bytes:
    buf = bytearray(data)
    for _ in range(k or int(rng.integers(1, 33))):
        i = int(rng.integers(0, len(buf)))
        buf[i] ^= 1 << int(rng.integers(0, 8))
    return bytes(buf)


def truncate(data: bytes, rng) -> bytes:
    return data[:int(rng.integers(0, len(data)))]


def overwrite(data: bytes, rng) -> bytes:
    buf = bytearray(data)
    start = int(rng.integers(0, len(buf)))
    n = int(rng.integers(1, 256))
    buf[start:start + n] = rng.integers(0, 256, min(n, len(buf) - start), dtype=np.uint8).tobytes()
    return bytes(buf)


def png_dims(data: bytes, rng) -> bytes:
    """IHDR width/height (big-endian at bytes 16-24) set to absurd values (the chunk CRC left stale)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return flip_bits(data, rng)
    w, h = (int(rng.choice(HUGE)) for _ in range(2))
    return data[:16] + struct.pack(">II", w, h) + data[24:]


def jpeg_dims(data: bytes, rng) -> bytes:
    """Height/width of the first SOF0/SOF2 segment set to absurd values."""
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        i = data.find(marker)
        if i > 0:
            h, w = (int(rng.choice(HUGE)) & 0xFFFF for _ in range(2))
            return data[:i + 5] + struct.pack(">HH", h, w) + data[i + 9:]
    return flip_bits(data, rng)


def dicom_edit(data: bytes, rng) -> bytes:
    """Rows/Columns absurd, BitsAllocated odd, or a transfer syntax that does not match the pixel data."""
    import pydicom
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except Exception:
        return flip_bits(data, rng)
    kind = int(rng.integers(0, 3))
    if kind == 0:
        ds.Rows, ds.Columns = int(rng.choice(HUGE)) & 0xFFFF, int(rng.choice(HUGE)) & 0xFFFF
    elif kind == 1:
        ds.BitsAllocated = int(rng.choice([1, 7, 12, 24, 64]))
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=False)
    data = out.getvalue()
    if kind == 2:            # patched in the bytes: pydicom refuses to write native pixels under such a syntax
        explicit = b"1.2.840.10008.1.2.1\x00"
        wrong = [b"1.2.840.10008.1.2.5\x00", b"1.2.840.10008.1.2.2\x00", b"1.2.3.4.5.6.7.8.9.10"]
        data = data.replace(explicit, wrong[int(rng.integers(0, len(wrong)))], 1)
    return data


GENERIC = (flip_bits, truncate, overwrite)
BY_FORMAT = {".png": (png_dims,), ".jpg": (jpeg_dims,), ".jpeg": (jpeg_dims,), ".dcm": (dicom_edit,), ".tif": ()}


def mutants(seeds: dict[str, bytes], n: int, seed: int = 0):
    """``n`` mutated files (name, bytes), cycling through ``seeds`` {name: bytes}; seeded, so the same ``seed``
    gives the same cases. Names carry the case number, the source file and the mutation."""
    rng = np.random.default_rng(seed)
    names = sorted(seeds)
    for case in range(n):
        name = names[case % len(names)]
        suffix = "." + name.rsplit(".", 1)[-1].lower()
        ops = GENERIC + BY_FORMAT.get(suffix, ())
        op = ops[int(rng.integers(0, len(ops)))]
        yield f"case{case:05d}_{op.__name__}_{name}", op(seeds[name], rng)


def check(name: str, data: bytes) -> dict:
    """Decode one case: outcome "image" (a 2-D uint8 array), "refused" (ImageReadError naming ``name``) or
    "FAIL: ..." (anything else), with the seconds it took."""
    import time

    from ..data.decode import ImageReadError, decode_image
    t0 = time.perf_counter()
    try:
        img = decode_image(data, name)
        ok = isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 2 and img.size > 0
        outcome = "image" if ok else f"FAIL: returned {type(img).__name__} {getattr(img, 'shape', '')}"
    except ImageReadError as exc:
        outcome = "refused" if name in str(exc) else f"FAIL: error does not name the file: {exc}"
    except Exception as exc:                                    # the contract is broken: report, do not crash
        outcome = f"FAIL: {type(exc).__name__}: {str(exc)[:200]}"
    return {"name": name, "outcome": outcome, "seconds": time.perf_counter() - t0}


def run(seed_dir: str, n: int, seed: int = 0, time_limit: float = 2.0) -> dict:
    """Mutate every file of ``seed_dir`` into ``n`` cases, decode each, summarise: counts by outcome, the
    slowest case, peak RSS, and every failure (a wrong outcome or a case slower than ``time_limit``)."""
    from pathlib import Path
    seeds = {p.name: p.read_bytes() for p in sorted(Path(seed_dir).iterdir()) if p.is_file()}
    results = [check(name, data) for name, data in mutants(seeds, n, seed)]
    failures = [r for r in results if r["outcome"].startswith("FAIL") or r["seconds"] > time_limit]
    counts: dict[str, int] = {}
    for r in results:
        key = "fail" if r["outcome"].startswith("FAIL") else r["outcome"]
        counts[key] = counts.get(key, 0) + 1
    slowest = max(results, key=lambda r: r["seconds"])
    return {"cases": len(results), "seed_files": sorted(seeds), "counts": counts, "failures": failures,
            "slowest": slowest, "peak_rss_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM). Not ``getrusage``'s ru_maxrss: Linux keeps that across
    ``execve``, so a child started from a big process (pytest with TensorFlow loaded) would report its parent's."""
    from pathlib import Path
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    import json
    import sys
    print(json.dumps(run(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 0)))
