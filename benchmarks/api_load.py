"""Bounded load test of the HTTP API (`xai-cxr serve --phantom`): N requests from C concurrent clients against
localhost, with request batching on (max batch 16) and off (max batch 1) side by side, same model, same images.
Reports throughput, p50/p95 latency and lost requests. Writes benchmarks/results/api_load_ENDPOINT.json + a table.

    python benchmarks/api_load.py [--requests 200] [--clients 8] [--endpoint predict|explain] [--mc-passes 20]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import httpx
import numpy as np

RESULTS = Path(__file__).parent / "results"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(max_batch: int, port: int, mc_passes: int):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "-1"}
    proc = subprocess.Popen([sys.executable, "-m", "xai_cxr.cli", "serve", "--phantom", "--weights-dir", "no-such-dir",
                             "--port", str(port),
                             "--max-batch", str(max_batch), "--max-wait-ms", "10", "--mc-passes", str(mc_passes)],
                             env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):                       # the first start may train the phantom model (~40 s)
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("server did not start")


def load(port: int, images: list[bytes], clients: int, endpoint: str) -> dict:
    url = f"http://127.0.0.1:{port}/{endpoint}"

    def one(i):
        t = time.perf_counter()
        try:
            r = client.post(url, files={"file": (f"{i}.png", images[i % len(images)], "image/png")})
            return time.perf_counter() - t, r.status_code
        except httpx.HTTPError as exc:
            return time.perf_counter() - t, type(exc).__name__

    with httpx.Client(timeout=120, limits=httpx.Limits(max_connections=clients)) as client:
        one(0)                                             # warm-up: first call traces the graphs
        t0 = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            results = list(pool.map(one, range(args.requests)))
        wall = time.perf_counter() - t0
        health = client.get(url.rsplit("/", 1)[0] + "/health").json()
    lat = np.array([r[0] for r in results]) * 1000
    ok = sum(r[1] == 200 for r in results)
    return {"requests": len(results), "ok": ok, "lost": len(results) - ok, "wall_s": round(wall, 2),
            "throughput_rps": round(len(results) / wall, 2), "p50_ms": round(float(np.percentile(lat, 50)), 1),
            "p95_ms": round(float(np.percentile(lat, 95)), 1),
            "mean_batch": round((health["requests_batched"] - 1) / max(1, health["batches"] - 1), 2),
            "model": f"{health['backbone']} {health['image_size']}px, {health['source']}"}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--endpoint", choices=["predict", "explain"], default="predict")
    ap.add_argument("--mc-passes", type=int, default=20)
    args = ap.parse_args()
    from xai_cxr.data.phantom import make_phantom
    images = [cv2.imencode(".png", make_phantom(np.random.default_rng(s), 256, n_lesions=s % 3)[0])[1].tobytes()
              for s in range(32)]
    rows = {}
    for name, max_batch in (("batching off (max batch 1)", 1), ("batching on (max batch 16)", 16)):
        port = _free_port()
        proc = start_server(max_batch, port, args.mc_passes)
        try:
            rows[name] = load(port, images, args.clients, args.endpoint)
        finally:
            proc.terminate()
            proc.wait(30)
        print(name, rows[name])
    off, on = rows["batching off (max batch 1)"], rows["batching on (max batch 16)"]
    result = {"endpoint": args.endpoint, "clients": args.clients, "mc_passes": args.mc_passes,
              "model": on["model"], "machine": platform.processor() or
              platform.machine(), "cpus": os.cpu_count(), "runs": rows,
              "throughput_ratio_on_vs_off": round(on["throughput_rps"] / off["throughput_rps"], 2),
              "p95_ratio_off_vs_on": round(off["p95_ms"] / on["p95_ms"], 2)}
    OUT = RESULTS / f"api_load_{args.endpoint}.json"
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2))
    print(f"\n| /{args.endpoint}, {args.requests} requests, {args.clients} clients | req/s | p50 ms | p95 ms | "
          "mean batch | lost |\n|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['throughput_rps']} | {r['p50_ms']} | {r['p95_ms']} | {r['mean_batch']} | {r['lost']} |")
    print(f"throughput ratio on/off {result['throughput_ratio_on_vs_off']}×, p95 ratio off/on "
          f"{result['p95_ratio_off_vs_on']}× → {OUT}")
