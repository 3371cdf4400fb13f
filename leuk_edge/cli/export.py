"""`leuk-edge export MODEL.keras` and `leuk-edge parity REF MODEL.onnx`. TensorFlow is imported inside the
commands only, so the rest of the CLI starts fast and works with the edge-only install.

Exit codes: 0 passed, 1 a parity gate failed, 2 unusable input (missing file, unsafe model, bad options).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..export.defaults import (DEFAULT_ATOL, DEFAULT_CALIB_SIZE, DEFAULT_N, DEFAULT_OPSET, FP16_ATOL,
                               INT8_MIN_AGREEMENT, MIN_GATE_IMAGES)
from .common import UsageError, console, echo_json, fail, user_errors


def _artifact_line(a) -> str:
    p = a.parity
    verdict = "[green]passed[/]" if p.passed else "[bold red]FAILED[/]"
    crit = "  ".join(
        ([f"max |diff| {p.max_abs_diff:.3g} (atol {p.atol:g})"] if p.atol is not None else [])
        + ([f"agreement {p.decision_agreement:.4f} (min {p.min_agreement:g})"] if p.min_agreement is not None else []))
    return f"  {a.precision:<5} {verdict}  {crit}  ->  {a.path}  (report {a.parity_path.name})"


def _health_banner(warnings: list[str]) -> None:
    """The run's training-health warnings once more, last and in red: export goes on, the user must not miss it."""
    from rich.markup import escape

    from ..export.exporter import HEALTH_PREFIX

    health = [w[len(HEALTH_PREFIX):] for w in warnings if w.startswith(HEALTH_PREFIX)]
    if health:
        console.print(f"[bold red]WARNING: the training run failed {len(health)} health check(s) (metrics.json "
                      "`health`, on the model card); do not deploy this model before reading them:[/]")
        for line in health:
            console.print(f"[red]  - {escape(line)}[/]", highlight=False, soft_wrap=True)


