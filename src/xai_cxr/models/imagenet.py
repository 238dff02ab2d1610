"""ImageNet weights as Keras gets them: the file in ``~/.keras/models/`` when present, else one download there
with ``keras.utils.get_file`` and the published hash checked; any failure is a ``WeightsNotFoundError`` naming
the URL and the fixes, raised before any image is decoded."""
from __future__ import annotations

import os
from pathlib import Path

from .backbones import get_backbone

NO_DOWNLOAD_ENV = "XAI_CXR_NO_DOWNLOAD"       # set to 1 to forbid any download (as --no-download does)


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained weights were asked for but could not be had (not on disk, and no download possible)."""


def keras_models_dir() -> Path:
    """Keras's download cache, ``$KERAS_HOME/models`` (default ``~/.keras/models``)."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


def imagenet_available(backbone: str = "vgg19") -> bool:
    """The backbone's ImageNet file is already on disk (no network needed)."""
    spec = get_backbone(backbone)
    return spec.imagenet_file is not None and (keras_models_dir() / spec.imagenet_file).is_file()


def download_allowed(allow: bool | None = None) -> bool:
    """``allow`` when given, else True unless the environment variable XAI_CXR_NO_DOWNLOAD is set (not 0)."""
    if allow is not None:
        return allow
    return os.environ.get(NO_DOWNLOAD_ENV, "").strip().lower() in ("", "0", "false", "no")


def fetch_imagenet(backbone: str, allow_download: bool | None = None, origin: str | None = None,
                   file_hash: str | None = "keras", timeout: float = 30.0) -> str:
    """Path of the backbone's ImageNet "notop" weights, as Keras gets them: the file in ``~/.keras/models/``
    when present (trusted as is), otherwise downloaded there once with ``keras.utils.get_file`` (progress bar,
    Keras's published hash checked). ``origin``/``file_hash`` override the URL and hash ("keras" = the
    published one; None = no check). Any failure — offline, refused, timed out, wrong hash — raises
    ``WeightsNotFoundError`` naming the URL and the fixes; no partial or unverified file is left behind."""
    import socket
    spec = get_backbone(backbone)
    if spec.imagenet_file is None:
        raise WeightsNotFoundError(f"backbone {backbone!r} has no ImageNet weights; use --weights none "
                                   "or --weights PATH")
    path = keras_models_dir() / spec.imagenet_file
    if path.is_file():
        return str(path)
    url = origin or spec.imagenet_url
    if file_hash == "keras":
        file_hash = spec.imagenet_md5

    def fail(reason: str):
        return WeightsNotFoundError(
            f"ImageNet weights for {backbone} could not be had: {reason}\n"
            f"  Fix: on a machine with internet, download\n    {url}\n  and copy it to {path}\n"
            f"  (or pass --weights /path/to/{spec.imagenet_file}). Without ImageNet weights, train the compact "
            f"CNN made for that case: --backbone cxr-small (notebook: BACKBONE = \"cxr-small\").")

    if not download_allowed(allow_download):
        raise fail(f"not in {path.parent}, and downloads are switched off (--no-download or {NO_DOWNLOAD_ENV})")
    import keras
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)            # urllib has no timeout of its own here: no hang when offline
    try:
        got = keras.utils.get_file(spec.imagenet_file, url, cache_subdir="models", file_hash=file_hash,
                                   cache_dir=str(keras_models_dir().parent))
    except ValueError as exc:                    # Keras keeps a file whose hash is wrong: remove it
        path.unlink(missing_ok=True)
        raise fail(f"the downloaded file failed the hash check ({exc})") from exc
    except Exception as exc:                     # noqa: BLE001 - Keras wraps URLError/HTTPError in Exception
        path.unlink(missing_ok=True)
        raise fail(f"download failed ({exc})") from exc
    finally:
        socket.setdefaulttimeout(old)
    return got


def resolve_weights(backbone: str, weights: str | None, allow_download: bool | None = None):
    """Map "imagenet" | "none" | PATH to a local file path (or None); "imagenet" downloads like Keras when
    the file is missing (``fetch_imagenet``). An ensemble with "imagenet" gives one path per member."""
    spec = get_backbone(backbone)
    if weights in (None, "none", "None"):
        return None
    if spec.members and weights == "imagenet":
        return [resolve_weights(m, "imagenet", allow_download) for m in spec.members]
    if weights == "imagenet":
        return fetch_imagenet(backbone, allow_download)
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(f"weights file not found: {path} (use --weights imagenet|none|PATH)")
    return str(path)
