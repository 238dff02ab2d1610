"""Serving commands: ``report``, ``serve``, ``app``, ``export`` (and DICOM overlays for ``explain``/``report``)."""
from __future__ import annotations

import os
import sys
from pathlib import Path


def _dicom_references(images) -> dict:
    """--dicom-out: the source UIDs of every input, read before any work; a PNG/JPEG or a DICOM without its UIDs
    stops the command with the file and the reason."""
    from ..serve.dicom_out import DicomOutError, source_references
    refs, problems = {}, []
    for path in images:
        try:
            refs[str(Path(path))] = source_references(Path(path).read_bytes(), path)
        except (DicomOutError, OSError) as exc:
            problems.append(str(exc))
    if problems:
        sys.exit("error: --dicom-out refused:\n  " + "\n  ".join(problems))
    return refs


def _write_dicom_overlay(refs, overlay_rgb, label, confidence, weights_id, method, dest: Path) -> None:
    from ..config import atomic_path
    from ..serve.dicom_out import overlay_dataset, to_bytes
    data = to_bytes(overlay_dataset(refs, overlay_rgb, label, confidence, weights_id, method))
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    print(f"  DICOM overlay (Secondary Capture in the source's study) → {dest}")


def cmd_report(args):
    from ..data import ImageReadError
    from ..serve.inference import load_predictor
    from ..serve.report import write_report
    path = Path(args.image)
    refs = _dicom_references([args.image]) if args.dicom_out else {}
    predictor = load_predictor(args.weights_dir, allow_phantom=args.phantom)
    try:
        data = path.read_bytes()
        gray = predictor.load(data, path)
    except ImageReadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    pred = predictor.predict(gray[None], mc=args.mc_passes > 1, age_outside=[predictor.age_outside(data)])[0]
    target = [predictor.class_names.index(pred.label)]
    heats = {m: predictor.explain(gray[None], m, targets=target)[0] for m in args.methods}
    out = write_report(args.out, gray, heats, pred, predictor, path.name, args.top_fraction)
    said = f"REFER ({'; '.join(pred.reason_text)})" if pred.referred else \
        f"{pred.label} ({pred.confidence:.1%}, MC sd {pred.uncertainty:.3f})"
    print(f"{path.name}: {said} → {out}")
    if args.dicom_out:
        from ..explain.overlay import red_overlay
        method = args.methods[0]
        _write_dicom_overlay(refs[str(path)], red_overlay(gray, heats[method], args.top_fraction), pred.label,
                             pred.confidence, predictor.weights_id, method,
                             Path(args.dicom_out) / f"{path.stem}_{method}.dcm")


def cmd_serve(args):
    from ..runtime import limit_malloc_arenas
    from ..serve.api import serve
    limit_malloc_arenas()                       # before the request threads start: RSS stays flat under load
    serve(args.weights_dir, host=args.host, port=args.port, max_batch=args.max_batch,
          max_wait_ms=args.max_wait_ms, allow_phantom=args.phantom, mc_passes=args.mc_passes, token=args.token)


def cmd_app(args):
    import subprocess
    app = Path(__file__).parents[1] / "serve" / "app.py"
    os.environ["XAI_CXR_WEIGHTS_DIR"] = str(Path(args.weights_dir).resolve())
    os.environ.setdefault("MALLOC_ARENA_MAX", "2")     # a long-running server: see runtime.limit_malloc_arenas
    cmd = [sys.executable, "-m", "streamlit", "run", str(app), "--server.port", str(args.port),
           "--server.headless", "true", "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer",
           "--server.maxUploadSize", "20", "--server.address", args.address]
    print("starting", " ".join(cmd))
    sys.exit(subprocess.call(cmd))


def cmd_export(args):
    from ..serve.export import ExportError, export
    try:
        s = export(args.weights_dir, args.format, args.out)
    except ExportError as exc:
        sys.exit(f"error: {exc}")
    print(f"{args.format} export → {Path(args.out) / s['file']} ({s['size_bytes'] / 1e6:.1f} MB); calibrated "
          f"probabilities within {s['parity_max_abs_diff']:.1e} of the Keras model on {s['parity_films']} films "
          f"(tolerance {s['parity_tolerance']:g}); card, export.json and README.md beside it")
