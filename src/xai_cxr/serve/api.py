"""HTTP inference API (FastAPI): ``POST /predict``, ``POST /explain``, ``GET /health``.

Concurrent requests are queued and run as one batch on the model (up to ``max_batch`` images, waiting at most
``max_wait_ms`` for a batch to fill), in one worker thread so the model is never called concurrently.
Uploads above ``MAX_UPLOAD_BYTES`` are refused with 413 before they are read; undecodable files, DICOMs without
pixels and decompression bombs with 422 and the reason; the service keeps serving.

Access: ``serve`` binds 127.0.0.1 unless told otherwise; with a token (``--token`` or ``XAI_CXR_API_TOKEN``)
every endpoint but ``/health`` needs ``Authorization: Bearer <token>`` (401 otherwise)."""

import asyncio
import base64
import hmac
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass

import cv2
import numpy as np

from ..explain.registry import EXPLAINERS
from .inference import MAX_UPLOAD_BYTES, Predictor, overlay_png


@dataclass
class Job:
    gray: np.ndarray
    method: str | None          # None: predict only
    fraction: float = 0.05
    age_outside: bool | None = None     # the DICOM header's age outside the training population (never the age)


class Batcher:
    """Collects jobs from concurrent requests and runs them through ``run_batch`` together."""

    def __init__(self, predictor: Predictor, max_batch: int = 16, max_wait_ms: float = 10.0):
        self.predictor, self.max_batch, self.max_wait = predictor, max_batch, max_wait_ms / 1000
        self.queue: asyncio.Queue = asyncio.Queue()
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="model")
        self.batches: list[int] = []            # sizes of the batches run, for /health and the load test

    async def submit(self, job: Job):
        fut = asyncio.get_running_loop().create_future()
        await self.queue.put((job, fut))
        return await fut

    async def loop(self):
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            deadline = loop.time() + self.max_wait
            while len(items) < self.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    items.append(await asyncio.wait_for(self.queue.get(), timeout))
                except asyncio.TimeoutError:
                    break
            self.batches.append(len(items))
            try:
                results = await loop.run_in_executor(self.pool, self.run_batch, [j for j, _ in items])
                for (_, fut), r in zip(items, results):
                    if not fut.done():
                        fut.set_result(r)
            except Exception as exc:        # one bad batch fails its requests, not the service
                for _, fut in items:
                    if not fut.done():
                        fut.set_exception(exc)

    def run_batch(self, jobs: list[Job]) -> list[dict]:
        grays = np.stack([j.gray for j in jobs])
        preds = self.predictor.predict(grays, age_outside=[j.age_outside for j in jobs])
        out = [p.as_dict() for p in preds]
        for method in {j.method for j in jobs if j.method}:
            idx = [i for i, j in enumerate(jobs) if j.method == method]
            targets = [self.predictor.class_names.index(preds[i].label) for i in idx]
            heats = self.predictor.explain(grays[idx], method, targets=np.array(targets))
            for i, h in zip(idx, heats):
                out[i]["method"] = method
                out[i]["overlay_png_base64"] = base64.b64encode(overlay_png(grays[i], h, jobs[i].fraction)).decode()
        return out


TOKEN_ENV = "XAI_CXR_API_TOKEN"
OPEN_PATHS = ("/health",)


def _add_guards(app, max_bytes: int, token: str | None) -> None:
    """Middleware: the bearer token (when set) on every path but /health, then the body-size limit."""
    from fastapi.responses import JSONResponse

    @app.middleware("http")
    async def limit_size(request, call_next):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > max_bytes + 64 * 1024):
            return JSONResponse({"detail": f"request body {length} bytes exceeds the {max_bytes / 1e6:.0f} MB limit"
                                 if length.isdigit() else "invalid Content-Length"},
                                status_code=413 if length.isdigit() else 400)
        return await call_next(request)

    if token:
        expected = f"Bearer {token}".encode()

        @app.middleware("http")                      # added last = runs first: no body is read without the token
        async def require_token(request, call_next):
            if request.url.path not in OPEN_PATHS and not hmac.compare_digest(
                    request.headers.get("authorization", "").encode(), expected):
                return JSONResponse({"detail": "missing or wrong bearer token (Authorization: Bearer <token>)"},
                                    status_code=401, headers={"WWW-Authenticate": "Bearer"})
            return await call_next(request)


