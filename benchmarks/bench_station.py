"""Station speed: processed frames/s of `leuk-edge serve` at 1280x720 with 0, 1 and 3 MJPEG viewers, and the model
calls per processed frame in each case.

    python benchmarks/bench_station.py [--seconds 20] [--repeats 2] [--threads 2] [--model M.onnx]

The station runs as `leuk-edge serve` does (uvicorn + the shared pipeline thread over a synthetic 1280x720
drifting-field video, --loop, --pace 0 = as fast as the pipeline goes) with the from-scratch CNN at 256x256
(random weights; exported once and cached by bench_stream.py). Each viewer is a separate process reading
/api/stream.mjpg over HTTP on 127.0.0.1, so the viewers' CPU use is part of the measurement (as it would not be on a
station serving a tablet: an upper bound on the cost); the window opens once every viewer is reading. Configurations alternate (0, 1, 3, 0, 1, 3, ...) so machine noise hits all alike; the
median run is reported. Model calls are counted at the ONNX session (`Classifier.predict`), not by the hub.
Writes benchmarks/results/bench_station.{md,json}.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, log, machine_info, markdown_table, write_results  # noqa: E402

VIEWER = r"""
import sys, time, httpx
url, seconds = sys.argv[1], float(sys.argv[2])
n, ready = 0, False
with httpx.stream("GET", url, timeout=30) as r:
    for chunk in r.iter_bytes():
        n += chunk.count(b"--frame\r\n")
        if n and not ready:  # reading: the parent's measuring window may begin
            print("ready", flush=True)
            ready, n, t0 = True, 0, time.perf_counter()
        if ready and time.perf_counter() - t0 > seconds:
            break
print(n, time.perf_counter() - t0, flush=True)
"""


def serve(station):
    from leuk_edge.station.app import create_app
    from leuk_edge.station.server import StationServer, bind

    sock = bind("127.0.0.1", 0)
    server = StationServer(create_app(station), station)
    station.hub.start()
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{sock.getsockname()[1]}"


def measure(station, base: str, viewers: int, seconds: float, calls: list) -> dict:
    hub = station.hub
    procs = [subprocess.Popen([sys.executable, "-c", VIEWER, f"{base}/api/stream.mjpg", str(seconds + 1.0)],
                              stdout=subprocess.PIPE, text=True) for _ in range(viewers)]
    for p in procs:  # the window begins once every viewer has started up (imports cost CPU) and is reading
        assert p.stdout.readline().strip() == "ready"
    time.sleep(0.5)
    f0, c0, w0, t0 = hub.stats.frames, len(calls), hub.frames_with_cells, time.perf_counter()
    time.sleep(seconds)
    f1, c1, w1, t1 = hub.stats.frames, len(calls), hub.frames_with_cells, time.perf_counter()
    got = [p.communicate(timeout=60)[0].split() for p in procs]
    frames = f1 - f0
    return {"viewers": viewers, "fps": frames / (t1 - t0), "frames": frames, "model_calls": c1 - c0,
            "frames_with_cells": w1 - w0, "calls_per_frame": (c1 - c0) / max(frames, 1),
            "viewer_fps": [round(int(n) / float(t), 2) for n, t in got]}


class _Timer:
    """run_stream's `window` for the baseline: the frame is annotated as in the station; stop after `seconds`."""

    def __init__(self, seconds: float):
        self.deadline = time.perf_counter() + seconds

    def show(self, bgr) -> bool:
        return time.perf_counter() < self.deadline

    def close(self) -> None:
        pass


