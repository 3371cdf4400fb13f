"""`leuk-edge classify PATH… --model M.onnx` and `leuk-edge bench M.onnx`. Edge-only: no TensorFlow here.

`classify` is a few named steps: check the options -> (Ray engine) or list the files -> open the chosen model ->
classify into the table -> summary -> --cam / --report post-passes -> exit code."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from ..edge.signals import EXIT_SIGINT, EXIT_SIGTERM
from .common import UsageError, console, echo_json, fail, user_errors
from .options import Device, ModelOptions, Precision, Threads, command, option_group

DEFAULT_MAX_PIXELS = 50_000_000  # = edge.preprocess.DEFAULT_MAX_PIXELS (not imported here: the CLI starts light)


@option_group
@dataclass
class ReadOptions:
    """How files become batches."""
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per inference batch.")] = 8
    workers: Annotated[Optional[int], typer.Option(
        "--workers", min=1, help="Decode/preprocess threads (default: one per 4 cores, at least 1).")] = None
    tta: Annotated[bool, typer.Option("--tta", help="Average over the 8 flips/90-degree rotations (slower).")] = False
    bit_depth: Annotated[Optional[int], typer.Option(
        "--bit-depth", help="8 | 10 | 12 | 14 | 16: bit depth of 16-bit files (default: detected, a maximum <= "
                            "4095 is 12-bit).")] = None
    max_pixels: Annotated[int, typer.Option(
        "--max-pixels", min=0, help="Refuse (error row) an image declaring more pixels, before decoding; 0 = no "
                                    "limit.")] = DEFAULT_MAX_PIXELS


@option_group
@dataclass
class OutputOptions:
    """What the run writes besides the table's rows."""
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="Write the table here (default: stdout). Rows are flushed as produced.")] = None
    fmt: Annotated[Optional[str], typer.Option(
        "--format", "-f", help="csv | json | jsonl (default: from --out's suffix, else csv).")] = None
    summary_json: Annotated[Optional[Path], typer.Option(
        "--summary", help="Also write the summary (counts, precision, stage times) as JSON here.")] = None
    cam: Annotated[Optional[Path], typer.Option(
        "--cam", help="Write a CAM overlay PNG per flagged image into this folder (a model exported with its cam "
                      "output).")] = None
    cam_all: Annotated[bool, typer.Option("--cam-all", help="With --cam: an overlay for every classified "
                                                            "image.")] = False
    report: Annotated[Optional[Path], typer.Option("--report", help="Also write the HTML report of the run "
                                                                    "here.")] = None

    @property
    def keeps_rows(self) -> bool:
        return self.cam is not None or self.report is not None


@option_group
@dataclass
class EngineOptions:
    engine: Annotated[str, typer.Option(
        "--engine", help="local | ray (Ray Data actor pool; leuk-edge[ray]). ray also reads s3://, gs://, file:// "
                         "URIs and writes .parquet.")] = "local"
    address: Annotated[Optional[str], typer.Option(
        "--address", help="ray: auto | ray://host:port | host:port (default: RAY_ADDRESS, else a local "
                          "Ray).")] = None
    actors: Annotated[Optional[int], typer.Option("--actors", min=1, help="ray: actor pool size (default: one per "
                                                                          "CPU).")] = None
    gpus_per_actor: Annotated[float, typer.Option("--gpus-per-actor", min=0.0, help="ray: GPUs per actor.")] = 0.0


@command
def classify(
    paths: Annotated[List[str], typer.Argument(help="Image files, folders (searched recursively) or glob patterns.")],
    run: ModelOptions, read: ReadOptions, output: OutputOptions, engine: EngineOptions,
):
    """Classify cell images: one row per file (path,label,probability,ood,error); P(all) = blast probability,
    `other` = out of the model's scope (not counted in the blast fraction)."""
    from ..edge.signals import graceful_stop

    with user_errors(), graceful_stop():
        _check_options(read, output, engine)
        if engine.engine == "ray":
            _exit_as(_classify_ray(paths, run, read, output, engine))
        else:
            _exit_as(_classify_local(paths, run, read, output))


