"""Station speed, side by side in one run: FP32 vs INT8 (`--precision`) with 0, 1 and 3 MJPEG viewers, at 1280x720.

    python benchmarks/bench_station.py [--seconds 20] [--repeats 2] [--precisions fp32,int8] [--threads 2]
                                       [--model M.onnx]

The station runs as `leuk-edge serve --precision P` does (uvicorn + the shared pipeline thread over a synthetic
1280x720 drifting-field video, --loop, --pace 0 = as fast as the pipeline goes) with the from-scratch CNN at 256x256
(random weights; exported once with its INT8 variant and cached by bench_stream.py). Each viewer is a separate
process reading /api/stream.mjpg over HTTP on 127.0.0.1, so the viewers' CPU use is part of the measurement (as it
would not be on a station serving a tablet: an upper bound on the cost); the window opens once every viewer is
reading. Per row: processed fps median and p5 (from the pipeline thread's time per frame inside the window), the
ratio to the same precision with no viewer, publish latency p50/p95 (frame taken -> annotated frame published to
the viewers, by the publish stage), model calls per processed frame (counted at Classifier.infer, the onnxruntime
call), JPEG encodes per published frame, the frames/s each viewer received, and the model-alone ceiling on the same
cells (each frame's crops through the same session, nothing else). Configurations alternate (stream only, 0, 1,
3, ...) so machine noise hits all alike; the median run is reported; precisions run one after the other (one
station each). Writes benchmarks/results/bench_station.{md,json}.
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

from common import (RESULTS, ModelCalls, fps_stats, log, machine_info, markdown_table, model_ceiling,  # noqa: E402
                    write_results)

VIEWER = r"""
import sys, time, httpx
url, seconds = sys.argv[1], float(sys.argv[2])
n, ready = 0, False
with httpx.stream("GET", url, timeout=30) as r:
    for chunk in r.iter_bytes():
        n += chunk.count(b"--frame\r\n")
        if n and not ready:  # reading: the parent's measuring window may begin
            print("ready", flush=True)
            ready, n, t0, c0 = True, 0, time.perf_counter(), time.process_time()
        if ready and time.perf_counter() - t0 > seconds:
            break
print(n, time.perf_counter() - t0, time.process_time() - c0, flush=True)
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


class Marks:
    """The pipeline thread's time stamps, one per processed frame (wrapping the hub's on_result before start)."""

    def __init__(self, hub):
        self.t: list[float] = []
        inner = hub._on_result

        def on_result(result, stats):
            self.t.append(time.perf_counter())
            inner(result, stats)

        hub._on_result = on_result

    def frame_ms(self, t0: float, t1: float) -> list[float]:
        inside = [t for t in self.t if t0 <= t <= t1]
        return [(b - a) * 1000 for a, b in zip(inside, inside[1:])]


def measure(station, base: str, viewers: int, seconds: float, calls: ModelCalls, marks: Marks) -> dict:
    hub = station.hub
    procs = [subprocess.Popen([sys.executable, "-c", VIEWER, f"{base}/api/stream.mjpg", str(seconds + 1.0)],
                              stdout=subprocess.PIPE, text=True) for _ in range(viewers)]
    for p in procs:  # the window begins once every viewer has started up (imports cost CPU) and is reading
        assert p.stdout.readline().strip() == "ready"
    time.sleep(0.5)
    snap = lambda: (hub.stats.frames, calls.calls, hub.frames_with_cells, hub.stats.published,  # noqa: E731
                    hub.jpeg_encodes, time.perf_counter())
    f0, c0, w0, p0, j0, t0 = snap()
    time.sleep(seconds)
    f1, c1, w1, p1, j1, t1 = snap()
    published = list(hub.stats.publish_latencies)[-(p1 - p0):] if p1 > p0 else []
    got = [p.communicate(timeout=60)[0].split() for p in procs]
    frames = f1 - f0
    return {"viewers": viewers, "fps": frames / (t1 - t0), "frames": frames, "model_calls": c1 - c0,
            "frames_with_cells": w1 - w0, "calls_per_frame": (c1 - c0) / max(frames, 1),
            "frame_ms": marks.frame_ms(t0, t1), "publish_ms": published, "published": p1 - p0,
            "jpeg_per_published": round((j1 - j0) / max(p1 - p0, 1), 3),
            "viewer_fps": [round(int(n) / float(t), 2) for n, t, _ in got],
            # CPU the viewer processes took from the same cores (share of one core each, summed)
            "viewer_cpu": round(sum(float(c) / float(t) for _, t, c in got), 3)}


