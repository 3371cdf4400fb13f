"""Stream mode speed, side by side in one run: FP32 vs INT8 (`--precision`), recording off vs on, at 1280x720 with
~5 white cells in view.

    python benchmarks/bench_stream.py [--frames 150] [--repeats 3] [--precisions fp32,int8] [--threads 2]
                                      [--width 1280] [--height 720] [--cells 5] [--extras]
                                      [--mix normal [--blast-share 0.2]] [--model M.onnx]

Renders a synthetic drifting-field video (leuk_edge.synth.fields), exports the from-scratch CNN at 256x256
(random weights: speed does not depend on them) to ONNX with the `leuk_edge` metadata and its INT8 variant (gated
on 120 synthetic cells, so `--precision auto` may take it), in a child process, so the timed process is
TensorFlow-free like an edge install; then runs the real stream pipeline on the video, as `leuk-edge stream
--precision P [--record out.mp4] --jsonl ev.jsonl` does. Per row (precision x recording):

  fps median / p5   from the pipeline's time per frame over all runs (p5: 95 % of frames were at least this fast)
  vs off            fps median with recording / without, same precision (the cost of recording)
  latency p50/p95   frame taken -> annotated frame published (recorded; the JSONL event without recording),
                    and frame taken -> cells classified
  calls/frame       onnxruntime calls per processed frame (counted at Classifier.infer; one per frame with cells)
  model alone       the model's own ceiling on the same cells: each frame's crops through the same session,
                    nothing else (fps median / p5)
  recorded          frames in the MP4 + frames dropped (recording rows)
  stage ms          capture, detect (scale + detection + crops), classify, draw (publish thread: annotation and
                    handing over to the H.264 encoder, which has its own thread)

Each row runs `--repeats` times after a warm-up, the rows alternating so machine noise hits all alike; the median
run gives the per-run columns. `--extras` adds FP32 rows with the scale measured on the red cells and with
onnxruntime's spinning threads. Also reports detection precision/recall against the video's truth. With `--mix
normal` the video holds a normal differential plus `--blast-share` blasts, and the first run is scored against its
truth (leuk_edge.synth.truth). Writes benchmarks/results/bench_stream.{md,json} and prints the table.
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
from common import (RESULTS, ModelCalls, export_onnx, fps_stats, log, machine_info, markdown_table,  # noqa: E402
                    model_ceiling, save_random_model, write_cells, write_results)

STREAM_MODULES = ("onnxruntime", "cv2", "numpy")  # versions to report; never tensorflow/keras/tf2onnx (imports)
GATE_CELLS = 120  # synthetic cells the export gates run on (>= 100: what `--precision auto` asks of an INT8 gate)


def export_cnn(path: Path, size: int) -> None:
    """Build the CNN (random weights), export it and its INT8 variant with the leuk_edge metadata and gates to
    PATH. Run in the child process only: it imports TensorFlow. A model that failed its FP32 gate is kept at PATH
    all the same (speed does not depend on the weights); a failed INT8 variant is left out (the rows say so)."""
    with tempfile.TemporaryDirectory(prefix="leuk_bench_") as tmp:
        keras_path, _ = save_random_model("cnn", tmp, size=size)
        cells = Path(tmp) / "cells"
        write_cells(cells, GATE_CELLS)
        result = export_onnx(keras_path, path, int8=True, verbose=False, parity_data=cells, calib_data=cells)
    if not result.fp32.passed:
        log(f"warning: the FP32 parity gate failed; benchmarking {result.fp32.path} as {path} anyway")
        result.fp32.path.replace(path)


def ensure_model(path: Path, size: int) -> Path:
    """The cached export at PATH, exported again when it lacks its INT8 variant (older caches were FP32 only)."""
    from leuk_edge.edge.model_files import manifest_path, variant_path

    if path.exists() and variant_path(path, "int8").exists() and manifest_path(path).exists():
        print(f"reusing the cached {path} (delete it to export a fresh one)", flush=True)
    else:
        print(f"exporting the CNN at {size}x{size} (+ INT8) to {path} (child process with TensorFlow) ...", flush=True)
        subprocess.run([sys.executable, __file__, "--export-only", str(path), "--size", str(size)], check=True)
    return path


def load_model(path: Path, precision: str, threads: int, spinning: bool = False):
    """-> (Classifier of the file `--precision` picks, its PrecisionChoice), or (None, reason) when it cannot run.
    As `leuk-edge stream` runs it: idle onnxruntime threads sleep instead of spinning (they would take the cores
    from detection and drawing between the model calls), unless `spinning`."""
    from leuk_edge.edge import Classifier
    from leuk_edge.edge.precision import PrecisionError, choose_precision

    try:
        choice = choose_precision(path, precision, "cpu")
    except PrecisionError as exc:
        return None, str(exc)
    return Classifier(choice.path, device="cpu", threads=threads, spinning=spinning), choice


def run_once(video: Path, model, record: Path | None, jsonl: Path, um_per_px: float | None,
             max_frames: int | None = None) -> dict:
    """One stream run; the summary gains `frame_ms`: the pipeline thread's wall time per processed frame (from
    the end of the previous one: capture, detection, classification, tracking and the hand-over to the publish
    stage; drawing, recording and the event line run on the publish thread), `cpu_ms_per_frame` and
    `model_calls` (when the model's calls are counted: common.ModelCalls)."""
    import time

    from leuk_edge.edge.detect import DetectorConfig
    from leuk_edge.edge.recording import VideoRecorder
    from leuk_edge.edge.sources import open_source
    from leuk_edge.edge.stream import StreamOptions, run_stream

    options = StreamOptions(detector=DetectorConfig(um_per_px=um_per_px), max_frames=max_frames)
    recorder = VideoRecorder(record) if record else None
    counter = getattr(model, "_calls", None)
    calls0 = counter.calls if counter else 0
    marks = []
    source = open_source(str(video))
    cpu0 = time.process_time()
    marks.append(time.perf_counter())
    summary = run_stream(source, model, options, jsonl=jsonl, recorder=recorder,
                         on_result=lambda result, stats: marks.append(time.perf_counter()))
    summary["frame_ms"] = [(b - a) * 1000 for a, b in zip(marks, marks[1:])][1:]  # the first also opens the decoder
    # CPU time of all threads per frame: what the pipeline costs, much less sensitive than wall time to other
    # processes on the same cores.
    summary["cpu_ms_per_frame"] = round((time.process_time() - cpu0) * 1000 / max(summary["frames"], 1), 1)
    summary["model_calls"] = (counter.calls - calls0) if counter else None
    return summary


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


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=150, help="frames of the video (each run processes them all)")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--cells", type=int, default=5, help="white cells per field of view")
    ap.add_argument("--um-per-px", type=float, default=0.15)
    ap.add_argument("--size", type=int, default=256, help="CNN input size")
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--precisions", default="fp32,int8", help="comma-separated --precision values, one row pair each")
    ap.add_argument("--extras", action="store_true", help="also FP32 with the measured scale and spinning threads")
    ap.add_argument("--model", type=Path, default=None, help="an existing leuk-edge ONNX (default: export one)")
    ap.add_argument("--mix", choices=("lymphoid", "normal"), default="lymphoid",
                    help="white cells of the video; 'normal' also scores `other` and the blast fraction")
    ap.add_argument("--blast-share", type=float, default=0.2,
                    help="--mix normal: the share of white cells that are blasts")
    ap.add_argument("--export-only", type=Path, default=None, help=argparse.SUPPRESS)
    return ap.parse_args()