def _check_options(read: ReadOptions, output: OutputOptions, engine: EngineOptions) -> None:
    from ..cluster.ray_cli import check_engine  # no ray import: --engine ray only
    from ..edge.preprocess import BIT_DEPTHS

    check_engine(engine.engine, output.out, output.fmt)
    if read.bit_depth is not None and read.bit_depth not in BIT_DEPTHS:
        raise UsageError(f"--bit-depth must be one of {', '.join(map(str, BIT_DEPTHS))}, got {read.bit_depth}")
    if output.cam_all and output.cam is None:
        raise UsageError("--cam-all needs --cam DIR")
    if engine.engine == "ray" and (output.cam or output.report):
        raise UsageError("--cam and --report work with --engine local only (for now)")
    if engine.engine == "local":
        from ..edge.writers import infer_format

        infer_format(output.out, output.fmt)  # an unknown --format is refused before any work


def _classify_ray(paths, run: ModelOptions, read: ReadOptions, output: OutputOptions, engine: EngineOptions):
    """The Ray engine runs the file the local engine would pick for the actors' device, on that device."""
    from ..cluster.ray_cli import classify_with_ray
    from ..cluster.ray_engine import RayOptions, actor_device

    device = actor_device(run.device, engine.gpus_per_actor)  # chosen here, run there: not checked on the driver
    choice = run.choose(device)
    opts = RayOptions(address=engine.address, actors=engine.actors, gpus_per_actor=engine.gpus_per_actor,
                      batch_size=read.batch_size, device=device, tta=read.tta, bit_depth=read.bit_depth,
                      max_pixels=read.max_pixels or None, scope=run.scope)
    summary = classify_with_ray(paths, choice.path, output.out, output.fmt, opts, console, choice.to_dict())
    if output.summary_json:
        from ..edge.summary import write_summary

        write_summary(summary, output.summary_json)
    return summary


def _classify_local(paths, run: ModelOptions, read: ReadOptions, output: OutputOptions):
    from ..edge.classify import thread_split

    files = _list_files(paths)
    # Decode threads share the cores with onnxruntime: its idle threads sleep rather than spin.
    auto_workers, auto_threads = thread_split()
    clf, choice = run.open(threads=auto_threads)
    if clf.scope_note():  # once per run: out-of-scope cells will not be set aside
        console.print(f"[yellow]warning:[/] {clf.scope_note()}", highlight=False, soft_wrap=True)
    cam_clf = _overlay_model(clf, output)
    summary = _new_summary(clf, choice, files, read, read.workers or auto_workers, output)
    kept = _classify_into_table(clf, files.images, read, read.workers or auto_workers, output, summary)
    _finish(clf, cam_clf, summary, kept, output)
    return summary


def _overlay_model(clf, output: OutputOptions):
    """The model whose gated `cam` maps --cam / --report draw (`edge.precision.overlay_source`), or None."""
    from ..edge.precision import overlay_classifier

    if not output.keeps_rows:
        return None
    cam_clf = overlay_classifier(clf)
    if output.cam is not None and not cam_clf.has_cam:
        raise UsageError(f"--cam: {Path(cam_clf.path).name} has no 'cam' output; export it with "
                         "`leuk-edge export --cam`")
    return cam_clf


def _list_files(paths):
    from ..edge.files import expand_paths

    files = expand_paths(paths)
    if files.missing:
        raise UsageError(f"no such file, folder or match: {', '.join(files.missing)}")
    if not files.images:
        raise UsageError(f"no images found in {', '.join(paths)} (looked for bmp, png, jpg/jpeg, tif/tiff)")
    return files


