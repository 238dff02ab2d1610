"""The repository page's pictures from a trained model on real films: the sample grid of Kermany test films (top 5%
of Grad-CAM heat in red; true class, predicted class, calibrated probability and the decision, answer or refer, in
each title) and a screenshot of the app answering a Kermany film and referring an adult film from another hospital,
plus one page of the HTML report.

    python tools/real_film_figures.py --weights-dir benchmarks/runs/recipe-seed7/weights
    python tools/real_film_figures.py --weights-dir ... --screenshot      # needs Chromium (Debian's `chromium`)
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
KERMANY = SHARED / "kermany224" / "chest_xray"
EXTERNAL = SHARED / "external-adult" / "chest_xray" / "test"


def sample_grid_figure(weights_dir: Path, out: Path, n: int = 8, seed: int = 42) -> Path:
    """A balanced pick of ``n`` Kermany test films (the pipeline's ``pick_samples``) through the predictor: its
    decision, calibrated probability and Grad-CAM, drawn by ``explain.overlay.sample_grid``."""
    from xai_cxr.data import load_images, scan_dataset
    from xai_cxr.explain.overlay import sample_grid
    from xai_cxr.pipeline import pick_samples, save_figure
    from xai_cxr.serve.inference import Predictor
    predictor = Predictor.from_weights_dir(weights_dir)
    card = predictor.card
    df = scan_dataset(KERMANY)
    test = load_images(df[df.split == "test"], card.image_size, progress=False, clahe=card.clahe,
                       geometry=card.geometry)
    idx = pick_samples(test.labels, n, seed)
    preds = predictor.predict(test.images[idx])
    predicted = np.array([card.class_names.index(p.label) for p in preds])
    heats = predictor.explain(test.images[idx], "gradcam", targets=predicted)
    fig = sample_grid(test.images[idx], heats, test.labels[idx], predicted, [p.confidence for p in preds],
                      card.class_names, decisions=[p.decision for p in preds])
    fig.suptitle(f"Grad-CAM on Kermany test films, {card.backbone} at {card.image_size} px: top 5% of heat in red; "
                 "title: prediction (calibrated probability) → decision", fontsize=10)
    return save_figure(fig, out)


def first_referred(weights_dir: Path, paths: list[Path]) -> Path:
    """The first of ``paths`` (in order) that the model refers on its own (no folder verdict for a single film)."""
    from xai_cxr.serve.inference import Predictor
    predictor = Predictor.from_weights_dir(weights_dir)
    for path in paths:
        if predictor.predict(predictor.load(path.read_bytes(), str(path))[None])[0].decision == "refer":
            return path
    raise SystemExit(f"none of the {len(paths)} films is referred by the model in {weights_dir}")


def screenshot(weights_dir: Path, out_dir: Path) -> list[Path]:
    """The app in headless Chromium (as its browser test drives it): a Kermany pneumonia film, then the first adult
    normal film from another hospital that the model refers; and the HTML report of the adult film, rendered."""
    import os
    import signal
    import socket
    import subprocess
    import time

    from playwright.sync_api import sync_playwright
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not chromium:
        sys.exit("no Chromium: install Debian's `chromium` (apt-get install chromium)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "xai_cxr.cli", "app", "--port", str(port), "--weights-dir",
                             str(weights_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    films = {"answered": sorted((KERMANY / "test" / "PNEUMONIA").iterdir())[0],
             "referred": first_referred(weights_dir, sorted((EXTERNAL / "NORMAL").iterdir()))}
    shots = []
    try:
        for _ in range(240):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.5)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            for what, film in films.items():
                page = browser.new_page(viewport={"width": 1280, "height": 1700})
                page.goto(f"http://127.0.0.1:{port}", timeout=120_000)
                page.get_by_text("Research use only").first.wait_for(timeout=120_000)
                page.locator("input[type=file]").set_input_files(str(film))
                page.get_by_text("Download report (HTML)").first.wait_for(timeout=300_000)
                time.sleep(2)
                shot = out_dir / f"app_{what}.png"
                page.screenshot(path=str(shot), full_page=True)
                shots.append(shot)
                if what == "referred":
                    with page.expect_download() as download:
                        page.get_by_text("Download report (HTML)").first.click()
                    html = out_dir / "report_referred.html"
                    download.value.save_as(str(html))
                    report = browser.new_page(viewport={"width": 1000, "height": 1300})
                    report.goto(html.resolve().as_uri())
                    shot = out_dir / "report_referred.png"
                    report.screenshot(path=str(shot), full_page=False)
                    html.unlink()
                    shots.append(shot)
                page.close()
            browser.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    return shots


def main(argv=None) -> int:
    from xai_cxr.runtime import quiet_tensorflow
    quiet_tensorflow()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights-dir", type=Path, required=True)
    p.add_argument("--grid", type=Path, default=ROOT / "sample_results" / "kermany_sample_results.png")
    p.add_argument("--screenshot", action="store_true")
    p.add_argument("--shots", type=Path, default=ROOT / "docs" / "images")
    args = p.parse_args(argv)
    print(sample_grid_figure(args.weights_dir, args.grid))
    if args.screenshot:
        args.shots.mkdir(parents=True, exist_ok=True)
        for shot in screenshot(args.weights_dir, args.shots):
            print(shot, f"{shot.stat().st_size / 1e3:.0f} kB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
