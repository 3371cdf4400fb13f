"""The `classify --engine ray` command body: list -> check the model -> Ray run -> sorted CSV/JSON or Parquet ->
the local engine's summary table. `leuk_edge.cli.classify` dispatches here in a few lines."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..edge.classify import Row, StageTimes
from ..edge.signals import Terminated, graceful_stop
from ..edge.summary import ClassifySummary, render_summary, scope_entry
from .ray_engine import RayEngineError, RayOptions, classify_ray, connect, list_inputs, pool_size

ENGINES = ("local", "ray")


def is_parquet(out: str | Path | None, fmt: str | None) -> bool:
    return (fmt or "").lower() == "parquet" or (out is not None and Path(out).suffix.lower() == ".parquet")


def check_engine(engine: str, out: str | Path | None, fmt: str | None) -> None:
    """One-line errors for engine options, before any work starts."""
    if engine not in ENGINES:
        raise RayEngineError(f"unknown engine {engine!r}; choose local or ray")
    if engine == "local" and is_parquet(out, fmt):
        raise RayEngineError("Parquet output needs --engine ray (pip install 'leuk-edge[ray]'); use .csv/.json here")
    if is_parquet(out, fmt) and (out is None or str(out) == "-"):
        raise RayEngineError("Parquet output needs --out FILE.parquet (it cannot go to stdout)")


def write_rows(rows: Sequence[Row], out: str | Path | None, fmt: str | None) -> None:
    """Rows sorted by path: Parquet (one file) for .parquet, else the local engine's CSV/JSON/JSONL writers."""
    rows = sorted(rows, key=lambda r: r.path)
    if is_parquet(out, fmt):
        import pyarrow.parquet as pq

        from .ray_engine import INTERNAL_COLUMNS, rows_table

        Path(out).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(rows_table(rows).drop_columns(list(INTERNAL_COLUMNS)), str(out))
        return
    from ..edge.writers import open_writer

    with open_writer(out, fmt) as writer:
        for row in rows:
            writer.write(row)


def classify_with_ray(paths: Sequence[str], model: Path, out: Path | None, fmt: str | None, opts: RayOptions,
                      console, precision: dict | None = None) -> ClassifySummary:
    """Run the Ray engine end to end; raises ValueErrors (one line) for bad input or an unreachable cluster.
    Ctrl-C or SIGTERM keeps the rows already classified (written sorted) and marks the summary interrupted."""
    from ..edge import Classifier
    from ..edge.writers import infer_format

    if not is_parquet(out, fmt):
        fmt = infer_format(out, fmt)
    files = list_inputs(paths)
    if files.missing:
        raise RayEngineError(f"no such file, folder or match: {', '.join(files.missing)}")
    if not files.images:
        raise RayEngineError(f"no images found in {', '.join(map(str, paths))} (looked for bmp, png, jpg/jpeg, "
                             "tif/tiff)")
    probe = Classifier(model, device="cpu", scope=opts.scope)  # a bad model fails here, before any cluster work
    started = connect(opts.address)  # an unreachable cluster is the run's one line (no warning before it)
    if probe.scope_note():  # once per run, on the driver (the actors run the same file)
        console.print(f"[yellow]warning:[/] {probe.scope_note()}", highlight=False, soft_wrap=True)
    times = StageTimes()
    rows: list[Row] = []
    # ray.init installs its own SIGTERM handler (sys.exit): put the graceful one back for the run.
    with graceful_stop():
        summary, failure = _run(files, model, opts, times, rows, out, console, started)
    summary.precision = precision or {}
    summary.scope = scope_entry(probe)
    write_rows(rows, out, fmt)
    if failure is not None:
        first = (str(failure).strip().splitlines() or [type(failure).__name__])[0][:200]
        raise RayEngineError(f"the Ray run failed after {len(rows)} of {len(files.images)} rows (kept in "
                             f"{out or 'stdout'}): {first}")
    render_summary(summary, console)
    return summary


def _run(files, model: Path, opts: RayOptions, times: StageTimes, rows: list[Row], out, console, started: bool):
    """Classify into `rows`; -> (summary, failure past the retries or None). Stops like Ctrl-C on SIGINT/SIGTERM."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    failure: Exception | None = None
    ran_on: set[str] = set()  # the providers the actors' sessions report
    try:
        n_actors = pool_size(opts)
        summary = ClassifySummary(skipped=files.skipped, providers=[],
                                  threads=f"{max(1, int(opts.cpus_per_actor))} per actor",
                                  batch_size=opts.batch_size, tta=opts.tta, times=times, model=str(model),
                                  out=str(out) if out else "stdout")
        progress = Progress(TextColumn("classifying (ray)"), BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn(), console=console, transient=True)
        try:
            with progress:
                task = progress.add_task("classify", total=len(files.images))
                for row in classify_ray(files.images, model, opts, times, providers=ran_on):
                    rows.append(row)
                    summary.add(row)
                    progress.advance(task)
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM through graceful_stop
            summary.interrupted = True
            summary.stopped_by = "terminated" if isinstance(exc, Terminated) else "interrupted"
        except Exception as exc:  # noqa: BLE001 - e.g. a batch that failed past its retries: keep what is done
            failure = exc
    finally:
        if started:
            import ray

            ray.shutdown()
    summary.providers = [f"ray: {n_actors} actor(s), device {opts.device}"
                         + (f", {opts.gpus_per_actor:g} GPU each" if opts.gpus_per_actor else "")
                         + (f"; ran on {', '.join(sorted(ran_on))}" if ran_on else "")]
    return summary, failure
