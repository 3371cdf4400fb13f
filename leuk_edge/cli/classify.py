"""`leuk-edge classify PATH… --model M.onnx` and `leuk-edge bench M.onnx`. Edge-only: no TensorFlow here."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..edge.signals import EXIT_SIGINT, EXIT_SIGTERM
from .common import UsageError, console, echo_json, fail, user_errors

DEFAULT_MAX_PIXELS = 50_000_000  # = edge.preprocess.DEFAULT_MAX_PIXELS (not imported here: the CLI starts light)

DEVICE_HELP = "auto | cpu | cuda | tensorrt | openvino | coreml | directml. A named device that is not available " \
              "is an error (no silent fall-back to CPU)."


def classify(
    paths: List[str] = typer.Argument(..., help="Image files, folders (searched recursively) or glob patterns."),
    model: Path = typer.Option(..., "--model", "-m", help="Exported leuk-edge ONNX model (metadata inside)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o",
                                       help="Write the table here (default: stdout). Rows are flushed as produced."),
    fmt: Optional[str] = typer.Option(None, "--format", "-f",
                                      help="csv | json | jsonl (default: from --out's suffix, else csv)."),
    device: str = typer.Option("auto", "--device", "-d", help=DEVICE_HELP),
    threads: Optional[int] = typer.Option(None, "--threads", min=1,
                                          help="onnxruntime intra-op threads (default: one per available core)."),
    batch_size: int = typer.Option(8, "--batch-size", "-b", min=1, help="Images per inference batch."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1,
                                          help="Decode/preprocess threads (default: one per 4 cores, at least 1)."),
    tta: bool = typer.Option(False, "--tta", help="Average over the 8 flips/90-degree rotations (slower)."),
    precision: str = typer.Option("auto", "--precision", "-p",
                                  help="auto | fp32 | fp16 | int8. auto runs MODEL.int8.onnx (CPU) or MODEL.fp16.onnx "
                                       "(GPU) when its parity report beside it says passed, else the FP32 model."),
    bit_depth: Optional[int] = typer.Option(None, "--bit-depth",
                                            help="8 | 10 | 12 | 14 | 16: bit depth of 16-bit files (default: "
                                                 "detected, a maximum <= 4095 is 12-bit)."),
    max_pixels: int = typer.Option(DEFAULT_MAX_PIXELS, "--max-pixels", min=0,
                                   help="Refuse (error row) an image declaring more pixels, before decoding; 0 = no "
                                        "limit."),
    summary_json: Optional[Path] = typer.Option(None, "--summary",
                                                help="Also write the summary (counts, precision, stage times) as "
                                                     "JSON here."),
    cam: Optional[Path] = typer.Option(None, "--cam", help="Write a CAM overlay PNG per flagged image into this "
                                                           "folder (a model exported with its cam output)."),
    cam_all: bool = typer.Option(False, "--cam-all", help="With --cam: an overlay for every classified image."),
    report: Optional[Path] = typer.Option(None, "--report", help="Also write the HTML report of the run here."),
    engine: str = typer.Option("local", "--engine", help="local | ray (Ray Data actor pool; leuk-edge[ray]). "
                               "ray also reads s3://, gs://, file:// URIs and writes .parquet."),
    address: Optional[str] = typer.Option(None, "--address", help="ray: auto | ray://host:port | host:port "
                                          "(default: RAY_ADDRESS, else a local Ray)."),
    actors: Optional[int] = typer.Option(None, "--actors", min=1, help="ray: actor pool size (default: one per CPU)."),
    gpus_per_actor: float = typer.Option(0.0, "--gpus-per-actor", min=0.0, help="ray: GPUs per actor."),
):
    """Classify cell images: one row per file (path,label,probability,error); P(all) = blast probability."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ..edge import Classifier
    from ..edge.bench import session_threads
    from ..edge.classify import StageTimes, classify_paths, thread_split
    from ..edge.files import expand_paths
    from ..edge.precision import choose_precision
    from ..edge.preprocess import BIT_DEPTHS
    from ..edge.signals import Terminated, graceful_stop
    from ..edge.summary import ClassifySummary, render_summary, write_summary
    from ..edge.writers import infer_format, open_writer

    with user_errors(), graceful_stop():
        from ..cluster.ray_cli import check_engine  # no ray import: --engine ray only

        check_engine(engine, out, fmt)
        if bit_depth is not None and bit_depth not in BIT_DEPTHS:
            raise UsageError(f"--bit-depth must be one of {', '.join(map(str, BIT_DEPTHS))}, got {bit_depth}")
        if engine == "ray":
            from ..cluster.ray_cli import RayOptions, classify_with_ray

            if cam or report or summary_json:
                raise UsageError("--cam, --report and --summary work with --engine local only (for now)")
            if not model.is_file():
                raise UsageError(f"model file not found: {model}")
            # The file the local engine would run on the actors' device (GPU actors: FP16 if it passed; CPU: INT8).
            actor_device = device if device != "auto" else ("cuda" if gpus_per_actor > 0 else "cpu")
            ray_model = choose_precision(model, precision, actor_device).path
            opts = RayOptions(address=address, actors=actors, gpus_per_actor=gpus_per_actor, batch_size=batch_size,
                              device=device, tta=tta, bit_depth=bit_depth, max_pixels=max_pixels or None)
            _exit_as(classify_with_ray(paths, ray_model, out, fmt, opts, console))
            return
        fmt = infer_format(out, fmt)
        files = expand_paths(paths)
        if files.missing:
            raise UsageError(f"no such file, folder or match: {', '.join(files.missing)}")
        if not files.images:
            raise UsageError(f"no images found in {', '.join(paths)} (looked for bmp, png, jpg/jpeg, tif/tiff)")
        if not model.is_file():
            raise UsageError(f"model file not found: {model}")
        choice = choose_precision(model, precision, device)
        # Decode threads share the cores with onnxruntime: its idle threads sleep rather than spin.
        auto_workers, auto_threads = thread_split()
        workers = workers or auto_workers
        clf = Classifier(choice.path, device=device, threads=threads or auto_threads, spinning=False)
        if cam_all and cam is None:
            raise UsageError("--cam-all needs --cam DIR")
        if cam is not None and not clf.has_cam:
            raise UsageError(f"--cam: {choice.path.name} has no 'cam' output; export it with `leuk-edge export --cam`")
        kept: list | None = [] if (cam or report) else None  # rows for the --cam / --report post-passes
        times = StageTimes()
        summary = ClassifySummary(skipped=files.skipped, providers=list(clf.providers),
                                  threads=session_threads(clf), workers=workers, precision=choice.to_dict(),
                                  batch_size=batch_size, tta=tta, times=times, model=str(choice.path),
                                  out=str(out) if out else "stdout")
        progress = Progress(TextColumn("classifying"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                            console=console, transient=True)
        try:
            with open_writer(out, fmt) as writer, progress:
                task = progress.add_task("classify", total=len(files.images))
                for row in classify_paths(clf, files.images, batch_size=batch_size, workers=workers, tta=tta,
                                          times=times, bit_depth=bit_depth, max_pixels=max_pixels or None):
                    if kept is not None:
                        kept.append(row)
                    writer.write(row)
                    summary.add(row)
                    progress.advance(task)
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (graceful_stop): the rows so far are kept
            summary.interrupted = True
            summary.stopped_by = "terminated" if isinstance(exc, Terminated) else "interrupted"
        render_summary(summary, console)
        if summary_json:
            write_summary(summary, summary_json)
        if kept is not None:
            from .report import after_classify

            after_classify(clf, kept, cam, cam_all, report, str(out or "stdout"), summary.interrupted)
        _exit_as(summary)


def _exit_as(summary) -> None:
    """Both engines end alike: 130 after Ctrl-C, 143 after SIGTERM, 1 when no file could be classified."""
    if summary.interrupted:
        raise typer.Exit(EXIT_SIGTERM if summary.stopped_by == "terminated" else EXIT_SIGINT)
    if summary.classified == 0:
        first = summary.first_error or ""
        fail(f"no file could be classified: all {summary.images} failed to read or decode"
             + (f" (first: {first})" if first else ""), code=1)


def bench(
    model: Path = typer.Argument(..., help="Exported leuk-edge ONNX model."),
    device: str = typer.Option("auto", "--device", "-d", help=DEVICE_HELP),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="onnxruntime intra-op threads."),
    batch_sizes: str = typer.Option("1,8,32", "--batch-sizes", "-b", help="Comma-separated batch sizes."),
    runs: int = typer.Option(20, "--runs", min=1, help="Timed runs per batch size."),
    warmup: int = typer.Option(3, "--warmup", min=0, help="Untimed warm-up runs per batch size."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout (no table)."),
    precision: str = typer.Option("auto", "--precision", "-p",
                                  help="auto | fp32 | fp16 | int8: which model file runs, as in classify."),
):
    """Model-only latency (p50/p95) and throughput per batch size on the chosen device."""
    from ..edge import Classifier
    from ..edge.bench import bench_model, render_bench
    from ..edge.precision import choose_precision

    with user_errors():
        try:
            sizes = [int(s) for s in batch_sizes.split(",") if s.strip()]
        except ValueError:
            raise UsageError(f"--batch-sizes must be comma-separated integers, got {batch_sizes!r}") from None
        if not sizes or min(sizes) < 1:
            raise UsageError("--batch-sizes needs at least one size >= 1")
        if not model.is_file():
            raise UsageError(f"model file not found: {model}")
        choice = choose_precision(model, precision, device)
        clf = Classifier(choice.path, device=device, threads=threads)
        report = bench_model(clf, sizes, runs=runs, warmup=warmup, device=device)
        report.precision = choice.to_dict()
    if as_json:
        echo_json(report.to_dict())
    else:
        render_bench(report, console)


def register(app: typer.Typer) -> None:
    app.command("classify")(classify)
    app.command("bench")(bench)
