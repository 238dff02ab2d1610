"""Take a trained model to the tools people already use: a TensorFlow SavedModel (TF Serving, ``tf.saved_model.load``)
or an ONNX file (onnxruntime on any machine), written by Keras 3's own ``model.export``.

What is exported is the whole decision path after decoding: the input is the film as the model card says it must
be prepared (decoded to grayscale, brought to ``image_size`` by the card's geometry, CLAHE-equalised when the card
says so) as **uint8 (batch, size, size)**; inside are the three-channel copy, the backbone's own preprocessing, the
network and the fitted temperature; the output is the **calibrated class probabilities** the app and the API show.
Every export is checked before it is kept: the exported file, loaded back by its own runtime, must give the Keras
model's calibrated probabilities on a batch of films within ``PARITY_ATOL`` (float32), or the export is deleted and
the difference reported. ``export.json`` records the files' SHA-256 and that batch, so ``check_export`` refuses a
corrupted or mismatched folder later.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

from ..config import atomic_path, write_json_atomic, write_text_atomic
from ..models import ModelFolder
from ..tasks import get_task

FORMATS = {"savedmodel": "model", "onnx": "model.onnx"}   # format → what is written inside the export folder
PARITY_ATOL = 1e-5          # float32 probabilities: the exported graph runs the same ops in another runtime


class ExportError(RuntimeError):
    """An export that must not be used: the reason and the fix are in the message."""


def serving_model(model, card, temperature: float = 1.0):
    """A Keras model uint8 films (B, S, S) [(B, S, S, 3) for a colour card] → calibrated probabilities (B, K):
    ``model`` with its input preparation and the temperature folded in."""
    import keras
    import tensorflow as tf

    from ..data import to_model_input
    from ..models import BACKBONES
    shape = (card.image_size, card.image_size, 3) if card.color else (card.image_size, card.image_size)
    films = keras.Input(shape, dtype="uint8", name="film")
    preprocess = BACKBONES[card.backbone].preprocess
    sigmoid = get_task(card.task).activation == "sigmoid"
    t = float(temperature)

    def calibrate(p):                      # probabilities of logits / T, as models.calibration.apply_temperature
        p = tf.clip_by_value(tf.cast(p, tf.float32), 1e-30, 1.0)
        if sigmoid:
            logits = tf.math.log(p) - tf.math.log(tf.clip_by_value(1.0 - p, 1e-30, 1.0))
            return tf.sigmoid(logits / t)
        return tf.nn.softmax(tf.math.log(p) / t, axis=-1)

    x = keras.layers.Lambda(lambda f: to_model_input(f, preprocess), name="prepare")(films)   # as training does
    probabilities = keras.layers.Lambda(calibrate, name="calibrated")(model(x, training=False))
    return keras.Model(films, probabilities, name=f"{card.backbone}_calibrated")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file()):
        h.update(f.relative_to(path.parent).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _size_bytes(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run_export(path: Path, fmt: str, films: np.ndarray) -> np.ndarray:
    """Probabilities of the exported model at ``path`` on uint8 ``films``, through the format's own runtime."""
    if fmt == "onnx":
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ExportError("onnxruntime is not installed: pip install 'xai-cxr[export]'") from exc
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: films})[0]
    import tensorflow as tf
    loaded = tf.saved_model.load(str(path))
    return loaded.serve(tf.constant(films)).numpy()


def _probe_films(card, n: int = 8, seed: int = 0) -> np.ndarray:
    """Phantom films at the card's size: the parity batch when the user gives none."""
    from ..data.phantom import make_phantom
    rng = np.random.default_rng(seed)
    films = np.stack([make_phantom(rng, card.image_size, n_lesions=i % 3)[0] for i in range(n)])
    return np.repeat(films[..., None], 3, axis=-1) if card.color else films


