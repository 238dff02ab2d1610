"""Soak test of the HTTP API over loopback: ≥ 2,000 requests from 16 clients, /predict and /explain mixed, 10% bad
files (garbage, truncated PNG, empty, a DICOM without pixels), against `xai-cxr serve --phantom` in its own
process. Checks: no request lost, every bad file a 4xx with a reason, the server's RSS growth; reports
p50/p95/p99 latency. Then the hostile cases: malformed multipart, a missing Content-Length (chunked body), a
client that trickles its body — each must end in a 4xx or a timeout while other requests keep being served.
Writes benchmarks/results/api_soak.json.

    python benchmarks/api_soak.py [--requests 2000] [--clients 16]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from api_load import _free_port, start_server  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "api_soak.json"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def payloads(n: int, seed: int = 0):
    """(name, bytes, is_bad) for n requests, 10% bad."""
    from xai_cxr.data.phantom import make_phantom
    rng = np.random.default_rng(seed)
    good = [cv2.imencode(".png", make_phantom(np.random.default_rng(i), 64, n_lesions=i % 2)[0])[1].tobytes()
            for i in range(20)]
    bad = [("garbage.png", b"not an image at all"), ("truncated.png", good[0][:60]), ("empty.png", b""),
           ("nopixels.dcm", b"\0" * 128 + b"DICM" + b"\0" * 64)]
    out = []
    for i in range(n):
        if rng.random() < 0.10:
            name, data = bad[int(rng.integers(0, len(bad)))]
            out.append((name, data, True))
        else:
            out.append((f"film{i}.png", good[int(rng.integers(0, len(good)))], False))
    return out


def soak(url: str, pid: int, n: int, clients: int) -> dict:
    jobs = payloads(n)
    rss = [rss_mb(pid)]
    rng = np.random.default_rng(1)
    endpoints = ["predict" if rng.random() < 0.7 else "explain" for _ in jobs]

    def one(i):
        name, data, is_bad = jobs[i]
        t0 = time.perf_counter()
        try:
            r = httpx.post(f"{url}/{endpoints[i]}", files={"file": (name, data, "application/octet-stream")},
                           timeout=120)
            status, detail = r.status_code, (r.json().get("detail") if r.status_code >= 400 else None)
        except httpx.HTTPError as exc:
            status, detail = None, str(exc)
        return {"bad": is_bad, "status": status, "detail": detail, "seconds": time.perf_counter() - t0}

    results = []
    with ThreadPoolExecutor(clients) as pool:
        for k, r in enumerate(pool.map(one, range(n))):
            results.append(r)
            if k % 200 == 0:
                rss.append(rss_mb(pid))
    rss.append(rss_mb(pid))
    good = [r for r in results if not r["bad"]]
    bad = [r for r in results if r["bad"]]
    lat = np.array([r["seconds"] for r in good])
    return {"requests": n, "clients": clients, "lost": sum(r["status"] is None for r in results),
            "good_ok": sum(r["status"] == 200 for r in good), "good": len(good),
            "bad": len(bad), "bad_4xx_with_reason": sum(400 <= (r["status"] or 0) < 500 and bool(r["detail"])
                                                       for r in bad),
            "latency_s": {q: float(np.percentile(lat, int(q[1:]))) for q in ("p50", "p95", "p99")},
            "rss_mb": rss_summary(rss, n)}


def rss_summary(trace: list[float], n: int) -> dict:
    """Server RSS from its trace (before any request, then after requests 1, 201, 401, …, then at the end).
    Warm-up = the first 20% of the requests (at least 400: the first /explain calls and every batch size build
    their graphs and buffers there); growth = end − RSS at the end of warm-up; slope = least-squares MB per 1,000
    requests over the second half."""
    k = np.array([0] + [1 + 200 * j for j in range(len(trace) - 2)] + [n], float)   # requests done at each sample
    v = np.array(trace, float)
    warm = max(400, n // 5)
    at_warm = float(v[np.argmin(np.abs(k - warm))])
    half = k >= n / 2
    slope = float(np.polyfit(k[half], v[half], 1)[0] * 1000) if half.sum() >= 2 else float("nan")
    return {"start": float(v[0]), "after_warmup": at_warm, "warmup_requests": warm, "end": float(v[-1]),
            "growth_after_warmup": float(v[-1]) - at_warm, "mb_per_1000_requests_second_half": slope,
            "every_200_requests": [round(x, 1) for x in trace]}


def raw(port: int, request: bytes, trickle: float | None = None, read_timeout: float = 30.0) -> str:
    """Send ``request`` over a raw socket (byte by byte every ``trickle`` s if given); the status line or why not."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as s:
        try:
            if trickle:
                for b in request:
                    s.sendall(bytes([b]))
                    time.sleep(trickle)
            else:
                s.sendall(request)
            return s.recv(200).decode(errors="replace").splitlines()[0]
        except (socket.timeout, OSError, IndexError) as exc:
            return f"no answer ({type(exc).__name__})"


def hostile(url: str, port: int) -> dict:
    boundary = "XyZ"
    body = f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\r\nabc".encode()
    malformed = (f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n").encode() + body             # no closing boundary
    chunked = (f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
               "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n").encode()   # no Content-Length
    slow_head = (f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
                 "Content-Length: 100000\r\n\r\n").encode()
    out = {"malformed_multipart": raw(port, malformed), "missing_content_length_chunked": raw(port, chunked)}
    slow = {}
    t = threading.Thread(target=lambda: slow.update(status=raw(port, slow_head + b"x" * 40, trickle=0.25,
                                                                read_timeout=20)))
    t.start()
    time.sleep(1.0)
    from xai_cxr.data.phantom import make_phantom
    png = cv2.imencode(".png", make_phantom(np.random.default_rng(0), 64)[0])[1].tobytes()
    t0 = time.perf_counter()
    r = httpx.post(f"{url}/predict", files={"file": ("a.png", png, "image/png")}, timeout=60)
    out["served_while_a_client_trickles"] = {"status": r.status_code, "seconds": time.perf_counter() - t0}
    t.join(60)
    out["trickling_client"] = slow.get("status", "still open after 60 s")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--mc-passes", type=int, default=5)
    p.add_argument("--malloc-arena-max", type=int, default=None,
                   help="run the server with glibc's MALLOC_ARENA_MAX (per-thread malloc arenas grow RSS "
                        "without a leak)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if args.malloc_arena_max:
        os.environ["MALLOC_ARENA_MAX"] = str(args.malloc_arena_max)    # inherited by the server process
    port = _free_port()
    proc = start_server(16, port, args.mc_passes)
    url = f"http://127.0.0.1:{port}"
    try:
        result = {"date": dt.date.today().isoformat(),
                  "command": " ".join(["python benchmarks/api_soak.py", *(argv if argv is not None else sys.argv[1:])]),
                  "malloc_arena_max": args.malloc_arena_max,
                  "soak": soak(url, proc.pid, args.requests, args.clients), "hostile": hostile(url, port)}
    finally:
        proc.terminate()
        proc.wait(30)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    s = result["soak"]
    ok = s["lost"] == 0 and s["good_ok"] == s["good"] and s["bad_4xx_with_reason"] == s["bad"] \
        and s["rss_mb"]["growth_after_warmup"] <= 50
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
