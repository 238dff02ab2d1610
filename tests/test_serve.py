"""The HTTP API over a real socket: uvicorn on localhost, httpx as the client."""
import base64
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from conftest import write_dicom  # noqa: E402


def _serve(app):
    """Run ``app`` with uvicorn on a free loopback port in a thread: (url, stop)."""
    import uvicorn
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(100):
        if server.started:
            break
        time.sleep(0.1)

    def stop():
        server.should_exit = True
        thread.join(10)
    return f"http://127.0.0.1:{port}", stop


@pytest.fixture(scope="module")
def api(phantom_weights):
    from xai_cxr.serve.api import create_app
    from xai_cxr.serve.inference import Predictor
    predictor = Predictor.from_weights_dir(phantom_weights, mc_passes=5)
    app = create_app(predictor, max_batch=8, max_wait_ms=50, max_bytes=2_000_000)
    url, stop = _serve(app)
    yield url, predictor, app
    stop()


def test_with_a_token_every_endpoint_but_health_needs_the_bearer(phantom_weights):
    from xai_cxr.serve.api import create_app
    from xai_cxr.serve.inference import Predictor
    url, stop = _serve(create_app(Predictor.from_weights_dir(phantom_weights, mc_passes=1), token="s3cret"))
    try:
        files = {"file": ("a.png", _png(_xray()), "image/png")}
        assert httpx.get(f"{url}/health", timeout=30).status_code == 200           # open: a load balancer probes it
        for path in ("/predict", "/explain"):
            missing = httpx.post(f"{url}{path}", files=files, timeout=30)
            wrong = httpx.post(f"{url}{path}", files=files, headers={"Authorization": "Bearer nope"}, timeout=30)
            assert missing.status_code == wrong.status_code == 401 and "bearer token" in missing.json()["detail"]
            assert missing.headers["www-authenticate"] == "Bearer"
        assert httpx.get(f"{url}/openapi.json", timeout=30).status_code == 401
        ok = httpx.post(f"{url}/predict", files=files, headers={"Authorization": "Bearer s3cret"}, timeout=60)
        assert ok.status_code == 200 and set(ok.json()["probabilities"]) == {"NORMAL", "PNEUMONIA"}
        assert "out_of_distribution" in ok.json() and ok.json()["ood_score"] is not None
    finally:
        stop()


def test_serve_binds_loopback_by_default_and_reads_the_token_from_the_environment(monkeypatch):
    from xai_cxr.cli import build_parser
    from xai_cxr.serve import api
    args = build_parser().parse_args(["serve"])
    assert args.host == "127.0.0.1" and args.token is None
    seen = {}
    monkeypatch.setenv(api.TOKEN_ENV, "from-env")
    monkeypatch.setattr(api, "create_app", lambda *a, **k: seen.update(k) or "app")
    monkeypatch.setattr("xai_cxr.serve.inference.load_predictor", lambda *a, **k: _FakePredictor())
    monkeypatch.setattr("uvicorn.run", lambda app, **k: seen.update(k, app=app))
    api.serve()
    assert seen["token"] == "from-env" and seen["host"] == "127.0.0.1" and seen["app"] == "app"


class _FakePredictor:
    mc_passes = 1
    source = "fake"

    class card:
        backbone = "cxr-small"


def _png(img):
    return cv2.imencode(".png", img)[1].tobytes()


def _xray(seed=0, size=64):
    from xai_cxr.data.phantom import make_phantom
    return make_phantom(np.random.default_rng(seed), size, n_lesions=1)[0]


def test_predict_over_http_matches_the_predictor_in_process(api):
    url, predictor, _ = api
    img = _xray()
    r = httpx.post(f"{url}/predict", files={"file": ("a.png", _png(img), "image/png")}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    direct = predictor.predict(img[None], mc=False)[0]
    assert body["label"] == direct.label
    assert body["probabilities"] == pytest.approx(direct.probabilities, abs=1e-5)
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-5) and body["uncertainty"] >= 0


def test_explain_returns_the_overlay_png_of_the_gradcam_map(api):
    from xai_cxr.serve.inference import overlay_png
    url, predictor, _ = api
    img = _xray(1)
    r = httpx.post(f"{url}/explain", params={"method": "gradcam"},
                   files={"file": ("b.png", _png(img), "image/png")}, timeout=60)
    assert r.status_code == 200, r.text
    png = base64.b64decode(r.json()["overlay_png_base64"])
    target = predictor.class_names.index(r.json()["label"])
    expected = overlay_png(img, predictor.explain(img[None], "gradcam", targets=[target])[0])
    got, want = (cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR) for b in (png, expected))
    assert got.shape == (64, 64, 3) and np.abs(got.astype(int) - want).max() <= 1