def export(weights_dir: str | Path, fmt: str, out_dir: str | Path, films: np.ndarray | None = None) -> dict:
    """Export the model in ``weights_dir`` as ``fmt`` (``FORMATS``) into ``out_dir``, check parity on ``films``
    (uint8 at the card's size; phantoms when None) and write the card, ``export.json`` and a README beside it.
    Returns the summary written to ``export.json``; raises ``ExportError`` (nothing left behind) on a parity miss."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose from {list(FORMATS)}")
    if fmt == "onnx":
        for name in ("tf2onnx", "onnx", "onnxruntime"):
            try:
                __import__(name)
            except ImportError as exc:
                raise ExportError(f"ONNX export needs {name}: pip install 'xai-cxr[export]'") from exc
    weights_dir, out = Path(weights_dir), Path(out_dir)
    saved = ModelFolder(weights_dir)
    model, card = saved.load()                                   # FileNotFoundError names a missing card / weights
    temperature = saved.temperature()
    films = _probe_films(card) if films is None else np.asarray(films, np.uint8)
    expected = get_task(card.task).calibrate(np.asarray(model(_model_input(films, card), training=False)),
                                             temperature).astype(np.float32)
    out.mkdir(parents=True, exist_ok=True)
    target = out / FORMATS[fmt]
    if target.exists():
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    wrapped = serving_model(model, card, temperature)
    wrapped(films[:1])                      # Keras's ONNX export wants a model that has been called once
    wrapped.export(str(target), format="tf_saved_model" if fmt == "savedmodel" else "onnx", verbose=False)
    got = run_export(target, fmt, films)
    diff = float(np.abs(got - expected).max())
    if not diff <= PARITY_ATOL:
        shutil.rmtree(target) if target.is_dir() else target.unlink()
        raise ExportError(f"the {fmt} export of {weights_dir} gives probabilities up to {diff:.2e} away from the "
                          f"Keras model's (tolerance {PARITY_ATOL:g}); nothing was kept. Report it with your "
                          "TensorFlow / Keras / onnxruntime versions")
    with atomic_path(out / "parity_films.npz") as tmp:
        np.savez_compressed(tmp, films=films, probabilities=expected)
    card.save(out)
    ood = saved.detector()
    summary = {"format": fmt, "file": FORMATS[fmt], "sha256": _sha256(target), "size_bytes": _size_bytes(target),
               "weights_sha256": saved.weights_sha256(), "temperature": temperature,
               "parity_max_abs_diff": diff, "parity_tolerance": PARITY_ATOL, "parity_films": int(len(films)),
               "input": {"name": "film", "dtype": "uint8",
                         "shape": ["batch", card.image_size, card.image_size] + ([3] if card.color else []),
                         "geometry": card.geometry, "clahe": card.clahe,
                         "channels": "RGB" if card.color else "grayscale (copied to 3 channels inside)"},
               "output": {"name": "probabilities", "classes": list(card.class_names), "threshold": card.threshold,
                          "calibrated": True},
               "out_of_distribution_detector": "not exported: it reads the network's features at several depths; use "
                                               "the package (xai_cxr.serve.inference.Predictor: it also refers films) "
                                               "for it"
               if ood else "none was fitted for this model"}
    write_json_atomic(summary, out / "export.json")
    write_text_atomic(_readme(summary, card), out / "README.md")
    return summary


def _model_input(films: np.ndarray, card):
    from ..data import to_model_input
    from ..models import BACKBONES
    return to_model_input(films, BACKBONES[card.backbone].preprocess)


def check_export(out_dir: str | Path) -> dict:
    """Refuse an export folder that is corrupted (its file's SHA-256 differs from ``export.json``) or that does not
    reproduce its own parity batch; returns ``export.json`` when it is sound."""
    out = Path(out_dir)
    try:
        summary = json.loads((out / "export.json").read_text())
    except (OSError, ValueError) as exc:
        raise ExportError(f"{out / 'export.json'} cannot be read ({exc}): not an xai-cxr export; export again") from exc
    target = out / summary["file"]
    if not target.exists() or _sha256(target) != summary["sha256"]:
        raise ExportError(f"{target} is missing or changed since it was exported (SHA-256 differs from "
                          "export.json): export again")
    batch = np.load(out / "parity_films.npz")
    diff = float(np.abs(run_export(target, summary["format"], batch["films"]) - batch["probabilities"]).max())
    if not diff <= summary["parity_tolerance"]:
        raise ExportError(f"{target} gives probabilities {diff:.2e} away from the model it was exported from: "
                          "a mismatched export; export again")
    return summary


def _readme(s: dict, card) -> str:
    shape = "×".join(str(d) for d in s["input"]["shape"])
    prep = f"{s['input']['geometry']} to {card.image_size}×{card.image_size}" + \
        (", then CLAHE (OpenCV, clip 2, 8×8 tiles)" if s["input"]["clahe"] else "")
    run = ("import onnxruntime as ort\nsession = ort.InferenceSession('model.onnx')\n"
           "probabilities = session.run(None, {'film': films})[0]      # films: uint8 " + shape) \
        if s["format"] == "onnx" else \
        ("import tensorflow as tf\nmodel = tf.saved_model.load('model')\n"
         "probabilities = model.serve(tf.constant(films)).numpy()     # films: uint8 " + shape)
    return f"""# {card.backbone} pneumonia classifier — exported by xai-cxr ({s['format']})

*Research use only. Not a medical device and not a diagnosis.*

- **Input** `film`: uint8, shape {shape}; {s['input']['channels']}. Prepare each film as the model was trained:
  decode to grayscale, {prep}.
- **Output**: calibrated probabilities of {', '.join(s['output']['classes'])} (temperature {s['temperature']:.3f}
  folded in). Decision threshold on the last class: {s['output']['threshold']:g}.
- **Checked**: on {s['parity_films']} films this file gives the Keras model's probabilities within
  {s['parity_max_abs_diff']:.1e} (tolerance {s['parity_tolerance']:g}); `xai_cxr.serve.export.check_export(folder)`
  repeats the check and refuses a changed file.
- **Out-of-distribution detector**: {s['out_of_distribution_detector']}.
- Weights SHA-256 `{s['weights_sha256']}`; file SHA-256 `{s['sha256']}`; {s['size_bytes'] / 1e6:.1f} MB.

```python
{run}
```
"""
