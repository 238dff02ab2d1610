"""Speed benchmark: the naive seed-style pipeline, the peer library tf-keras-vis and xai_cxr, side by
side in one process on the same images and the same VGG19. Writes benchmarks/results/speed.json.

    python benchmarks/speed.py [--part cam|inference|precision|train|rss|all] [--train 100] [--test 100]

* cam        Grad-CAM maps/s on VGG19 (block5_conv3): a per-image GradientTape loop as in the Keras Grad-CAM
             example, tf-keras-vis ``Gradcam``, xai_cxr batched (eager step and XLA), against model.predict images/s.
* inference  images/s of xai_cxr's evaluation path (uint8 store → tf.data → predict) vs raw model.predict on
             in-memory float tensors.
* precision  forward images/s in float32 vs mixed_bfloat16 (fresh subprocess: the policy is global).
* train      the full two-stage schedule (7 + 14 epochs, early stopping off so both paths run every epoch):
             naive = JPEG decoded every epoch by tf.data + the whole VGG19 every step; xai_cxr = decode once +
             frozen-feature cache. Stage epoch times, total wall time, final metrics.
* rss        peak RSS of decoding the full Kermany train + test splits at 256 px and streaming them through the
             tf.data pipeline (fresh subprocess).

Uses the 224-px Kermany copy in ../shared/data when present (phantoms otherwise). Random VGG19 weights unless the
ImageNet file is in the Keras cache: timing does not depend on the weights.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
KERMANY = HERE.parent.parent / "shared" / "data" / "kermany224" / "chest_xray"
TARGET = "block5_conv3"


def _root():
    from xai_cxr.data.phantom import PhantomConfig, write_phantom_dataset
    return KERMANY if KERMANY.is_dir() else write_phantom_dataset(RESULTS / "phantoms", PhantomConfig())


def _vgg19(size):
    from xai_cxr.config import ModelConfig
    from xai_cxr.models import build_model, imagenet_available
    from xai_cxr.models.train import seed_everything
    seed_everything(0, deterministic=False)
    weights = "imagenet" if imagenet_available() else "none"
    return build_model(ModelConfig(backbone="vgg19", weights=weights), size), weights


def _rate(fn, n, repeat=2):
    """Images per second of ``fn()`` processing ``n`` images: best of ``repeat`` timed runs after a warm-up."""
    fn()
    best = min(_timed(fn) for _ in range(repeat))
    return n / best


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def keras_example_gradcam(model, images, layer=TARGET):
    """The Keras Grad-CAM example (fchollet), one image per tape, as seed notebooks run it."""
    import keras
    import numpy as np
    import tensorflow as tf
    grad_model = keras.models.Model(model.inputs, [model.get_layer(layer).output, model.output])
    maps = []
    for img in images:
        with tf.GradientTape() as tape:
            conv, preds = grad_model(img[None])
            class_channel = preds[:, tf.argmax(preds[0])]
        grads = tape.gradient(class_channel, conv)
        pooled = tf.reduce_mean(grads, axis=(0, 1, 2))
        heat = tf.squeeze(conv[0] @ pooled[..., tf.newaxis])
        heat = tf.maximum(heat, 0) / (tf.math.reduce_max(heat) + 1e-7)
        maps.append(heat.numpy())
    return np.stack(maps)


def part_cam(args):
    import numpy as np
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
    from tf_keras_vis.utils.scores import CategoricalScore

    from xai_cxr.data import load_images, scan_dataset, to_model_input
    from xai_cxr.explain.cam import GradCAM
    from xai_cxr.models import BACKBONES
    size, n, bs = args.cam_size, args.cam_images, 16
    df = scan_dataset(_root())
    test = load_images(df[df.split == "test"].sample(n, random_state=0), size, progress=False)
    x = to_model_input(test.images, BACKBONES["vgg19"].preprocess).numpy()
    model, weights = _vgg19(size)
    targets = model.predict(x, batch_size=bs, verbose=0).argmax(1)
    ours, ours_xla = GradCAM(model, TARGET, bs), GradCAM(model, TARGET, bs, jit_compile=True)
    tkv = Gradcam(model, model_modifier=ReplaceToLinear(), clone=True)

    def run_tkv():
        for s in range(0, n, bs):
            tkv(CategoricalScore(list(targets[s:s + bs])), x[s:s + bs], penultimate_layer=TARGET)

    rates = {"model_predict": _rate(lambda: model.predict(x, batch_size=bs, verbose=0), n),
             "keras_example_loop": _rate(lambda: keras_example_gradcam(model, x), n),
             "tf_keras_vis_gradcam": _rate(run_tkv, n),
             "xai_cxr_gradcam": _rate(lambda: ours(x, targets), n),
             "xai_cxr_gradcam_xla": _rate(lambda: ours_xla(x, targets), n)}
    a, b = ours(x, targets), ours_xla(x, targets)
    best = max(rates["xai_cxr_gradcam"], rates["xai_cxr_gradcam_xla"])
    return {"image_size": size, "images": n, "batch_size": bs, "weights": weights,
            "maps_per_second": {k: round(v, 2) for k, v in rates.items()},
            "xla_max_abs_difference": float(np.abs(a - b).max()),
            "ours_vs_loop": round(best / rates["keras_example_loop"], 2),
            "ours_vs_tf_keras_vis": round(best / rates["tf_keras_vis_gradcam"], 2),
            "ours_vs_predict": round(best / rates["model_predict"], 2)}


def part_inference(args):
    from xai_cxr.data import load_images, scan_dataset, to_model_input
    from xai_cxr.models import BACKBONES
    from xai_cxr.models.predict import predict_images
    size, n = args.cam_size, args.infer_images
    prep = BACKBONES["vgg19"].preprocess
    df = scan_dataset(_root())
    test = load_images(df[df.split == "test"].sample(n, random_state=1), size, progress=False)
    x = to_model_input(test.images, prep).numpy()
    model, _ = _vgg19(size)
    raw = _rate(lambda: model.predict(x, batch_size=32, verbose=0), n)
    ours = _rate(lambda: predict_images(model, test.images, prep, batch_size=32), n)
    return {"image_size": size, "images": n, "images_per_second": {"model_predict_in_memory": round(raw, 2),
                                                                  "xai_cxr_pipeline": round(ours, 2)},
            "ratio": round(ours / raw, 3)}


PRECISION_SCRIPT = """
import json, sys, time, numpy as np, keras
policy, size, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
keras.mixed_precision.set_global_policy(policy)
from xai_cxr.config import ModelConfig
from xai_cxr.models import build_model
keras.utils.set_random_seed(0)
m = build_model(ModelConfig(backbone="vgg19", weights="none"), size)
x = np.random.default_rng(0).normal(0, 50, (n, size, size, 3)).astype("float32")
m.predict(x[:16], batch_size=16, verbose=0)
t0 = time.perf_counter(); p = m.predict(x, batch_size=16, verbose=0); dt = time.perf_counter() - t0
print("RESULT" + json.dumps({"images_per_second": n / dt, "proba": np.asarray(p, "float32").tolist()}))
"""


def part_precision(args):
    import numpy as np
    out = {}
    for policy in ("float32", "mixed_bfloat16"):
        proc = subprocess.run([sys.executable, "-c", PRECISION_SCRIPT, policy, str(args.cam_size), "64"],
                              capture_output=True, text=True)
        line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")]
        out[policy] = json.loads(line[0][6:]) if line else {"error": proc.stderr[-500:]}
    res = {"image_size": args.cam_size, "images": 64,
           "images_per_second": {k: round(v.get("images_per_second", float("nan")), 2) for k, v in out.items()}}
    if all("proba" in v for v in out.values()):
        res["max_probability_difference"] = float(np.abs(np.array(out["float32"]["proba"]) -
                                                         np.array(out["mixed_bfloat16"]["proba"])).max())
        res["ratio"] = round(res["images_per_second"]["mixed_bfloat16"] / res["images_per_second"]["float32"], 2)
    return res


def naive_dataset(manifest, size, preprocess, batch_size=32, shuffle=False, seed=0):
    """Seed-style input: read + decode every JPEG on every epoch inside tf.data."""
    import numpy as np
    import tensorflow as tf
    ds = tf.data.Dataset.from_tensor_slices((manifest["path"].tolist(), manifest["label_idx"].to_numpy(np.int32)))
    if shuffle:
        ds = ds.shuffle(len(manifest), seed=seed, reshuffle_each_iteration=True)

    def load(path, y):
        img = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        img = tf.image.resize(tf.cast(img, tf.float32), (size, size))
        return preprocess(img), tf.one_hot(y, 2)
    return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(tf.data.AUTOTUNE)


def part_train(args):
    import numpy as np

    from xai_cxr.config import DataConfig, ModelConfig, TrainConfig
    from xai_cxr.models import BACKBONES, build_model, imagenet_available
    from xai_cxr.models.train import seed_everything, train_two_stage
    from xai_cxr.pipeline import evaluate_on_test, fit, prepare_data
    size = args.train_size
    data = DataConfig(root=str(_root()), image_size=size, limit=args.train, seed=0, batch_size=32)
    t0 = time.perf_counter()
    prep = prepare_data(data, progress=False)
    keep = np.sort(np.random.default_rng(0).permutation(len(prep.test.images))[:args.test])
    prep.test.images, prep.test.manifest = prep.test.images[keep], prep.test.manifest.iloc[keep].reset_index(drop=True)
    prep.val = prep.test
    decode_once = time.perf_counter() - t0
    weights = "imagenet" if imagenet_available() else "none"
    spec = BACKBONES["vgg19"]
    train_cfg = replace(TrainConfig(seed=0, verbose=0), early_stopping_patience=1000).with_epochs(args.epochs1,
                                                                                                  args.epochs2)
    rows = {}
    for name in ("naive", "xai_cxr"):
        seed_everything(0)
        model = build_model(ModelConfig(backbone="vgg19", weights=weights), size)
        t0 = time.perf_counter()
        if name == "naive":
            tr = naive_dataset(prep.train.manifest, size, spec.preprocess, shuffle=True)
            va = naive_dataset(prep.test.manifest, size, spec.preprocess)
            history = train_two_stage(model, tr, va, replace(train_cfg, feature_cache=False),
                                      RESULTS / "weights_naive", prep.class_weight, spec.finetune_from)
            total = time.perf_counter() - t0
        else:
            history = fit(model, prep, data, train_cfg, RESULTS / "weights_xai_cxr")
            total = time.perf_counter() - t0 + decode_once
        metrics, _ = evaluate_on_test(model, prep.test, data)
        rows[name] = {"total_train_seconds": round(total, 1),
                      "stage1_epoch_seconds": [round(s, 2) for s in history["stage1"]["epoch_seconds"]],
                      "stage2_epoch_seconds": [round(s, 2) for s in history["stage2"]["epoch_seconds"]],
                      "accuracy": metrics["accuracy"], "roc_auc": metrics["roc_auc"], "f1": metrics["f1"]}
        print(name, json.dumps(rows[name]), flush=True)
    n, c = rows["naive"], rows["xai_cxr"]
    med = lambda v: float(np.median(v))   # noqa: E731  (the first epoch includes tracing)
    return {"weights": weights, "image_size": size, "train_images": len(prep.train.images),
            "val_test_images": len(prep.test.images), "epochs": [args.epochs1, args.epochs2],
            "decode_once_seconds": round(decode_once, 1), "runs": rows,
            "speedup_total": round(n["total_train_seconds"] / c["total_train_seconds"], 2),
            "speedup_stage1_epoch": round(med(n["stage1_epoch_seconds"]) / med(c["stage1_epoch_seconds"]), 1),
            "speedup_stage2_epoch": round(med(n["stage2_epoch_seconds"]) / med(c["stage2_epoch_seconds"]), 1),
            "accuracy_difference_points": round(100 * abs(n["accuracy"] - c["accuracy"]), 2)}


RSS_SCRIPT = """
import json, resource, sys, time
from xai_cxr.config import DataConfig
from xai_cxr.data import make_dataset
from xai_cxr.models import BACKBONES
from xai_cxr.pipeline import prepare_data
t0 = time.perf_counter()
prep = prepare_data(DataConfig(root=sys.argv[1], image_size=256), progress=False)
n = 0
for x, y in make_dataset(prep.train.images, prep.train.labels, BACKBONES["vgg19"].preprocess, 2, 32, shuffle=True):
    n += len(x)
