"""`export_model`: .keras -> checked, gated ONNX (+ FP16 / INT8 variants), each with its parity report.

Four named steps: prepare (every usage check; nothing is written) -> convert -> gate -> variants -> commit.
Everything is made in a staging folder beside the output; the deployed set (MODEL.onnx, its report and card, its
variants and theirs) is replaced only after the FP32 model passed its gate. After a failed FP32 gate the previous
set is untouched and the candidate is kept as MODEL.failed.onnx with MODEL.failed.parity.json, for debugging.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from .card import card_essentials, write_card
from .convert import build_model_info, check_onnx, convert_keras, set_metadata
from .defaults import (CALIB_SEED, DEFAULT_ATOL, DEFAULT_BATCH_SIZES, DEFAULT_CALIB_SIZE, DEFAULT_N,
                       DEFAULT_OPSET, FP16_ATOL, INT8_MIN_AGREEMENT, MIN_GATE_IMAGES)
from ..edge.files import sha256_file
from ..edge.gates import gate_shortfall
from ..edge.model_files import VARIANTS, card_path, failed_path, manifest_path, report_path, variant_path
from .keras_io import SourceInfo, load_keras_model, source_info
from .manifest import write_manifest
from .parity import ParityReport, check_parity, check_source, check_variant, parity_inputs, pick_images
from .variants import make_fp16, make_int8

HEALTH_PREFIX = "TRAINING HEALTH: "  # marks the run's health warnings among an export's warnings


@dataclass
class ArtifactResult:
    """One written model (FP32, FP16 or INT8) and its gate."""
    precision: str
    path: Path  # where the model now lies: the requested name if passed, ….failed.onnx otherwise
    parity: ParityReport
    parity_path: Path
    seconds: float  # conversion / quantization time, gate excluded

    @property
    def passed(self) -> bool:
        return self.parity.passed


@dataclass
class ExportResult:
    keras_path: Path
    fp32: ArtifactResult
    variants: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    total_seconds: float = 0.0
    card_path: Path | None = None

    @property
    def passed(self) -> bool:
        return self.fp32.passed and all(v.passed for v in self.variants)

    @property
    def artifacts(self) -> list:
        return [self.fp32, *self.variants]


@dataclass
class Plan:
    """Everything an export needs, checked before anything is written (step `prepare`)."""
    keras_path: Path
    out: Path
    model: object  # the loaded Keras model
    src: SourceInfo
    parity_data: object  # folder, ImageSet or None (synthetic cells)
    calib_data: object
    cam: bool
    device: str
    opset: int
    warnings: list
    scope: object = None  # train.scope.ScopeStats from RUN/scope.npz, None for a run without a scope gate


@dataclass
class Staged:
    """A model made in the staging folder: its open Classifier, its gate, and where it goes on commit."""
    precision: str
    staged: Path
    final: Path
    clf: object
    seconds: float
    report: ParityReport | None = None

    @property
    def passed(self) -> bool:
        return self.report is not None and self.report.passed

    @property
    def landing(self) -> Path:
        """The name the model gets on commit: its final name if it passed, ….failed.onnx if not."""
        return self.final if self.passed else failed_path(self.final)


def deployed_set(out: Path) -> list[Path]:
    """Every file an export owns under the name MODEL.onnx: the model, its variants, their reports, failed
    candidates, the card and the manifest. A commit replaces exactly these."""
    models = [out, *(variant_path(out, p) for p in VARIANTS)]
    files = [card_path(out), manifest_path(out)]
    for m in models:
        files += [m, report_path(m), failed_path(m), report_path(failed_path(m))]
    return files


def export_model(
    keras_path: str | Path,
    out: str | Path | None = None,
    opset: int = DEFAULT_OPSET,
    parity_data: str | Path | None = None,
    atol: float = DEFAULT_ATOL,
    parity_n: int = DEFAULT_N,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    fp16: bool = False,
    fp16_atol: float = FP16_ATOL,
    int8: bool = False,
    calib_data: str | Path | None = None,
    calib_size: int = DEFAULT_CALIB_SIZE,
    min_agreement: float = INT8_MIN_AGREEMENT,
    variant_n: int | None = None,
    cam: bool = True,
    device: str = "cpu",
    log: Callable[[str], None] = lambda msg: None,
) -> ExportResult:
    """Convert, check, gate; then the requested variants, each gated against the FP32 model; then commit.

    Without `parity_data`/`calib_data` the gates use the run's own validation images and INT8 calibration its
    training images (config.json + split.json beside the .keras), synthetic cells only when those are not on
    disk. `cam`: add the class-activation map output. `device`: the execution provider the candidates are gated
    on (the Keras reference runs on the CPU). Returns the result whatever the verdicts (see `.passed`); raises
    only for unusable inputs, before anything is written.
    """
    t_start = time.perf_counter()
    plan = prepare(keras_path, out, opset, parity_data, calib_data, int8, batch_sizes, cam, device, log)
    staging = Path(tempfile.mkdtemp(prefix=f".{plan.out.name}.", suffix=".staging", dir=plan.out.parent))
    try:
        fp32 = convert(plan, staging, log)
        gate(plan, fp32, atol, parity_n, batch_sizes)
        if fp32.passed:
            n_var = variant_n if variant_n is not None else max(parity_n, MIN_GATE_IMAGES)
            staged = variants(plan, fp32, fp16, fp16_atol, int8, calib_size, min_agreement,
                              max(parity_n, n_var), n_var, batch_sizes, log)
            fp32_result, variant_results, card = commit(plan, fp32, staged)
        else:
            # Variants are judged against the FP32 model; without a valid one there is nothing to judge them by.
            if fp16 or int8:
                log("skipping FP16/INT8 variants: the FP32 model failed its gate")
            fp32_result, variant_results, card = keep_failed(fp32), [], None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ExportResult(plan.keras_path, fp32_result, variant_results, plan.warnings,
                        time.perf_counter() - t_start, card)


# ------------------------------------------------------------------------------------------------- prepare

def prepare(keras_path, out, opset: int, parity_data, calib_data, int8: bool, batch_sizes, cam: bool,
            device: str, log) -> Plan:
    """Every check that can fail on bad input, before anything is written: output name, batch sizes, device,
    data folders, the .keras file and its run settings, and which images the gates will use."""
    from ..edge.providers import providers_for

    keras_path = Path(keras_path)
    out = Path(out) if out is not None else keras_path.with_suffix(".onnx")
    if not out.name.endswith(".onnx"):
        raise ValueError(f"output must be a .onnx file, got {out}")
    if not batch_sizes or any(b < 1 for b in batch_sizes):
        raise ValueError("batch sizes must be positive")
    providers_for(device)  # an unavailable execution provider is a usage error (DeviceError), not a failed gate
    for folder in (parity_data, calib_data):
        check_source(folder)
    model = load_keras_model(keras_path)
    src = source_info(model, keras_path)
    from ..train.scope import load_for

    scope = load_for(keras_path)  # RUN/scope.npz, None for a run trained before the scope gate
    if cam or src.temperature != 1.0 or scope is not None:
        from ..train.cam import split_model

        # The cam output, the folded temperature and the scope gate all need the pooling + Dense head: say so
        # now, not mid-way
        split_model(model)
    warnings = list(src.warnings) + training_health(keras_path)
    if parity_data is None or (int8 and calib_data is None):
        from .run_data import run_images

        run, why = run_images(keras_path.parent)
        if run is None:
            warnings.append(f"{why}: the gates use synthetic cells, not the run's images")
        parity_data = parity_data if parity_data is not None else (run.val if run else None)
        calib_data = calib_data if calib_data is not None else (run.train if run else None)
    for w in warnings:
        log(f"warning: {w}")
    if scope is None:  # said, not a warning of the export: the model runs as every model did before the gate
        log("note: the run has no scope.npz (trained before the scope gate): the model gets no `ood` output")
    out.parent.mkdir(parents=True, exist_ok=True)
    return Plan(keras_path, out, model, src, parity_data, calib_data, cam, device, opset, warnings, scope)


def training_health(keras_path: Path) -> list[str]:
    """The run's training-health warnings (metrics.json `health`), each a warning of this export: printed, in
    `export --json`, and on the model card. Export warns and goes on — the checks are heuristics on a small
    validation split, and the parity gate judges the conversion, not the training — but it never stays quiet."""
    from ..train.health import health_warnings

    try:
        metrics = json.loads((Path(keras_path).parent / "metrics.json").read_text())
    except (OSError, ValueError):
        return []
    return [HEALTH_PREFIX + w for w in health_warnings(metrics) or []]


# ------------------------------------------------------------------------------------------------- convert

def convert(plan: Plan, staging: Path, log) -> Staged:
    """The graph to export (calibration folded in, the `cam` output added), tf2onnx, metadata, ONNX checks;
    written to the staging folder under its final name."""
    import onnx

    from ..train.cam import cam_metadata
    from ..train.graph import explain_model

    t0 = time.perf_counter()
    src = plan.src
    log(f"converting {plan.keras_path.name} ({src.architecture}, {src.height}x{src.width}, opset {plan.opset}"
        f"{', temperature %g' % src.temperature if src.calibration else ''}{', with cam' if plan.cam else ''})")
    graph = explain_model(plan.model, src.temperature, cam=plan.cam, scope=plan.scope)
    proto = convert_keras(graph, src.height, src.width, plan.opset)
    info = build_model_info(src, sha256_file(plan.keras_path), plan.opset,
                            cam=cam_metadata(plan.model) if plan.cam else None,
                            card=card_essentials(plan.keras_path, src),
                            scope=plan.scope.metadata() if plan.scope is not None else None)
    set_metadata(proto, info.to_json())
    staged = staging / plan.out.name
    onnx.save(proto, str(staged))
    clf = check_onnx(staged, plan.device)  # the one session on the FP32 model: its gate and the variants' reference
    clf.path = plan.out  # reports name the file by the name it will have
    seconds = time.perf_counter() - t0
    log(f"converted in {seconds:.1f} s; running the parity gate")
    return Staged("fp32", staged, plan.out, clf, seconds)


# ---------------------------------------------------------------------------------------------------- gate

def gate(plan: Plan, fp32: Staged, atol: float, n: int, batch_sizes) -> None:
    """The FP32 gate: the candidate (on the plan's device) vs the calibrated Keras model (CPU)."""
    fp32.report = check_parity(plan.model, fp32.clf, data=plan.parity_data, atol=atol, n=n,
                               batch_sizes=batch_sizes, reference_name=f"keras:{plan.keras_path}",
                               train_resize=plan.src.resize, temperature=plan.src.temperature,
                               scope=plan.scope)
    bind(fp32.report, plan.keras_path, fp32.staged)


def bind(report: ParityReport, reference: Path, model: Path) -> None:
    """Name in the report the SHA-256 of the files it judged (the staged model has the bytes that land)."""
    report.reference_sha256, report.model_sha256 = sha256_file(reference), sha256_file(model)


def keep_failed(fp32: Staged) -> ArtifactResult:
    """A failed FP32 candidate: MODEL.failed.onnx + MODEL.failed.parity.json; the deployed set is untouched."""
    where = failed_path(fp32.final)
    os.replace(fp32.staged, where)
    fp32.report.model = str(where)
    rpath = fp32.report.write(report_path(where))
    return ArtifactResult("fp32", where, fp32.report, rpath, fp32.seconds)


# ------------------------------------------------------------------------------------------------ variants

def variants(plan: Plan, fp32: Staged, fp16: bool, fp16_atol: float, int8: bool,
             calib_size: int, min_agreement: float, parity_pick: int, n: int, batch_sizes, log) -> list[Staged]:
    """FP16 / INT8 from the staged FP32 model, each gated against it (the FP32 reference runs on the CPU)."""
    from ..edge.model import Classifier

    out = []
    if not (fp16 or int8):
        return out
    ref = fp32.clf
    if plan.device != "cpu":
        ref = Classifier(fp32.staged, device="cpu")
        ref.path = fp32.final
    if fp16:
        out.append(_variant(plan, ref, fp32.staged, "fp16", lambda dst: make_fp16(fp32.staged, dst),
                            n, batch_sizes, atol=fp16_atol, log=log))
    if int8:
        # Calibrate on images the gates do not judge by: the run's training images, or those a folder has left
        # over after the parity picks.
        parity_files = pick_images(plan.parity_data, parity_pick) if plan.parity_data is not None else ()
        src = plan.src
        calib = parity_inputs(src.height, src.width, src.resize, plan.calib_data, calib_size, seed=CALIB_SEED,
                              avoid=parity_files)
        log(f"calibrating INT8 on {calib.description}")
        out.append(_variant(plan, ref, fp32.staged, "int8",
                            lambda dst: make_int8(fp32.staged, dst, calib.x), n, batch_sizes,
                            min_agreement=min_agreement, log=log,
                            extra={"calibration": calib.description, "calibration_images": calib.kind}))
    return out


def _variant(plan: Plan, ref, fp32_staged: Path, precision: str, make: Callable[[Path], Path],
             n: int, batch_sizes, atol: float | None = None, min_agreement: float | None = None,
             log=lambda m: None, extra: dict | None = None) -> Staged:
    t0 = time.perf_counter()
    final = variant_path(plan.out, precision)
    staged = make(variant_path(fp32_staged, precision))
    clf = check_onnx(staged, plan.device)
    clf.path = final
    seconds = time.perf_counter() - t0
    log(f"{precision.upper()} model made in {seconds:.1f} s; checking it against FP32")
    report = check_variant(ref, clf, data=plan.parity_data, atol=atol, min_agreement=min_agreement, n=n,
                           batch_sizes=batch_sizes)
    report.extra.update(extra or {})
    bind(report, fp32_staged, staged)
    note_auto_eligibility(plan, precision, report, log)
    return Staged(precision, staged, final, clf, seconds, report)


def note_auto_eligibility(plan: Plan, precision: str, report: ParityReport, log) -> None:
    """Whether `--precision auto` may run this variant by its gate (the device is checked where it runs), in the
    report (`auto`) and, when not, as a warning: a variant gated on fewer than MIN_GATE_IMAGES images, on synthetic
    cells or with a looser gate is made and reported, never claimed as the export's gate."""
    why = gate_shortfall(report.to_dict(), precision) if report.passed else "it did not pass its gate"
    report.extra["auto"] = {"eligible": why is None, "reason": why or "the export's own gate, passed"}
    if why is not None and report.passed:
        message = f"{precision.upper()} variant made but not eligible for --precision auto: {why}"
        plan.warnings.append(message)
        log(f"warning: {message}")


# -------------------------------------------------------------------------------------------------- commit

def commit(plan: Plan, fp32: Staged, staged: list[Staged]) -> tuple[ArtifactResult, list, Path]:
    """Replace the deployed set by this export's. Reports and card are written into the staging folder first;
    then every file is moved into place; then what is left of the previous set (variants not made this time, an
    old failed candidate) is removed, since it belongs to a model that is no longer there."""
    items = [fp32, *staged]
    moves, results = [], []
    for item in items:
        item.report.model = str(item.landing)
        staged_report = item.report.write(item.staged.with_name(item.staged.name + ".parity.json"))
        moves += [(item.staged, item.landing), (staged_report, report_path(item.final))]
        results.append(ArtifactResult(item.precision, item.landing, item.report, report_path(item.final),
                                      item.seconds))
    hashes = {item.landing.name: sha256_file(item.staged) for item in items}
    staged_card = write_card(item.staged.with_name("card.md"), plan.keras_path, plan.src, results, hashes,
                             name=plan.out)
    moves.append((staged_card, card_path(plan.out)))
    # The old manifest goes first and the new one is written last: a commit cut short leaves no manifest, so a
    # half-replaced set is never taken for a whole one (`--precision auto` then runs FP32).
    manifest_path(plan.out).unlink(missing_ok=True)
    for src_, dst in moves:
        os.replace(src_, dst)
    kept = {dst for _, dst in moves}
    for stale in deployed_set(plan.out):
        if stale not in kept and stale != manifest_path(plan.out):
            stale.unlink(missing_ok=True)
    write_manifest(plan.out, plan.keras_path, [dst for _, dst in moves])
    return results[0], results[1:], card_path(plan.out)