def variants(models: dict, tmp: Path, um: float, extras: bool, threads: int, model_path: Path) -> list[tuple]:
    """(name, precision, recording, model, record path, um_per_px) per row: each precision without and with
    recording, side by side."""
    rows = []
    for prec, (clf, _) in models.items():
        rows.append((f"{prec.upper()}, recording off", prec, False, clf, None, um))
        rows.append((f"{prec.upper()}, recording on", prec, True, clf, tmp / "rec.mp4", um))
    if extras and "fp32" in models:
        fp32 = models["fp32"][0]
        spinning, _ = load_model(model_path, "fp32", threads, spinning=True)  # onnxruntime's default
        spinning._calls = ModelCalls(spinning)
        rows.append(("FP32, off, scale measured on red cells", "fp32", False, fp32, None, None))
        rows.append(("FP32, off, onnxruntime threads spinning", "fp32", False, spinning, None, um))
    return rows


def row(name: str, prec: str, rec: bool, runs: list[dict], frame_ms: list[float], ceiling: dict) -> dict:
    med = sorted(runs, key=lambda s: s["fps"])[len(runs) // 2]
    frames = sum(r["frames"] for r in runs)
    calls = [r["model_calls"] for r in runs if r["model_calls"] is not None]
    recorded = med.get("recording") or {}
    return {"pipeline": name, "precision": prec, "recording": rec, "fps": med["fps"],
            "fps_runs": [r["fps"] for r in runs], **fps_stats(frame_ms),  # over the frames of all runs
            "cells_per_frame": round(sum(med["observations"].values()) / max(med["frames"], 1), 2),
            **{f"{k}_ms": v for k, v in med["stage_ms"].items()},
            "latency_p50_ms": med["latency_ms"]["p50"], "latency_p95_ms": med["latency_ms"]["p95"],
            "publish_p50_ms": med["publish_latency_ms"]["p50"], "publish_p95_ms": med["publish_latency_ms"]["p95"],
            "calls_per_frame": round(sum(calls) / max(frames, 1), 3) if calls else None,
            "model_alone_fps_median": ceiling.get("fps_median"), "model_alone_fps_p5": ceiling.get("fps_p5"),
            "recorded": recorded.get("frames"), "record_dropped": recorded.get("dropped"),
            "publish": med.get("publish"), "cpu_ms_per_frame": med["cpu_ms_per_frame"],
            "um_per_px": med.get("um_per_px")}


def with_ratios(table: list[dict]) -> list[dict]:
    """Each recording row gains `vs_off`: its fps median over the same precision's without recording."""
    off = {r["precision"]: r["fps_median"] for r in table if r["pipeline"].endswith("recording off")}
    for r in table:
        base = off.get(r["precision"])
        r["vs_off"] = round(r["fps_median"] / base, 3) if base and r["fps_median"] else None
    return table


def markdown(table: list[dict], env: dict, args, auto, quality, scope_lines, target: str) -> list[str]:
    from leuk_edge import DISCLAIMER

    f = lambda v, spec=".1f": "-" if v is None else format(v, spec)  # noqa: E731
    lines = [f"# stream benchmark ({env['resolution']}, ~{args.cells} cells in view, {env['model']}, "
             f"{args.threads} ORT threads, {env['cpus']} CPUs)", "",
             markdown_table(["pipeline", "fps median", "fps p5", "vs off", "publish p50 / p95 ms",
                             "classified p50 / p95 ms", "calls/frame", "model alone fps median / p5",
                             "recorded + dropped", "CPU ms/frame", "capture / detect / classify / draw ms"],
                            [[r["pipeline"], f(r["fps_median"]), f(r["fps_p5"]), f(r["vs_off"], ".2f"),
                              f"{r['publish_p50_ms']:.0f} / {r['publish_p95_ms']:.0f}",
                              f"{r['latency_p50_ms']:.0f} / {r['latency_p95_ms']:.0f}", f(r["calls_per_frame"], ".2f"),
                              f"{f(r['model_alone_fps_median'])} / {f(r['model_alone_fps_p5'])}",
                              "-" if r["recorded"] is None else f"{r['recorded']} + {r['record_dropped']}",
                              f(r["cpu_ms_per_frame"]),
                              " / ".join(f"{r[k + '_ms']:.1f}" for k in ("capture", "detect", "classify", "draw"))]
                             for r in table]),
             "", "fps median / p5: from the pipeline thread's time per frame over all runs (p5 = the 95th percentile "
                 "of the frame time: 95 % of frames were at least this fast); vs off: fps median over the same "
                 "precision without recording; publish: frame taken -> annotated frame handed to the encoder (the "
                 "JSONL event without recording); calls/frame: onnxruntime calls per processed frame; model alone: "
                 "the same session on the same frames' crops, nothing else."]
    if auto is not None:
        lines += ["", f"`--precision auto` runs {auto.used.upper()} here ({auto.reason})."]
    lines += ["", f"Detection on the video (IoU 0.5, cells cut by the edge ignored): precision "
                  f"{quality['precision']:.3f}, recall {quality['recall']:.3f} ({quality['tp']} matches).",
              *scope_lines,
              "fps per run: " + "; ".join(f"{r['pipeline']}: {r['fps_runs']}" for r in table),
              f"onnxruntime {env['onnxruntime']}, OpenCV {env['opencv']}, Python {env['python']}; load average "
              f"{' / '.join(map(str, env['load_average_1_5_15']))} at the end (other processes on the same cores). "
              f"Target: {target}.", "", DISCLAIMER]
    return lines


def main() -> None:
    args = parse_args()
    if args.export_only:
        export_cnn(args.export_only, args.size)
        return

    from leuk_edge.edge.precision import choose_precision
    from leuk_edge.synth.fields import FieldConfig, write_fields

    model_path = args.model or ensure_model(RESULTS / f"cnn{args.size}_random.onnx", args.size)
    models, skipped = {}, []
    for prec in [p.strip() for p in args.precisions.split(",") if p.strip()]:
        clf, choice = load_model(model_path, prec, args.threads)
        if clf is None:
            skipped.append(f"{prec}: {choice}")
            log(f"no {prec.upper()} rows: {choice}")
            continue
        clf._calls = ModelCalls(clf, keep=args.frames)
        models[prec] = (clf, choice)
    auto = choose_precision(model_path, "auto", "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = FieldConfig(width=args.width, height=args.height, um_per_px=args.um_per_px, leukocytes=args.cells,
                          mix=args.mix, blast_share=args.blast_share if args.mix == "normal" else 0.0)
        write_fields(tmp / "fields", frames=0, video_frames=args.frames, fps=30.0, cfg=cfg, seed=0)
        video, truth = tmp / "fields" / "drift.mp4", tmp / "fields" / "drift.json"
        rows_spec = variants(models, tmp, args.um_per_px, args.extras, args.threads, model_path)
        for clf, _ in models.values():
            run_once(video, clf, None, tmp / "warm.jsonl", args.um_per_px, max_frames=10)  # warm-up
            clf._calls.crops.clear()  # keep the crops of the first full pass
        runs, frame_ms, quality, scope, scope_lines = {}, {}, None, None, []
        for _ in range(args.repeats):  # alternate the rows so machine noise hits all alike
            for name, prec, rec, model, path, um in rows_spec:
                s = run_once(video, model, path, tmp / "ev.jsonl", um)
                runs.setdefault(name, []).append(s)
                frame_ms.setdefault(name, []).extend(s["frame_ms"])
                if quality is None:
                    quality = detection_quality(tmp / "ev.jsonl", truth)
                    if args.mix == "normal":
                        scope, scope_lines = scope_quality(tmp / "ev.jsonl", truth, s)
        # The model alone on the cells the stream gave it (the crops of the first pass over the video).
        ceilings = {prec: model_ceiling(clf, clf._calls.crops) for prec, (clf, _) in models.items()}
    table = with_ratios([row(name, prec, rec, runs[name], frame_ms[name], ceilings[prec])
                         for name, prec, rec, *_ in rows_spec])
    machine = machine_info(STREAM_MODULES)  # no tensorflow/keras/tf2onnx: this process stays TensorFlow-free
    env = {"resolution": f"{args.width}x{args.height}", "um_per_px": args.um_per_px, "frames": args.frames,
           "model": f"cnn {args.size}x{args.size} (random weights)", "ort_threads": args.threads,
           "opencv_threads": 1, "cpus": machine["logical_cores"], "cpu": machine["cpu"],
           "onnxruntime": machine["versions"].get("onnxruntime", "?"), "opencv": machine["versions"].get("cv2", "?"),
           "python": machine["python"], "machine": machine, "repeats": args.repeats,
           "precisions": {p: c.to_dict() for p, (_, c) in models.items()}, "precisions_skipped": skipped,
           "auto": auto.to_dict(), "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()]}
    target = (">= 30 frames/s at p5 at 1280x720 with ~5 cells, recording on and --precision auto, on 2 CPU cores; "
              "recording costs < 10 % of the fps without it")
    result = {"environment": env, "rows": table, "model_alone": ceilings, "detection_on_video": quality,
              "mix": args.mix, "scope_on_video": scope, "target": target}
    lines = markdown(table, env, args, auto, quality, scope_lines, target)
    write_results(RESULTS, "bench_stream", "\n".join(lines) + "\n", result)
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
