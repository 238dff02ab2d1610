"""Peak memory while *training* from memory vs from the disk-backed image store (data/store.py), over 1k and 20k
phantom films at 128 px, one epoch of a small CNN, each run in a fresh process. Reports peak anonymous RSS (the
memory the process owns; memory-mapped file pages are page cache the kernel can drop and are reported apart) and
training images/s. Writes benchmarks/results/store_memory.json.

    python benchmarks/store_memory.py [--sizes 1000 20000]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "store_memory.json"

CHILD = r'''
import os, sys, json, time, threading
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np, keras
from keras import layers
from xai_cxr.data import load_images, make_dataset, scan_dataset
from xai_cxr.data.store import load_images_stored
root, n, mode, store = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
peak = {"anon": 0.0, "file": 0.0}
def sample():
    while True:
        vals = {}
        for line in open("/proc/self/status"):
            if line.startswith(("RssAnon:", "RssFile:")):
                vals[line.split(":")[0]] = int(line.split()[1]) / 1024
        peak["anon"] = max(peak["anon"], vals.get("RssAnon", 0))
        peak["file"] = max(peak["file"], vals.get("RssFile", 0))
        time.sleep(0.05)
threading.Thread(target=sample, daemon=True).start()
df = scan_dataset(root)
df = df[df.split == "train"].head(n)
t0 = time.time()
data = load_images(df, 128, progress=False) if mode == "memory" else load_images_stored(df, 128, store, progress=False)
decode_s = time.time() - t0
inp = keras.Input((128, 128, 3))
x = layers.Conv2D(16, 3, strides=2, activation="relu")(inp)
x = layers.Conv2D(32, 3, strides=2, activation="relu")(x)
model = keras.Model(inp, layers.Dense(2, activation="softmax")(layers.GlobalAveragePooling2D()(x)))
model.compile("adam", "categorical_crossentropy")
ds = make_dataset(data.images, data.labels, lambda v: v / 255.0, batch_size=64, shuffle=True)
t0 = time.time()
model.fit(ds, epochs=1, verbose=0)
train_s = time.time() - t0
time.sleep(0.2)
print(json.dumps({"n": len(data.images), "mode": mode, "decode_s": decode_s,
                  "train_img_per_s": len(data.images) / train_s, "peak_rss_anon_mb": peak["anon"],
                  "peak_rss_file_mb": peak["file"]}))
'''


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 20000])
    args = p.parse_args(argv)
    from xai_cxr.data.phantom import PhantomConfig, write_phantom_dataset
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = write_phantom_dataset(Path(tmp) / "p", PhantomConfig(image_size=128, n_train=max(args.sizes) // 2,
                                                                    n_test=1))
        for n in args.sizes:
            for mode in ("memory", "store"):
                out = subprocess.run([sys.executable, "-c", CHILD, str(root), str(n), mode, str(Path(tmp) / "store")],
                                     capture_output=True, text=True, timeout=3600)
                if out.returncode:
                    print(out.stderr[-2000:])
                    return 1
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(rows[-1], flush=True)
    RESULTS.write_text(json.dumps({"date": dt.date.today().isoformat(),
                                   "command": "python benchmarks/store_memory.py --sizes " + " ".join(map(str,
                                                                                                          args.sizes)),
                                   "runs": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
