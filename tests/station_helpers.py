"""Shared by the station tests: a real uvicorn server in a thread on 127.0.0.1 (a free port), and SSE/MJPEG readers."""

from __future__ import annotations

import contextlib
import json
import threading
import time

import httpx
import numpy as np


@contextlib.contextmanager
def serve_in_thread(station):
    from leuk_edge.station.app import create_app
    from leuk_edge.station.server import StationServer, bind

    sock = bind("127.0.0.1", 0)
    server = StationServer(create_app(station), station)
    if station.hub:
        station.hub.start()
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "the station did not start"
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        if station.hub:
            station.hub.stopping.set()
        server.should_exit = True
        thread.join(15)
        station.close()
        sock.close()


def sse_events(base: str, since: int = 0, params: dict | None = None, timeout: float = 30.0) -> list[dict]:
    """Every `data:` of /api/events from `since` until the server ends the stream (a finished source)."""
    out = []
    with httpx.stream("GET", f"{base}/api/events", params={"since": since, **(params or {})}, timeout=timeout) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                out.append(json.loads(line[6:]))
    return out


def mjpeg_frames(base: str, n: int, params: dict | None = None, timeout: float = 20.0) -> list[bytes]:
    """The first `n` JPEG parts of /api/stream.mjpg."""
    frames, buf = [], b""
    with httpx.stream("GET", f"{base}/api/stream.mjpg", params=params or {}, timeout=timeout) as r:
        assert r.status_code == 200, r.status_code
        assert r.headers["content-type"].startswith("multipart/x-mixed-replace")
        for chunk in r.iter_bytes():
            buf += chunk
            while True:
                start = buf.find(b"\r\n\r\n")
                if not buf.startswith(b"--frame") or start < 0:
                    break
                head = buf[:start].decode()
                size = int(next(h for h in head.split("\r\n") if h.lower().startswith("content-length")).split(":")[1])
                if len(buf) < start + 4 + size + 2:
                    break
                frames.append(buf[start + 4:start + 4 + size])
                buf = buf[start + 4 + size + 2:]
            if len(frames) >= n:
                break
    return frames[:n]


def wait_until(predicate, timeout: float = 20.0, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("condition not met in time")


def make_cam_onnx(path, size: int = 32, threshold: float = 0.5):
    """The tiny model plus a `cam` output (N x size/4 x size/4: the darkness of each 4x4 block), as an exported
    model with explanations has."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from tiny_models import make_tiny_onnx

    model = onnx.load(str(make_tiny_onnx(path, size=size, threshold=threshold)))
    g = model.graph
    g.node.extend([
        helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("AveragePool", ["nchw"], ["pooled"], kernel_shape=[4, 4], strides=[4, 4]),
        helper.make_node("ReduceMean", ["pooled", "one"], ["grey"], keepdims=0),
        helper.make_node("Neg", ["grey"], ["cam"]),
    ])
    g.initializer.append(numpy_helper.from_array(np.array([1], np.int64), "one"))
    g.output.append(helper.make_tensor_value_info("cam", TensorProto.FLOAT, ["N", size // 4, size // 4]))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def wait_in_page(page, expression: str, timeout: float = 15.0, every_ms: int = 100):
    """Poll a JS expression from Python until it is truthy. (Playwright's wait_for_function polls with eval inside
    the page, which the station page's Content-Security-Policy rightly forbids; page.evaluate is not affected.)"""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = page.evaluate(expression)
        if value:
            return value
        page.wait_for_timeout(every_ms)
    raise AssertionError(f"not true in the page within {timeout} s: {expression}")