def export_cmd(
    model: Path = typer.Argument(..., help="Keras model, e.g. RUN/model.keras (RUN/config.json is read if present)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="ONNX file to write (default: MODEL.onnx beside it)."),
    opset: int = typer.Option(DEFAULT_OPSET, "--opset", min=13, help="ONNX opset (>= 13 for per-channel INT8)."),
    parity_data: Optional[Path] = typer.Option(
        None, "--parity-data",
        help="Image folder for the parity gate (default: the run's validation images, found through "
             "RUN/config.json and split.json; synthetic cells, with a warning, when they are not on disk)."),
    parity_size: int = typer.Option(
        DEFAULT_N, "--parity-size", min=1,
        help=f"Images in the FP32 parity gate (the FP16/INT8 gates use at least {MIN_GATE_IMAGES})."),
    atol: float = typer.Option(DEFAULT_ATOL, "--atol", min=0.0, help="Largest allowed |P_keras - P_onnx|."),
    fp16: bool = typer.Option(False, "--fp16", help="Also write MODEL.fp16.onnx (float16 weights, float32 I/O)."),
    fp16_atol: float = typer.Option(FP16_ATOL, "--fp16-atol", min=0.0, help="FP16 gate: largest |P_fp16 - P_fp32|."),
    int8: bool = typer.Option(False, "--int8", help="Also write MODEL.int8.onnx (static QDQ, per-channel)."),
    calib_data: Optional[Path] = typer.Option(
        None, "--calib-data",
        help="Image folder to calibrate INT8 on (default: the run's training images; never its test images)."),
    calib_size: Optional[int] = typer.Option(
        None, "--calib-size", min=1, help=f"Calibration images for INT8 (default {DEFAULT_CALIB_SIZE}).",
        show_default=False),
    min_agreement: float = typer.Option(INT8_MIN_AGREEMENT, "--min-agreement", min=0.0, max=1.0,
                                        help="INT8 gate: least fraction of decisions equal to FP32's."),
    cam: bool = typer.Option(True, "--cam/--no-cam",
                             help="Add the `cam` output: the class-activation map of the all logit."),
    device: str = typer.Option("cpu", "--device",
                               help="Execution provider to gate the ONNX models on (cpu, cuda, openvino, ...); "
                                    "the Keras reference runs on the CPU."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
):
    """Convert a trained Keras model to ONNX with its preprocessing metadata, and gate it on Keras/ONNX parity.

    The calibration temperature of the run (config.json) is folded into the graph. The new model, its variants,
    reports and MODEL.card.md replace the previous ones only when the FP32 gate passed."""
    with user_errors():
        if (calib_data is not None or calib_size is not None) and not int8:
            raise UsageError("--calib-data/--calib-size only apply with --int8")
        from ..export.exporter import export_model

        result = export_model(model, out, opset=opset, parity_data=parity_data, atol=atol, parity_n=parity_size,
                              fp16=fp16, fp16_atol=fp16_atol, int8=int8, calib_data=calib_data,
                              calib_size=DEFAULT_CALIB_SIZE if calib_size is None else calib_size,
                              min_agreement=min_agreement, cam=cam, device=device,
                              log=lambda msg: console.print(msg, highlight=False, soft_wrap=True))
    _report_export(result, as_json)


def _report_export(result, as_json: bool) -> None:
    """The export's outcome: one line per artifact, JSON on request, the card, health warnings; exit 1 when a
    gate failed (naming the files that must not be deployed)."""
    console.print(f"exported in {result.fp32.seconds:.1f} s (total {result.total_seconds:.1f} s with gates):")
    for a in result.artifacts:
        console.print(_artifact_line(a), highlight=False, soft_wrap=True)
    if as_json:
        echo_json({"passed": result.passed, "warnings": result.warnings,
                   "card": str(result.card_path) if result.card_path else None,
                   "artifacts": [{"precision": a.precision, "path": str(a.path), "seconds": a.seconds,
                                  "parity_report": str(a.parity_path), **a.parity.to_dict()}
                                 for a in result.artifacts]})
    if result.card_path:
        console.print(f"  model card -> {result.card_path}", highlight=False, soft_wrap=True)
    _health_banner(result.warnings)
    if not result.passed:
        bad = [a for a in result.artifacts if not a.passed]
        reasons = "; ".join(f"{a.precision}: {', '.join(a.parity.failures)}" for a in bad)
        kept = ("; the previously exported files were left as they were" if not result.fp32.passed else "")
        fail(f"parity gate failed ({reasons}); the failed model(s) were written as "
             f"{', '.join(str(a.path) for a in bad)} and must not be deployed{kept}", code=1)


def parity_cmd(
    reference: Path = typer.Argument(..., help="Reference: the .keras model, or the FP32 .onnx for a variant."),
    model: Path = typer.Argument(..., help="The ONNX model to check (it carries the leuk_edge metadata)."),
    data: Optional[Path] = typer.Option(
        None, "--data", help="Image folder (default: for a .keras reference the run's validation images, else "
                             "synthetic cells)."),
    atol: Optional[float] = typer.Option(
        None, "--atol", min=0.0, show_default=False,
        help=f"Largest allowed |difference|. Default {DEFAULT_ATOL:g} against Keras; against an ONNX reference "
             f"the gate follows the model's metadata precision (fp16: atol {FP16_ATOL:g}; int8: decision "
             f"agreement >= {INT8_MIN_AGREEMENT:g}, no atol; fp32: atol {DEFAULT_ATOL:g}) unless --atol or "
             "--min-agreement is given."),
    min_agreement: Optional[float] = typer.Option(
        None, "--min-agreement", min=0.0, max=1.0, show_default=False,
        help="Least fraction of decisions at the model's threshold equal to the reference's (default: see "
             "--atol). Against Keras it is checked in addition to --atol."),
    size: Optional[int] = typer.Option(
        None, "--size", min=1, show_default=False,
        help=f"Number of images (default {DEFAULT_N} for a Keras reference, {MIN_GATE_IMAGES} for an ONNX one)."),
    report: bool = typer.Option(True, "--report/--no-report", help="Write MODEL.parity.json beside the model."),
    device: str = typer.Option("cpu", "--device",
                               help="Execution provider MODEL.onnx runs on (cpu, cuda, openvino, ...); the "
                                    "reference runs on the CPU."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
):
    """Run the parity gate on any Keras/ONNX (or FP32/variant ONNX) pair; the exit code says pass (0) or fail (1)."""
    with user_errors():
        from ..edge.model_files import report_path
        from ..export.parity import check_parity, check_variant

        from ..edge.providers import providers_for

        for p in (reference, model):
            if not p.is_file():
                raise UsageError(f"file not found: {p}")
        providers_for(device)  # an unavailable provider is a one-line usage error, before any model is loaded
        if reference.suffix == ".onnx":
            rep = check_variant(reference, model, data=data, atol=atol, min_agreement=min_agreement, n=size,
                                device=device)
        elif reference.suffix == ".keras":
            if data is None:  # as export: the run's validation images when they are on disk
                from ..export.run_data import run_images

                run, why = run_images(reference.parent)
                data = run.val if run else None
                if run is None:
                    console.print(f"warning: {why}: checking on synthetic cells", highlight=False)
            rep = check_parity(reference, model, data=data, atol=DEFAULT_ATOL if atol is None else atol,
                               n=DEFAULT_N if size is None else size, min_agreement=min_agreement, device=device)
        else:
            raise UsageError(f"reference must be a .keras or .onnx file, got {reference.name}")
        if report:
            path = rep.write(report_path(model))
            console.print(f"report: {path}", highlight=False)
    if as_json:
        echo_json(rep.to_dict())
    if rep.passed:
        console.print(rep.summary(), highlight=False, soft_wrap=True)
    else:
        fail(f"{model} does not match {reference}: " + rep.summary().replace("\n  - ", "; "), code=1)


def register(app: typer.Typer) -> None:
    app.command("export")(export_cmd)
    app.command("parity")(parity_cmd)
