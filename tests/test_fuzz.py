"""Decoder fuzzing: 600 seeded mutations of real PNG, JPEG, TIFF (8 and 16 bit) and DICOM bytes. Each must give an
image or an ImageReadError naming the file, within 2 s; the run happens in a child process, so a crash or a
hang is a test failure, not a dead test session, and its peak memory is measured."""
import json
import subprocess
import sys

import cv2
import numpy as np
from conftest import SHARED, write_dicom


def _seed_files(folder):
    rng = np.random.default_rng(0)
    film = (np.linspace(30, 220, 96)[None, :] + rng.normal(0, 10, (80, 96))).clip(0, 255).astype(np.uint8)
    cv2.imwrite(str(folder / "film.png"), film)
    cv2.imwrite(str(folder / "film.jpg"), film, [cv2.IMWRITE_JPEG_QUALITY, 90])
    cv2.imwrite(str(folder / "film.tif"), film)
    cv2.imwrite(str(folder / "film16.tif"), film.astype(np.uint16) * 200)
    write_dicom(folder / "film.dcm", film.astype(np.uint16) * 16)
    real = SHARED / "dicom" / "nih-chestxray14-no-finding.dcm"
    if real.is_file():                                  # the real NIH DICOM, when ../shared is there
        (folder / "nih.dcm").write_bytes(real.read_bytes())


def test_600_mutated_files_each_decode_or_are_refused_naming_the_file_within_2_s(tmp_path):
    _seed_files(tmp_path)
    out = subprocess.run([sys.executable, "-m", "xai_cxr.testing.fuzz", str(tmp_path), "600", "1"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]                        # no crash (a segfault would be -11)
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["cases"] == 600 and summary["failures"] == [], summary["failures"][:5]
    assert summary["counts"].get("refused", 0) > 0 and summary["counts"].get("image", 0) > 0
    assert summary["peak_rss_mb"] < 2000