class _Timer:
    """run_stream's `window` for the baseline: the frame is annotated as in the station; stop after `seconds`."""

    def __init__(self, seconds: float):
        self.deadline = time.perf_counter() + seconds

    def show(self, bgr) -> bool:
        return time.perf_counter() < self.deadline

    def close(self) -> None:
        pass


def baseline(station, video: Path, options, seconds: float, calls: ModelCalls) -> dict:
    """The same pipeline without the station: run_stream over the video (annotation drawn, no server, no JPEG)."""
    from leuk_edge.edge.sources import open_source
    from leuk_edge.edge.stream import run_stream

    station.hub.pause(True)
    time.sleep(0.5)
    c0, marks = calls.calls, [time.perf_counter()]
    s = run_stream(open_source(str(video)), station.clf, options, window=_Timer(seconds),
                   on_result=lambda result, stats: marks.append(time.perf_counter()))
    station.hub.pause(False)
    return {"viewers": "stream only", "fps": s["fps"], "frames": s["frames"], "model_calls": calls.calls - c0,
            "frames_with_cells": None, "calls_per_frame": (calls.calls - c0) / max(s["frames"], 1),
            "frame_ms": [(b - a) * 1000 for a, b in zip(marks[1:], marks[2:])], "publish_ms": None,
            "publish_p50": s["publish_latency_ms"]["p50"], "publish_p95": s["publish_latency_ms"]["p95"],
            "published": s["publish"]["published"], "jpeg_per_published": None, "viewer_fps": [],
            "viewer_cpu": None}


def run_precision(model: Path, precision: str, video: Path, work: Path, args) -> tuple[list[dict], dict]:
    """One station on `precision`: every configuration `--repeats` times -> (rows, its choice)."""
    from leuk_edge.edge.detect import DetectorConfig
    from leuk_edge.edge.stream import StreamOptions
    from leuk_edge.station.app import build_station

    options = StreamOptions(detector=DetectorConfig(um_per_px=0.15))
    station = build_station(model, work, source=str(video), loop=True, pace=0, device="cpu",
                            threads=args.threads, options=options, precision=precision)
    calls, marks = ModelCalls(station.clf, keep=150), Marks(station.hub)
    server, thread, base = serve(station)
    time.sleep(3.0)  # warm-up (the crops kept are those of the first 150 frames with cells)
    runs: dict = {"stream only": [], 0: [], 1: [], 3: []}
    try:
        for r in range(args.repeats):
            for v in runs:
                res = (baseline(station, video, options, args.seconds, calls) if v == "stream only"
                       else measure(station, base, v, args.seconds, calls, marks))
                log(f"{precision} repeat {r + 1}: {v} viewer(s): {res['fps']:.2f} fps, "
                    f"{res['calls_per_frame']:.3f} calls/frame, viewers {res['viewer_fps']}")
                runs[v].append(res)
        station.hub.pause(True)  # the model alone, with the pipeline idle
        time.sleep(0.5)
        ceiling = model_ceiling(station.clf, calls.crops)
    finally:
        station.hub.stopping.set()
        server.should_exit = True
        thread.join(15)
        station.close()
    return [table_row(precision, v, rs, ceiling) for v, rs in runs.items()], station.precision


