"""Peak RSS of streaming evaluation + Grad-CAM over N phantom images (tiny model), for N = 1k and 10k,
each in a fresh process. Writes benchmarks/results/stream_memory.json and prints a table.

    python benchmarks/stream_memory.py [--sizes 1000 10000] [--image-size 128]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r'''
import os, sys, json, resource, time
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np, keras
from keras import layers
from xai_cxr.explain.cam import GradCAM
from xai_cxr.data import scan_dataset
from xai_cxr.data.stream import stream_predict
root, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
df = scan_dataset(root)
df = df[df.split == "train"].head(n)
inp = keras.Input((size, size, 3))
x = layers.Conv2D(8, 3, strides=2, activation="relu")(inp)
x = layers.Conv2D(8, 3, activation="relu", name="last_conv")(x)
out = layers.Dense(2, activation="softmax")(layers.GlobalAveragePooling2D()(x))
model = keras.Model(inp, out)
t0 = time.time()
res = stream_predict(model, df, size, lambda t: t / 255.0, chunk=256, cam=GradCAM(model, "last_conv"))
print(json.dumps({"n_images": int(len(res["proba"])), "seconds": round(time.time() - t0, 1),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''


def measure(root: Path, n: int, size: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(root), str(n), str(size)], check=True,
                         capture_output=True, text=True, env=dict(os.environ, CUDA_VISIBLE_DEVICES="-1"))
    return json.loads(out.stdout.strip().splitlines()[-1])


def phantom_root(n: int, size: int, where: Path) -> Path:
    from xai_cxr.data.phantom import PhantomConfig, write_phantom_dataset
    return write_phantom_dataset(where / "chest_xray", PhantomConfig(image_size=size, n_train=n // 2, n_test=1, seed=5))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--image-size", type=int, default=128)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        root = phantom_root(max(args.sizes), args.image_size, Path(tmp))
        print(f"wrote {max(args.sizes)} phantoms in {time.time() - t0:.0f} s")
        rows = [measure(root, n, args.image_size) for n in args.sizes]
    held = max(args.sizes) * args.image_size ** 2 / 2 ** 20
    result = {"image_size": args.image_size, "runs": rows,
              "rss_growth_mb": rows[-1]["peak_rss_mb"] - rows[0]["peak_rss_mb"],
              "uint8_images_if_held_mb": round(held, 1)}
    dest = Path(__file__).parent / "results" / "stream_memory.json"
    dest.parent.mkdir(exist_ok=True)
    dest.write_text(json.dumps(result, indent=2))
    print("| images | seconds | peak RSS (MB) |\n|---:|---:|---:|")
    for r in rows:
        print(f"| {r['n_images']} | {r['seconds']} | {r['peak_rss_mb']:.0f} |")
    print(f"growth {result['rss_growth_mb']:.0f} MB (holding the decoded images would take {held:.0f} MB) → {dest}")


if __name__ == "__main__":
    main()