print("RESULT" + json.dumps({"train_images": len(prep.train.images), "test_images": len(prep.test.images),
      "batches_streamed": n, "seconds": time.perf_counter() - t0,
      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def part_rss(args):
    proc = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(_root())], capture_output=True, text=True)
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")]
    return json.loads(line[0][6:]) if line else {"error": proc.stderr[-800:]}


PARTS = {"cam": part_cam, "inference": part_inference, "precision": part_precision, "train": part_train,
         "rss": part_rss}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=[*PARTS, "all"], default="all")
    ap.add_argument("--cam-size", type=int, default=224)
    ap.add_argument("--cam-images", type=int, default=32)
    ap.add_argument("--infer-images", type=int, default=256)
    ap.add_argument("--train", type=int, default=100)
    ap.add_argument("--test", type=int, default=100)
    ap.add_argument("--train-size", type=int, default=160)
    ap.add_argument("--epochs1", type=int, default=7)
    ap.add_argument("--epochs2", type=int, default=14)
    args = ap.parse_args()
    RESULTS.mkdir(exist_ok=True)
    dest = RESULTS / "speed.json"
    result = json.loads(dest.read_text()) if dest.is_file() else {}
    for name in (PARTS if args.part == "all" else [args.part]):
        t0 = time.perf_counter()
        result[name] = PARTS[name](args) | {"measured": time.strftime("%Y-%m-%d %H:%M"),
                                            "data": "kermany224" if KERMANY.is_dir() else "phantoms"}
        print(name, json.dumps(result[name], indent=1), f"({time.perf_counter() - t0:.0f} s)", flush=True)
        dest.write_text(json.dumps(result, indent=2))
    print("→", dest, "; peak RSS of this process", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, "MB")


if __name__ == "__main__":
    main()