def _new_summary(clf, choice, files, read: ReadOptions, workers: int, output: OutputOptions):
    from ..edge.bench import session_threads
    from ..edge.classify import StageTimes
    from ..edge.summary import ClassifySummary, scope_entry

    return ClassifySummary(skipped=files.skipped, providers=list(clf.providers), threads=session_threads(clf),
                           workers=workers, precision=choice.to_dict(), scope=scope_entry(clf),
                           batch_size=read.batch_size, tta=read.tta,
                           times=StageTimes(), model=str(choice.path),
                           out=str(output.out) if output.out else "stdout")


def _classify_into_table(clf, images, read: ReadOptions, workers: int, output: OutputOptions, summary) -> list | None:
    """Rows into the table and the summary as they come; Ctrl-C / SIGTERM keep the rows so far. -> the rows when
    a post-pass needs them (--cam, --report), else None."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ..edge.classify import classify_paths
    from ..edge.signals import Terminated
    from ..edge.writers import infer_format, open_writer

    kept: list | None = [] if output.keeps_rows else None
    progress = Progress(TextColumn("classifying"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        console=console, transient=True)
    try:
        with open_writer(output.out, infer_format(output.out, output.fmt)) as writer, progress:
            task = progress.add_task("classify", total=len(images))
            for row in classify_paths(clf, images, batch_size=read.batch_size, workers=workers, tta=read.tta,
                                      times=summary.times, bit_depth=read.bit_depth,
                                      max_pixels=read.max_pixels or None):
                if kept is not None:
                    kept.append(row)
                writer.write(row)
                summary.add(row)
                progress.advance(task)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (graceful_stop): the rows so far are kept
        summary.interrupted = True
        summary.stopped_by = "terminated" if isinstance(exc, Terminated) else "interrupted"
    return kept


def _finish(clf, cam_clf, summary, kept: list | None, output: OutputOptions) -> None:
    from ..edge.summary import render_summary, write_summary

    render_summary(summary, console)
    if output.summary_json:
        write_summary(summary, output.summary_json)
    if kept is not None:
        from .report import after_classify

        after_classify(clf, cam_clf, kept, output.cam, output.cam_all, output.report,
                       str(output.out or "stdout"), summary.interrupted)


def _exit_as(summary) -> None:
    """Both engines end alike: 130 after Ctrl-C, 143 after SIGTERM, 1 when no file could be classified."""
    if summary.interrupted:
        raise typer.Exit(EXIT_SIGTERM if summary.stopped_by == "terminated" else EXIT_SIGINT)
    if summary.classified == 0:
        first = summary.first_error or ""
        fail(f"no file could be classified: all {summary.images} failed to read or decode"
             + (f" (first: {first})" if first else ""), code=1)


def bench(
    model: Annotated[Path, typer.Argument(help="Exported leuk-edge ONNX model.")],
    device: Device = "auto",
    threads: Threads = None,
    batch_sizes: Annotated[str, typer.Option("--batch-sizes", "-b", help="Comma-separated batch sizes.")] = "1,8,32",
    runs: Annotated[int, typer.Option("--runs", min=1, help="Timed runs per batch size.")] = 20,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Untimed warm-up runs per batch size.")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout (no table).")] = False,
    precision: Precision = "auto",
):
    """Model-only latency (p50/p95) and throughput per batch size on the chosen device."""
    from ..edge import Classifier
    from ..edge.bench import bench_model, render_bench

    with user_errors():
        sizes = _batch_sizes(batch_sizes)
        choice = ModelOptions(model, device, threads, precision).choose()
        clf = Classifier(choice.path, device=device, threads=threads)
        report = bench_model(clf, sizes, runs=runs, warmup=warmup, device=device)
        report.precision = choice.to_dict()
    if as_json:
        echo_json(report.to_dict())
    else:
        render_bench(report, console)


def _batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--batch-sizes must be comma-separated integers, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise UsageError("--batch-sizes needs at least one size >= 1")
    return sizes


def register(app: typer.Typer) -> None:
    app.command("classify")(classify)
    app.command("bench")(bench)