def test_explain_offers_exactly_the_explainer_registry(api):
    from xai_cxr.explain.registry import EXPLAINERS
    url, _, _ = api
    r = httpx.post(f"{url}/explain", params={"method": "no-such-map"},
                   files={"file": ("b.png", _png(_xray(1)), "image/png")}, timeout=60)
    assert r.status_code == 422
    assert r.json()["detail"] == f"unknown method 'no-such-map'; choose from {list(EXPLAINERS)}"


def test_concurrent_requests_are_batched_and_none_is_lost(api):
    url, _, app = api
    before = len(app.state.batcher.batches)
    imgs = [_png(_xray(s)) for s in range(16)]
    with httpx.Client(timeout=60) as client, ThreadPoolExecutor(8) as pool:
        rs = list(pool.map(lambda b: client.post(f"{url}/predict", files={"file": ("x.png", b, "image/png")}), imgs))
    assert [r.status_code for r in rs] == [200] * 16
    sizes = app.state.batcher.batches[before:]
    assert sum(sizes) == 16 and max(sizes) > 1          # at least one forward pass served several requests


def test_dicom_upload_is_accepted_and_bad_input_gets_a_clear_status(api, tmp_path):
    url, _, _ = api
    write_dicom(tmp_path / "x.dcm", (_xray(2).astype(np.uint16) * 16), PatientName="Doe^Jane")
    ok = httpx.post(f"{url}/predict", files={"file": ("x.dcm", (tmp_path / "x.dcm").read_bytes())}, timeout=60)
    assert ok.status_code == 200 and "Doe" not in ok.text
    bad = httpx.post(f"{url}/predict", files={"file": ("notes.txt", b"hello", "text/plain")}, timeout=60)
    assert bad.status_code == 422 and "notes.txt" in bad.json()["detail"]
    big = httpx.post(f"{url}/predict", files={"file": ("big.png", b"\0" * 3_000_000)}, timeout=60)
    assert big.status_code == 413
    unknown = httpx.post(f"{url}/explain", params={"method": "magic"},
                         files={"file": ("a.png", _png(_xray()), "image/png")}, timeout=60)
    assert unknown.status_code == 422
    health = httpx.get(f"{url}/health", timeout=10).json()       # still serving after the bad requests
    assert health["status"] == "ok" and len(health["weights_sha256"]) == 64


def _raw(url, request, trickle=None, timeout=20.0):
    """Send bytes over a raw socket (one byte every ``trickle`` s if given); the HTTP status code or None."""
    host, port = url.rsplit("//", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        try:
            for i in range(0, len(request), 1 if trickle else len(request)):
                s.sendall(request[i:i + (1 if trickle else len(request))])
                if trickle:
                    time.sleep(trickle)
            line = s.recv(200).decode(errors="replace").split("\r\n")[0]
            return int(line.split()[1])
        except (socket.timeout, OSError, IndexError, ValueError):
            return None


HEAD = "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=XyZ\r\n"


def test_malformed_multipart_and_a_chunked_body_without_length_get_a_4xx(api):
    url, _, _ = api
    body = b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\nabc'   # never closed
    assert 400 <= _raw(url, (HEAD + f"Content-Length: {len(body)}\r\n\r\n").encode() + body) < 500
    chunked = (HEAD + "Transfer-Encoding: chunked\r\n\r\n").encode() + b"5\r\nhello\r\n0\r\n\r\n"
    assert 400 <= _raw(url, chunked) < 500
    assert _raw(url, (HEAD + "Content-Length: lots\r\n\r\n").encode()) in (400, 413)


def test_a_client_that_trickles_its_body_does_not_hold_up_other_requests(api):
    url, _, _ = api
    slow = threading.Thread(target=_raw, args=(url, (HEAD + "Content-Length: 5000\r\n\r\n").encode() + b"x" * 30),
                            kwargs={"trickle": 0.2}, daemon=True)
    slow.start()
    time.sleep(0.5)
    t0 = time.perf_counter()
    r = httpx.post(f"{url}/predict", files={"file": ("a.png", _png(_xray()), "image/png")}, timeout=60)
    assert r.status_code == 200 and time.perf_counter() - t0 < 10
    assert slow.is_alive()                                   # still trickling: it was not waited for


def test_serve_caps_malloc_arenas_unless_the_user_set_them(monkeypatch):
    """glibc's per-thread arenas made the API's RSS creep under load (benchmarks/api_soak.py); `serve` caps them
    with mallopt on Linux and leaves a user's MALLOC_ARENA_MAX alone."""
    import sys

    from xai_cxr.runtime import limit_malloc_arenas
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas() is False
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    assert limit_malloc_arenas() is sys.platform.startswith("linux")