def table_row(precision: str, viewers, rs: list[dict], ceiling: dict) -> dict:
    import numpy as np

    med = sorted(rs, key=lambda x: x["fps"])[len(rs) // 2]
    pub = [x for r in rs for x in (r["publish_ms"] or [])]
    out = {k: v for k, v in med.items() if k not in ("frame_ms", "publish_ms")}
    out.update(precision=precision, fps_runs=[round(x["fps"], 2) for x in rs],
               **fps_stats([x for r in rs for x in r["frame_ms"]]),
               model_alone_fps_median=ceiling["fps_median"], model_alone_fps_p5=ceiling["fps_p5"])
    if pub:
        out.update(publish_p50=round(float(np.percentile(pub, 50)), 1),
                   publish_p95=round(float(np.percentile(pub, 95)), 1))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each measuring window")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--precisions", default="fp32,int8", help="comma-separated --precision values")
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--cells", type=int, default=5)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--model", type=Path, default=None)
    args = ap.parse_args()

    from bench_stream import ensure_model

    from leuk_edge.synth.fields import FieldConfig, write_fields

    model = args.model or ensure_model(RESULTS / f"cnn{args.size}_random.onnx", args.size)
    table, choices = [], {}
    with tempfile.TemporaryDirectory(prefix="leuk_station_") as tmp:
        tmp = Path(tmp)
        cfg = FieldConfig(width=args.width, height=args.height, um_per_px=0.15, leukocytes=args.cells)
        write_fields(tmp / "fields", frames=0, video_frames=150, fps=30.0, cfg=cfg, seed=0)
        for prec in [p.strip() for p in args.precisions.split(",") if p.strip()]:
            try:
                rows, choice = run_precision(model, prec, tmp / "fields" / "drift.mp4", tmp / f"work-{prec}", args)
            except ValueError as exc:  # a variant that cannot run (no passed, bound INT8 file)
                log(f"no {prec.upper()} rows: {exc}")
                continue
            table += rows
            choices[prec] = choice.to_dict() if choice is not None else None
    for r in table:
        zero = next(x for x in table if x["precision"] == r["precision"] and x["viewers"] == 0)
        r["vs_0_viewers"] = round(r["fps"] / zero["fps"], 3) if zero["fps"] else None
    write_report(table, choices, args)


def write_report(table: list[dict], choices: dict, args) -> None:
    from leuk_edge import DISCLAIMER

    f = lambda v, spec=".1f": "-" if v is None else format(v, spec)  # noqa: E731
    machine = machine_info(("onnxruntime", "cv2", "numpy", "fastapi", "uvicorn"))
    env = {"resolution": f"{args.width}x{args.height}", "cells": args.cells, "model": f"cnn {args.size} (random)",
           "ort_threads": args.threads, "cpus": machine["logical_cores"], "cpu": machine["cpu"], "machine": machine,
           "seconds": args.seconds, "repeats": args.repeats, "precisions": choices}
    lines = [f"# station benchmark ({env['resolution']}, ~{args.cells} cells in view, {env['model']}, "
             f"{args.threads} ORT threads, {env['cpus']} CPUs; viewers are separate processes on the same machine)",
             "", markdown_table(
                 ["precision", "MJPEG viewers", "fps median", "fps p5", "fps (window)", "vs 0 viewers",
                  "publish p50 / p95 ms", "model calls / frame", "JPEG / published frame",
                  "model alone fps median / p5",
                  "frames/s each viewer received", "viewers' CPU (cores)"],
                 [[r["precision"].upper(), str(r["viewers"]), f(r["fps_median"]), f(r["fps_p5"]), f"{r['fps']:.2f}",
                   f(r["vs_0_viewers"], ".2f"), f"{f(r.get('publish_p50'))} / {f(r.get('publish_p95'))}",
                   f"{r['calls_per_frame']:.3f} ({r['model_calls']}/{r['frames']})", f(r["jpeg_per_published"], ".2f"),
                   f"{f(r['model_alone_fps_median'])} / {f(r['model_alone_fps_p5'])}",
                   ", ".join(f"{x:.1f}" for x in r["viewer_fps"]) or "-", f(r["viewer_cpu"], ".2f")]
                  for r in table]), "",
             "fps per run: " + "; ".join(f"{r['precision']} {r['viewers']} viewer(s): {r['fps_runs']}" for r in table),
             "fps median / p5: from the pipeline thread's time per frame in the window (p5 = 95th percentile of the "
             "frame time); fps (window): processed frames / window (median run). 'stream only': run_stream on the "
             "same video and model in the same process, frames annotated, no server (the pipeline the station "
             "wraps). Publish: frame taken -> annotated frame published to the viewers. Model calls are counted "
             "at Classifier.infer; a frame without cells needs no call, and the window edges can split a frame's "
             "call from its count (+-1). JPEG / published frame: encodes per frame the publish stage handed to the "
             "viewers (at most 1 whatever the viewers; 0 without one). Target: 3 viewers >= 0.9 x the fps with none; "
             "publish latency p95 <= 100 ms. Viewers' CPU: the CPU time the viewer processes took (in cores, summed), "
             "from the same cores as the station.", "", DISCLAIMER]
    write_results(RESULTS, "bench_station", "\n".join(lines) + "\n", {"environment": env, "rows": table})
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