def create_app(predictor: Predictor, max_batch: int = 16, max_wait_ms: float = 10.0,
               max_bytes: int = MAX_UPLOAD_BYTES, token: str | None = None):
    """The FastAPI application around one loaded ``predictor``; ``token`` guards every path but /health."""
    from fastapi import FastAPI, File, HTTPException, Query, UploadFile

    from ..data import ImageReadError

    batcher = Batcher(predictor, max_batch, max_wait_ms)

    @asynccontextmanager
    async def lifespan(app):
        task = asyncio.create_task(batcher.loop())
        yield
        task.cancel()
        batcher.pool.shutdown(wait=False)

    app = FastAPI(title="xai-cxr", version="0.1.0", lifespan=lifespan,
                  description="Research use only, not a diagnosis. Chest X-ray classification with calibrated "
                              "confidence, MC-dropout uncertainty and Grad-CAM overlays.")
    app.state.batcher = batcher
    _add_guards(app, max_bytes, token)

    async def _read(file: UploadFile) -> bytes:
        data = await file.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise HTTPException(413, f"{file.filename}: larger than the {max_bytes / 1e6:.0f} MB limit")
        return data

    def _decode(data: bytes, name: str) -> np.ndarray:
        try:
            return predictor.load(data, name)
        except ImageReadError as exc:
            raise HTTPException(422, str(exc)) from exc

    async def _job(file: UploadFile, method: str | None = None, fraction: float = 0.05) -> Job:
        data = await _read(file)
        return Job(_decode(data, file.filename or "<upload>"), method, fraction, predictor.age_outside(data))

    @app.get("/health")
    def health():
        card = predictor.card
        return {"status": "ok", "backbone": card.backbone, "image_size": card.image_size,
                "geometry": card.geometry,
                "classes": list(card.class_names), "weights_sha256": predictor.weights_id,
                "source": predictor.source, "temperature": predictor.temperature,
                "requests_batched": sum(batcher.batches), "batches": len(batcher.batches),
                "disclaimer": "research use only, not a diagnosis"}

    @app.post("/predict")
    async def predict(file: UploadFile = File(...)):
        result = await batcher.submit(await _job(file))
        return {"file": file.filename, **result}

    @app.post("/explain")
    async def explain(file: UploadFile = File(...), method: str = Query("gradcam"),
                      fraction: float = Query(0.05, gt=0, le=1), dicom: bool = Query(False)):
        """``dicom=true`` (a DICOM upload only): the answer also carries ``overlay_dicom_base64``, the overlay as a
        DICOM Secondary Capture in the upload's study (serve/dicom_out.py)."""
        if method not in EXPLAINERS:
            raise HTTPException(422, f"unknown method {method!r}; choose from {list(EXPLAINERS)}")
        data, name = await _read(file), file.filename or "<upload>"
        refs = None
        if dicom:
            from .dicom_out import DicomOutError, source_references
            try:
                refs = source_references(data, name)
            except DicomOutError as exc:
                raise HTTPException(422, str(exc)) from exc
        result = await batcher.submit(Job(_decode(data, name), method, fraction, predictor.age_outside(data)))
        if refs is not None:
            from .dicom_out import overlay_dataset, to_bytes
            png = np.frombuffer(base64.b64decode(result["overlay_png_base64"]), np.uint8)
            rgb = cv2.cvtColor(cv2.imdecode(png, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            ds = overlay_dataset(refs, rgb, result["label"], result["confidence"], predictor.weights_id, method)
            result["overlay_dicom_base64"] = base64.b64encode(to_bytes(ds)).decode()
        return {"file": file.filename, **result}

    return app


def serve(weights_dir="saved_weights", host: str = "127.0.0.1", port: int = 8000, max_batch: int = 16,
          max_wait_ms: float = 10.0, allow_phantom: bool = False, mc_passes: int = 20,
          token: str | None = None) -> None:
    import uvicorn

    from .inference import load_predictor
    token = token or os.environ.get(TOKEN_ENV) or None
    predictor = load_predictor(weights_dir, allow_phantom)
    predictor.mc_passes = mc_passes
    print(f"serving {predictor.card.backbone} ({predictor.source}) on http://{host}:{port}  — docs at /docs")
    if token:
        print("every endpoint but /health needs 'Authorization: Bearer <token>'")
    elif host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: {host} is reachable from other machines and no --token / {TOKEN_ENV} is set: "
              "anyone who can reach the port can use the API")
    uvicorn.run(create_app(predictor, max_batch, max_wait_ms, token=token), host=host, port=port,
                log_level="warning")
