"""Resolving `--weights imagenet|none|PATH` for InceptionV3 without ever hanging offline."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

NOTOP_FILE = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
NOTOP_URL = "https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/" + NOTOP_FILE
# Overridable so tests can point the reachability probe at a closed local port.
DOWNLOAD_HOST = os.environ.get("LEUK_EDGE_IMAGENET_HOST", "storage.googleapis.com:443")


class WeightsError(ValueError):
    """The requested weights cannot be had; the message says how to pass a local file."""


def keras_cache_file() -> Path:
    home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    return home / "models" / NOTOP_FILE


def _reachable(hostport: str, timeout: float = 3.0) -> bool:
    """TCP connect with a hard deadline (DNS included, via a daemon thread): offline must fail in seconds."""
    host, port = hostport.rsplit(":", 1)
    ok = []

    def probe():
        try:
            socket.create_connection((host, int(port)), timeout=timeout).close()
            ok.append(True)
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return bool(ok)


def resolve_weights(spec: str | None):
    """-> None | "imagenet" | local path string, for keras.applications.InceptionV3(weights=...)."""
    if spec is None or str(spec).lower() == "none":
        return None
    if str(spec).lower() == "imagenet":
        cached = keras_cache_file()
        if cached.is_file():
            return str(cached)
        if not _reachable(DOWNLOAD_HOST):
            raise WeightsError(
                f"ImageNet weights are not in the Keras cache ({cached}) and {DOWNLOAD_HOST.split(':')[0]} "
                f"cannot be reached (offline?). On a connected machine download {NOTOP_URL} and pass "
                "--weights /path/to/" + NOTOP_FILE + " (or use --weights none)")
        return "imagenet"
    path = Path(spec)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path} (use imagenet, none, or a path to {NOTOP_FILE})")
    if not path.name.endswith(".h5"):
        raise WeightsError(f"weights file must be a Keras .h5 file such as {NOTOP_FILE}, got {path.name}")
    return str(path)