def baseline(station, video: Path, options, seconds: float, calls: list) -> dict:
    """The same pipeline without the station: run_stream over the video (annotation drawn, no server, no JPEG)."""
    from leuk_edge.edge.sources import open_source
    from leuk_edge.edge.stream import run_stream

    station.hub.pause(True)
    time.sleep(0.5)
    c0 = len(calls)
    s = run_stream(open_source(str(video)), station.clf, options, window=_Timer(seconds))
    station.hub.pause(False)
    return {"viewers": "stream only", "fps": s["fps"], "frames": s["frames"], "model_calls": len(calls) - c0,
            "frames_with_cells": None, "calls_per_frame": (len(calls) - c0) / max(s["frames"], 1), "viewer_fps": []}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--cells", type=int, default=5)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--model", type=Path, default=None)
    args = ap.parse_args()

    from bench_stream import ensure_model

    from leuk_edge import DISCLAIMER
    from leuk_edge.edge.detect import DetectorConfig
    from leuk_edge.edge.stream import StreamOptions
    from leuk_edge.station.app import build_station
    from leuk_edge.synth.fields import FieldConfig, write_fields

    model = args.model or ensure_model(RESULTS / f"cnn{args.size}_random.onnx", args.size)
    with tempfile.TemporaryDirectory(prefix="leuk_station_") as tmp:
        tmp = Path(tmp)
        cfg = FieldConfig(width=args.width, height=args.height, um_per_px=0.15, leukocytes=args.cells)
        write_fields(tmp / "fields", frames=0, video_frames=150, fps=30.0, cfg=cfg, seed=0)
        options = StreamOptions(detector=DetectorConfig(um_per_px=0.15))
        station = build_station(model, tmp / "work", source=str(tmp / "fields" / "drift.mp4"), loop=True, pace=0,
                                device="cpu", threads=args.threads, options=options)
        calls = []
        real = station.clf.predict
        station.clf.predict = lambda *a, **k: (calls.append(1), real(*a, **k))[1]
        server, thread, base = serve(station)
        time.sleep(3.0)  # warm-up
        runs: dict = {"stream only": [], 0: [], 1: [], 3: []}
        for r in range(args.repeats):
            for v in runs:
                res = (baseline(station, tmp / "fields" / "drift.mp4", options, args.seconds, calls)
                       if v == "stream only" else measure(station, base, v, args.seconds, calls))
                log(f"repeat {r + 1}: {v} viewer(s): {res['fps']:.2f} fps, {res['calls_per_frame']:.3f} calls/frame, "
                    f"viewers {res['viewer_fps']}")
                runs[v].append(res)
        station.hub.stopping.set()
        server.should_exit = True
        thread.join(15)
        station.close()
    table = []
    for v, rs in runs.items():
        med = sorted(rs, key=lambda x: x["fps"])[len(rs) // 2]
        table.append({**med, "fps_runs": [round(x["fps"], 2) for x in rs]})
    base_fps = table[1]["fps"]
    machine = machine_info(("onnxruntime", "cv2", "numpy", "fastapi", "uvicorn"))
    env = {"resolution": f"{args.width}x{args.height}", "cells": args.cells, "model": f"cnn {args.size} (random)",
           "ort_threads": args.threads, "cpus": machine["logical_cores"], "cpu": machine["cpu"], "machine": machine}
    lines = [f"# station benchmark ({env['resolution']}, ~{args.cells} cells in view, {env['model']}, "
             f"{args.threads} ORT threads, {env['cpus']} CPUs; viewers are separate processes on the same machine)",
             "", markdown_table(
                 ["MJPEG viewers", "processed frames/s", "vs station, 0 viewers", "model calls / frame",
                  "frames with cells", "frames/s each viewer received"],
                 [[str(r["viewers"]), f"{r['fps']:.2f}", f"{r['fps'] / base_fps:.2f}x",
                   f"{r['calls_per_frame']:.3f} ({r['model_calls']}/{r['frames']})",
                   "-" if r["frames_with_cells"] is None else str(r["frames_with_cells"]), ", ".join(f"{x:.1f}" for x in r["viewer_fps"]) or "-"]
                  for r in table]), "",
             "fps per run: " + "; ".join(f"{r['viewers']} viewer(s): {r['fps_runs']}" for r in table),
             "'stream only': run_stream on the same video and model in the same process, frames annotated, no server "
             "(the pipeline the station wraps). Model calls are counted at Classifier.predict; a frame without "
             "cells needs no call, and the window edges can split a frame's call from its count (+-1).", "", DISCLAIMER]
    write_results(RESULTS, "bench_station", "\n".join(lines) + "\n", {"environment": env, "rows": table})
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
