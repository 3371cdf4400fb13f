"""Stream mode speed: frames/s and per-stage milliseconds at 1280x720 with ~5 white cells in view.

    python benchmarks/bench_stream.py [--frames 150] [--width 1280] [--height 720] [--cells 5] [--threads 2]
                                      [--mix normal [--blast-share 0.2]] [--model M.onnx]

Renders a synthetic drifting-field video (leuk_edge.synth.fields), exports the from-scratch CNN at 256x256
(random weights: speed does not depend on them) to ONNX with the `leuk_edge` metadata (in a child process, so the
timed process is TensorFlow-free like an edge install), then runs the real stream pipeline on the video:

  capture   decode the next frame (OpenCV/FFmpeg)
  detect    scale (red cells, every 15th frame in the measured-scale row) + leukocyte detection + C-NMC crops
  classify  one batched onnxruntime call for all cells of the frame (resize to 256 + model)
  draw      annotation, handing the frame to the recorder (H.264 on its own thread) and the JSONL line

Rows: the full pipeline (JSONL + recording) and the pipeline without recording. Each row runs `--repeats` times
after a warm-up; the median run is reported. Also reports detection precision/recall against the video's truth.
With `--mix normal` the video holds a normal differential (neutrophils, lymphocytes, monocytes, eosinophils,
basophils) plus `--blast-share` blasts, and the first run is scored against its truth (leuk_edge.synth.truth):
precision/recall of `other`, the share flagged per kind, and whether the run's blast-fraction interval holds the
truth's (over lymphoid cells). Meaningful with a model that has a scope gate (`--model`); the random CNN has none.
Writes benchmarks/results/bench_stream.{md,json} and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # tests/support: helpers kept out of the wheel

# common imports no TensorFlow at module level: the timed (parent) process stays TensorFlow-free
from common import (RESULTS, export_onnx, log, machine_info, markdown_table, save_random_model,  # noqa: E402
                    write_results)

STREAM_MODULES = ("onnxruntime", "cv2", "numpy")  # versions to report; never tensorflow/keras/tf2onnx (imports)


def export_cnn(path: Path, size: int) -> None:
    """Build the CNN (random weights), export it with the leuk_edge metadata (FP32 parity gate) to PATH. Run in
    the child process only: it imports TensorFlow. A model that failed its gate is kept at PATH all the same
    (speed does not depend on the weights)."""
    with tempfile.TemporaryDirectory(prefix="leuk_bench_") as tmp:
        keras_path, _ = save_random_model("cnn", tmp, size=size)
        result = export_onnx(keras_path, path, int8=False, verbose=False)
    if not result.fp32.passed:
        log(f"warning: the FP32 parity gate failed; benchmarking {result.fp32.path} as {path} anyway")
        result.fp32.path.replace(path)


def ensure_model(path: Path, size: int) -> Path:
    if path.exists():
        print(f"reusing the cached {path} (delete it to export a fresh one)", flush=True)
    else:
        print(f"exporting the CNN at {size}x{size} to {path} (child process with TensorFlow) ...", flush=True)
        subprocess.run([sys.executable, __file__, "--export-only", str(path), "--size", str(size)], check=True)
    return path


def run_once(video: Path, model, record: Path | None, jsonl: Path, um_per_px: float | None,
             max_frames: int | None = None) -> dict:
    """One stream run; the summary gains `frame_ms`: the wall time of every processed frame (from the end of the
    previous one: capture, detection, classification, drawing, recording and the event line all included)."""
    import time

    from leuk_edge.edge.detect import DetectorConfig
    from leuk_edge.edge.recording import VideoRecorder
    from leuk_edge.edge.sources import open_source
    from leuk_edge.edge.stream import StreamOptions, run_stream

    options = StreamOptions(detector=DetectorConfig(um_per_px=um_per_px), max_frames=max_frames)
    recorder = VideoRecorder(record) if record else None
    marks = []
    source = open_source(str(video))
    cpu0 = time.process_time()
    marks.append(time.perf_counter())
    summary = run_stream(source, model, options, jsonl=jsonl, recorder=recorder,
                         on_result=lambda result, stats: marks.append(time.perf_counter()))
    summary["frame_ms"] = [(b - a) * 1000 for a, b in zip(marks, marks[1:])]
    # CPU time of all threads per frame: what the pipeline costs, much less sensitive than wall time to other
    # processes on the same cores.
    summary["cpu_ms_per_frame"] = round((time.process_time() - cpu0) * 1000 / max(summary["frames"], 1), 1)
    return summary


def fps_stats(frame_ms: list[float]) -> dict:
    """Frames per second from per-frame wall times: the median frame, and p5 (the slowest 5 % of frames: the
    95th percentile of the frame time)."""
    import numpy as np

    t = np.asarray(frame_ms[1:] or frame_ms, np.float64)  # the first frame also opens the decoder
    return {"fps_median": round(1000.0 / float(np.median(t)), 1),
            "fps_p5": round(1000.0 / float(np.percentile(t, 95)), 1)}


def detection_quality(jsonl: Path, truth_path: Path) -> dict:
    from support.boxes import match_boxes

    truth = json.loads(truth_path.read_text())["frames"]
    tp = fp = fn = 0
    for line, t in zip(jsonl.read_text().splitlines(), truth):
        e = json.loads(line)
        a, b, c, _ = match_boxes([x["box"] for x in e["cells"]], [x["box"] for x in t["cells"]],
                                 ignore=[x["cut"] for x in t["cells"]])
        tp, fp, fn = tp + a, fp + b, fn + c
    return {"tp": tp, "fp": fp, "fn": fn, "precision": round(tp / max(tp + fp, 1), 4),
            "recall": round(tp / max(tp + fn, 1), 4)}


def scope_quality(jsonl: Path, truth_path: Path, summary: dict) -> tuple[dict, list[str]]:
    """--mix normal: the run scored against the video's truth -> (score, markdown lines)."""
    from leuk_edge.synth.truth import read_events, score_stream

    score = score_stream(read_events(jsonl), json.loads(truth_path.read_text()), summary=summary)
    o, bf = score["tracks"]["other"], score["blast_fraction"]
    kinds = "; ".join(f"{k} {v['other_share']}" for k, v in score["tracks"]["kinds"].items())
    ci = bf["measured"]["ci95"]
    other = (f"Scope on the normal-mix video (per cell, majority of its sightings): `other` precision "
             f"{o['precision']}, recall {o['recall']} (tp {o['tp']}, fp {o['fp']}, fn {o['fn']}); share "
             f"labelled other per kind: {kinds}.")
    blasts = (f"Blast fraction over lymphoid cells: truth {bf['truth']['fraction']} ({bf['truth']['all']} of "
              f"{bf['truth']['lymphoid']}), run {bf['measured']['fraction']} 95 % CI {ci} "
              f"({bf['measured']['unit']}): truth inside the interval: {bf['truth_within_ci95']}.")
    return score, [other, blasts]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--cells", type=int, default=5, help="white cells per field of view")
    ap.add_argument("--um-per-px", type=float, default=0.15)
    ap.add_argument("--size", type=int, default=256, help="CNN input size")
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", type=Path, default=None, help="an existing leuk-edge ONNX (default: export one)")
    ap.add_argument("--mix", choices=("lymphoid", "normal"), default="lymphoid",
                    help="white cells of the video; 'normal' also scores `other` and the blast fraction")
    ap.add_argument("--blast-share", type=float, default=0.2,
                    help="--mix normal: the share of white cells that are blasts")
    ap.add_argument("--export-only", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.export_only:
        export_cnn(args.export_only, args.size)
        return

    from leuk_edge import DISCLAIMER
    from leuk_edge.edge import Classifier
    from leuk_edge.synth.fields import FieldConfig, write_fields

    model_path = args.model or ensure_model(RESULTS / f"cnn{args.size}_random.onnx", args.size)
    # As `leuk-edge stream` runs it: idle onnxruntime threads sleep instead of spinning (they would take the cores
    # from detection and drawing between the model calls).
    clf = Classifier(model_path, device="cpu", threads=args.threads, spinning=False)
    spinning = Classifier(model_path, device="cpu", threads=args.threads)  # onnxruntime's default, for comparison
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = FieldConfig(width=args.width, height=args.height, um_per_px=args.um_per_px, leukocytes=args.cells,
                          mix=args.mix, blast_share=args.blast_share if args.mix == "normal" else 0.0)
        write_fields(tmp / "fields", frames=0, video_frames=args.frames, fps=30.0, cfg=cfg, seed=0)
        video, truth = tmp / "fields" / "drift.mp4", tmp / "fields" / "drift.json"
        run_once(video, clf, None, tmp / "warm.jsonl", args.um_per_px, max_frames=10)  # warm-up
        rows, frame_ms, quality, scope, scope_lines = {}, {}, None, None, []
        variants = (("stream + JSONL + recording", clf, tmp / "rec.mp4", args.um_per_px),
                    ("stream + JSONL", clf, None, args.um_per_px),
                    ("stream + JSONL, scale measured on red cells", clf, None, None),
                    ("stream + JSONL, onnxruntime threads spinning", spinning, None, args.um_per_px))
        for _ in range(args.repeats):  # alternate the variants so machine noise hits all alike
            for name, model, rec, um in variants:
                s = run_once(video, model, rec, tmp / "ev.jsonl", um)
                rows.setdefault(name, []).append(s)
                frame_ms.setdefault(name, []).extend(s["frame_ms"])
                if quality is None:
                    quality = detection_quality(tmp / "ev.jsonl", truth)
                    if args.mix == "normal":
                        scope, scope_lines = scope_quality(tmp / "ev.jsonl", truth, s)
    table = []
    for name, runs in rows.items():
        med = sorted(runs, key=lambda s: s["fps"])[len(runs) // 2]
        cells = sum(med["observations"].values()) / max(med["frames"], 1)
        table.append({"pipeline": name, "fps": med["fps"], "fps_runs": [r["fps"] for r in runs],
                      **fps_stats(frame_ms[name]),  # over the frames of all runs
                      "cells_per_frame": round(cells, 2), **{f"{k}_ms": v for k, v in med["stage_ms"].items()},
                      "latency_p50_ms": med["latency_ms"]["p50"], "latency_p95_ms": med["latency_ms"]["p95"],
                      "cpu_ms_per_frame": med["cpu_ms_per_frame"], "um_per_px": med.get("um_per_px")})
    machine = machine_info(STREAM_MODULES)  # no tensorflow/keras/tf2onnx: this process stays TensorFlow-free
    env = {"resolution": f"{args.width}x{args.height}", "um_per_px": args.um_per_px, "frames": args.frames,
           "model": f"cnn {args.size}x{args.size} (random weights)", "ort_threads": args.threads,
           "opencv_threads": 1, "cpus": machine["logical_cores"], "cpu": machine["cpu"],
           "onnxruntime": machine["versions"].get("onnxruntime", "?"), "opencv": machine["versions"].get("cv2", "?"),
           "python": machine["python"], "providers": clf.providers, "machine": machine,
           "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()]}  # other work on the same cores
    result = {"environment": env, "rows": table, "detection_on_video": quality, "mix": args.mix,
              "scope_on_video": scope,
              "target": ">= 30 frames/s median at 1280x720 with ~5 cells and the 256 CNN on 2 CPU cores"}
    lines = [f"# stream benchmark ({env['resolution']}, ~{args.cells} cells in view, {env['model']}, "
             f"{args.threads} ORT threads, {env['cpus']} CPUs)", "",
             markdown_table(["pipeline", "fps median", "fps p5", "fps (run)", "CPU ms/frame", "cells/frame",
                             "capture ms", "detect ms", "classify ms", "draw ms", "latency p50 / p95 ms"],
                            [[r["pipeline"], f"{r['fps_median']:.1f}", f"{r['fps_p5']:.1f}", f"{r['fps']:.1f}",
                              f"{r['cpu_ms_per_frame']:.1f}", f"{r['cells_per_frame']:.1f}",
                              *(f"{r[k + '_ms']:.1f}" for k in ("capture", "detect", "classify", "draw")),
                              f"{r['latency_p50_ms']:.0f} / {r['latency_p95_ms']:.0f}"] for r in table]),
             "", "fps median / p5: from the wall time of each frame over all runs (p5 = the 95th percentile of the "
                 "frame time: 95 % of frames were at least this fast); fps (run): frames / seconds of the median run."]
    lines += ["", f"Detection on the video (IoU 0.5, cells cut by the edge ignored): precision "
                  f"{quality['precision']:.3f}, recall {quality['recall']:.3f} ({quality['tp']} matches).",
              *scope_lines,
              f"fps per run: " + "; ".join(f"{r['pipeline']}: {r['fps_runs']}" for r in table),
              f"onnxruntime {env['onnxruntime']}, OpenCV {env['opencv']}, Python {env['python']}; load average "
              f"{' / '.join(map(str, env['load_average_1_5_15']))} at the end (other processes on the same cores). "
              f"Target: {result['target']}.", "", DISCLAIMER]
    write_results(RESULTS, "bench_stream", "\n".join(lines) + "\n", result)
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
