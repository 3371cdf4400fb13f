"""`export_model`: .keras -> checked, gated ONNX (+ FP16 / INT8 variants), each with its parity report.

A model that fails its gate is never left under its requested name: it is written to a hidden pending file,
checked, and only then renamed to MODEL.onnx (passed) or MODEL.failed.onnx (failed, kept for debugging).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from .convert import build_model_info, check_onnx, convert_keras, set_metadata
from .defaults import (CALIB_SEED, DEFAULT_ATOL, DEFAULT_BATCH_SIZES, DEFAULT_CALIB_SIZE, DEFAULT_N,
                       DEFAULT_OPSET, FP16_ATOL, INT8_MIN_AGREEMENT, MIN_AGREEMENT_N, onnx_sibling)
from .keras_io import load_keras_model, sha256_file, source_info
from .parity import ParityReport, check_parity, check_variant, parity_inputs, pick_images, report_path
from .variants import make_fp16, make_int8, variant_path


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

    @property
    def passed(self) -> bool:
        return self.fp32.passed and all(v.passed for v in self.variants)

    @property
    def artifacts(self) -> list:
        return [self.fp32, *self.variants]


def failed_path(path: Path) -> Path:
    """MODEL.onnx -> MODEL.failed.onnx: a name nothing loads by accident."""
    return onnx_sibling(path, ".failed.onnx")


def _pending_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.pending.onnx")


def _clear(*paths: Path) -> None:
    for p in paths:
        p.unlink(missing_ok=True)


def _finish(pending: Path, final: Path, report: ParityReport, clf) -> tuple[Path, Path]:
    """Rename the pending model by its verdict and write the report beside the requested name. `clf`, the
    Classifier opened on the pending file (its session holds the model in memory), now names the new path."""
    where = final if report.passed else failed_path(final)
    os.replace(pending, where)
    report.model = str(where)
    clf.path = where
    return where, report.write(report_path(final))


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
    log: Callable[[str], None] = lambda msg: None,
) -> ExportResult:
    """Convert, check, gate; then the requested variants, each gated against the FP32 model.

    Returns the result whatever the verdicts (see `.passed`); raises only for unusable inputs (missing or unsafe
    .keras, bad config, unreadable data folders).
    """
    t_start = time.perf_counter()
    keras_path = Path(keras_path)
    out = Path(out) if out is not None else keras_path.with_suffix(".onnx")
    if not out.name.endswith(".onnx"):
        raise ValueError(f"output must be a .onnx file, got {out}")
    if any(b < 1 for b in batch_sizes) or not batch_sizes:
        raise ValueError("batch sizes must be positive")
    model = load_keras_model(keras_path)
    src = source_info(model, keras_path)
    for w in src.warnings:
        log(f"warning: {w}")
    out.parent.mkdir(parents=True, exist_ok=True)
    # This run replaces whatever an earlier export left under these names, so no stale file can pass for the
    # result of this one (e.g. an old MODEL.onnx beside a failed report).
    _clear(out, failed_path(out), report_path(out))

    pending = _pending_path(out)
    try:
        t0 = time.perf_counter()
        log(f"converting {keras_path.name} ({src.architecture}, {src.height}x{src.width}, opset {opset})")
        proto = convert_keras(model, src.height, src.width, opset)
        info = build_model_info(src, sha256_file(keras_path), opset)
        set_metadata(proto, info.to_json())
        import onnx

        onnx.save(proto, str(pending))
        fp32_clf = check_onnx(pending)  # the one session on the FP32 model: its gate and the variants' reference
        seconds = time.perf_counter() - t0
        log(f"converted in {seconds:.1f} s; running the parity gate")
        report = check_parity(model, fp32_clf, data=parity_data, atol=atol, n=parity_n, batch_sizes=batch_sizes,
                              reference_name=f"keras:{keras_path}", train_resize=src.resize)
        where, rpath = _finish(pending, out, report, fp32_clf)
    finally:
        _clear(pending)
    result = ExportResult(keras_path=keras_path, fp32=ArtifactResult("fp32", where, report, rpath, seconds),
                          warnings=list(src.warnings))
    if not report.passed:
        # Variants are judged against the FP32 model; without a valid one there is nothing to judge them by.
        if fp16 or int8:
            log("skipping FP16/INT8 variants: the FP32 model failed its gate")
        result.total_seconds = time.perf_counter() - t_start
        return result

    n_var = variant_n if variant_n is not None else max(parity_n, MIN_AGREEMENT_N)
    if fp16:
        result.variants.append(_variant(fp32_clf, "fp16", lambda dst: make_fp16(out, dst), parity_data, n_var,
                                        batch_sizes, atol=fp16_atol, log=log))
    if int8:
        # Calibrate on images the gates do not judge by: from the parity folder, the ones its picks leave over.
        parity_files = pick_images(parity_data, max(parity_n, n_var)) if parity_data is not None else ()
        calib = parity_inputs(src.height, src.width, src.resize, calib_data, calib_size, seed=CALIB_SEED,
                              avoid=parity_files)
        log(f"calibrating INT8 on {calib.description}")
        result.variants.append(_variant(fp32_clf, "int8", lambda dst: make_int8(out, dst, calib.x), parity_data,
                                        n_var, batch_sizes, min_agreement=min_agreement, log=log,
                                        extra={"calibration": calib.description}))
    result.total_seconds = time.perf_counter() - t_start
    return result


def _variant(fp32, precision: str, make: Callable[[Path], Path], data, n: int, batch_sizes,
             atol: float | None = None, min_agreement: float | None = None, log=lambda m: None,
             extra: dict | None = None) -> ArtifactResult:
    """`fp32`: the Classifier open on the passed FP32 model, the reference (not opened again)."""
    final = variant_path(fp32.path, precision)
    _clear(final, failed_path(final), report_path(final))
    pending = _pending_path(final)
    try:
        t0 = time.perf_counter()
        make(pending)
        clf = check_onnx(pending)
        seconds = time.perf_counter() - t0
        log(f"{precision.upper()} model made in {seconds:.1f} s; checking it against FP32")
        report = check_variant(fp32, clf, data=data, atol=atol, min_agreement=min_agreement, n=n,
                               batch_sizes=batch_sizes)
        report.extra.update(extra or {})
        where, rpath = _finish(pending, final, report, clf)
    finally:
        _clear(pending)
    return ArtifactResult(precision, where, report, rpath, seconds)
