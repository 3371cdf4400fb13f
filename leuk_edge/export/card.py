"""The model card: MODEL.card.md beside an exported model, and its essentials in the ONNX metadata (`card`).

Everything on it is read from the run folder (config.json, split.json, metrics.json), the export's parity
reports and the files themselves; nothing is typed in by hand, so the card cannot drift from the model.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

from .. import DISCLAIMER, SYNTHETIC_NOTE, __version__
from ..edge.files import sha256_file
from ..edge.gates import VARIANT_CAM_RTOL
from ..train.health import health_warnings
from ..train.metrics import split_metrics
from .keras_io import SourceInfo

INTENDED_USE = ("Research and education: sorting single segmented white-cell images (C-NMC 2019 style, one cell on "
                "black) into leukemic blast (all) or normal (hem), as a second look for a trained reviewer.")
OUT_OF_SCOPE = ("Diagnosis or treatment decisions; whole smears or bone-marrow aspirates without cell "
                "segmentation; stains, magnifications or cameras unlike the training data; other leukemias or "
                "cell types; children's and adults' samples outside the training population.")
LIMITATIONS = (
    "Trained on one dataset's staining and scanner; other laboratories shift the inputs and the calibration.",
    "Subject-disjoint validation; the threshold and temperature were fitted on the validation split.",
    "P(all) is a calibrated score on data like the validation split only; it is not a diagnosis.",
    "The class-activation map shows where the evidence lies on the feature-map grid, not why.",
)
METRIC_KEYS = ("n", "accuracy", "balanced_accuracy", "weighted_f1", "roc_auc", "ece", "brier", "nll")


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def card_essentials(keras_path: Path, src: SourceInfo) -> dict:
    """The card's machine-readable core (goes into the ONNX metadata as `card`)."""
    run = Path(keras_path).parent
    cfg = src.config
    split = _read_json(run / "split.json") or {}
    metrics = _read_json(run / "metrics.json") or {}
    data = {"layout": cfg.get("layout"), "synthetic": cfg.get("synthetic"), "root": cfg.get("data_root"),
            "subjects": {k: len(v) for k, v in split.items()}, "cells": cfg.get("n")}
    mets = {}
    for name, m in split_metrics(metrics).items():  # not `health` (or other run-level entries)
        if isinstance(m, dict):
            mets[name] = {k: m[k] for k in METRIC_KEYS if k in m}
            if isinstance(m.get("uncalibrated"), dict):
                mets[name]["uncalibrated"] = m["uncalibrated"]
    return {
        "intended_use": INTENDED_USE,
        "out_of_scope": OUT_OF_SCOPE,
        "training_data": data,
        "metrics": mets,
        "threshold": {"value": src.threshold, "chosen": {
            "config": "on the validation split, maximising Youden's J (balanced accuracy)"
                      + (" on calibrated probabilities" if src.calibration else ""),
            "metrics.json": "the validation threshold in the run's metrics.json (config.json has none)",
            "assumed": "0.5 assumed (no validation-chosen threshold in the run)"}[src.threshold_source]},
        "calibration": src.calibration,
        "limitations": list(LIMITATIONS) + ([SYNTHETIC_NOTE] if cfg.get("synthetic") else []),
        "health": health_warnings(metrics),  # None: a run trained before the health checks
        "scope": metrics.get("scope"),  # None: a run trained before the scope gate
    }


def scope_lines(scope: dict | None) -> list[str]:
    """The card's scope-gate section: what the `ood` output measures and how well it did on the run's data."""
    if not scope:
        return ["- none: this model has no scope gate (trained before it); every cell is called all or hem, "
                "other white cells and debris included"]
    rates = scope.get("in_scope_rate") or {}
    f4 = lambda v: "n/a" if v is None else f"{float(v):.4f}"  # noqa: E731
    taps = ", ".join(scope.get("taps") or ["penultimate"])
    scaled = scope.get("scaled_on_val") or []
    val_scaled = f"; scaled on the val cells: {', '.join(scaled)}" if scaled else ""
    return [f"- {scope.get('method')}: distance of the cell's features ({taps}) from the training cells "
            f"(fitted on {scope.get('fitted_on', 'train')}{val_scaled}); over the threshold "
            f"{_fmt(scope.get('threshold'))} "
            "a cell is labelled `other` and never counted in all, hem or the blast fraction",
            f"- accepts {f4(scope.get('accept_rate_val'))} of the validation cells (asked: "
            f"{_fmt(scope.get('accept'))}); in-scope rate on test {f4(rates.get('test'))}",
            f"- AUROC against {scope.get('n_other')} drawn out-of-scope cells (neutrophils, eosinophils, "
            f"monocytes, basophils, clumps, debris): {f4(scope.get('auroc_other'))}, flagged `other` "
            f"{f4(scope.get('other_flagged'))} — drawn cells, not real ones"]


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _metrics_table(mets: dict) -> list[str]:
    if not mets:
        return ["No metrics.json in the run folder."]
    keys = [k for k in METRIC_KEYS if any(k in m for m in mets.values())]
    lines = ["| split | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, m in mets.items():
        lines.append(f"| {name} | " + " | ".join(_fmt(m.get(k)) for k in keys) + " |")
        if "uncalibrated" in m:
            u = m["uncalibrated"]
            lines.append(f"| {name} (before calibration) | " + " | ".join(
                _fmt(u.get(k)) if k in ("ece", "brier", "nll") else "" for k in keys) + " |")
    return lines


def _variant_notes(artifacts: list) -> list[str]:
    """Per variant: whether `--precision auto` runs it (the report's `auto`) and whose maps overlays draw."""
    lines = []
    for a in artifacts:
        if a.precision == "fp32" or not a.passed:
            continue
        auto = a.parity.extra.get("auto") or {}
        lines.append(f"- {a.precision.upper()}: " + (
            f"--precision auto runs it where the model runs on {a.parity.device} (the provider it was gated on)"
            if auto.get("eligible") else f"not eligible for --precision auto: {auto.get('reason', 'unknown')}"))
        cam = a.parity.cam
        if cam and cam.get("gated"):
            lines.append(f"- {a.precision.upper()} cam maps: " + (
                f"within {VARIANT_CAM_RTOL:.0%} of the FP32 maps' range; overlays may be drawn from them"
                if cam.get("passed") else
                f"differ from the FP32 maps by up to {cam['max_abs_diff']:.3g} (> {cam['tolerance']:.3g}); "
                "overlays come from the FP32 model"))
    return [""] + lines if lines else []


def health_lines(warnings: list[str] | None) -> list[str]:
    """The card's training-health section, placed first: a model that failed a check must not look like one
    that passed."""
    head = ["## Training health", ""]
    if warnings is None:
        return head + [("- not checked: the run was trained before leuk-edge recorded training health "
                        "(no `health` in metrics.json)"), ""]
    if not warnings:
        return head + [("- no warnings: inference mode agrees with training mode on the training cells, the "
                        "temperature lies inside its search bounds, P(all) spreads over the validation cells"), ""]
    return head + [(f"**WARNING: this model failed {len(warnings)} training health check(s); do not deploy it "
                    "before reading them:**"), "", *[f"- {w}" for w in warnings], ""]


def write_card(path: Path, keras_path: Path, src: SourceInfo, artifacts: list, hashes: dict,
               name: Path | None = None) -> Path:
    """MODEL.card.md. `artifacts`: the export's ArtifactResults; `hashes`: file name -> sha256 of its bytes;
    `name`: the model the card is for (default: from `path`)."""
    import onnx
    import onnxruntime
    import tensorflow as tf

    ess = card_essentials(keras_path, src)
    d = ess["training_data"]
    cfg = src.config
    cam = next((a for a in artifacts if a.precision == "fp32"), None)
    lines = [f"# Model card: {Path(name).name if name else Path(path).name}", "", f"**{DISCLAIMER}**", "",
             *health_lines(ess["health"]),
             "## Intended use", "", ess["intended_use"], "", "## Out of scope", "", ess["out_of_scope"], "",
             "## Training data", "",
             f"- data: {d['root'] or 'unknown'} (layout {d['layout'] or 'unknown'})"
             + (f" — **synthetic**: {SYNTHETIC_NOTE}" if d["synthetic"] else ""),
             f"- subjects per split: {d['subjects'] or 'unknown (no split.json)'}",
             f"- cells per split: {d['cells'] or 'unknown'}", "",
             "## Architecture and input", "",
             f"- {src.architecture}, input {src.height}x{src.width} RGB, NHWC float32 = pixel / 255, resize "
             f"`{src.resize}`; output `p_all` = P(all)"
             + (", and `cam`, the class-activation map of the all logit" if cam and cam.parity.cam else ""),
             f"- trained {cfg.get('epochs_run', '?')} epochs, batch {cfg.get('batch_size', '?')}, seed "
             f"{cfg.get('seed', '?')}", "",
             "## Metrics", "", *_metrics_table(ess["metrics"]), "",
             "## Scope gate (out-of-scope cells are `other`)", "", *scope_lines(ess["scope"]), "",
             "## Calibration and threshold", "",
             (f"- temperature scaling, T = {src.temperature:g}, fitted on {src.calibration['fitted_on']} "
              "(folded into the ONNX graph: p_all = sigmoid(logit / T))" if src.calibration
              else "- none: P(all) is the network's sigmoid output, uncalibrated"),
             f"- threshold {src.threshold:g}: {ess['threshold']['chosen']}", "",
             "## Parity and variants", "",
             "| file | precision | passed | images | max abs diff | decision agreement | cam max abs diff |",
             "|---|---|---|---|---|---|---|"]
    for a in artifacts:
        p = a.parity
        cam_diff = f"{p.cam['max_abs_diff']:.3g}" if p.cam else "n/a"
        lines.append(f"| {a.path.name} | {a.precision} | {p.passed} | {p.images} | {p.max_abs_diff:.3g} | "
                     f"{p.decision_agreement:.4f} | {cam_diff} |")
    lines += _variant_notes(artifacts)
    lines += ["", "## Known limitations", "", *[f"- {x}" for x in ess["limitations"]], "",
              "## Versions and hashes", "",
              f"- leuk-edge {__version__}, TensorFlow {tf.__version__}, onnx {onnx.__version__}, "
              f"onnxruntime {onnxruntime.__version__}, Python {platform.python_version()}",
              f"- source `{Path(keras_path).name}` sha256 `{sha256_file(keras_path)}`",
              *[f"- `{name}` sha256 `{h}`" for name, h in hashes.items()], ""]
    Path(path).write_text("\n".join(lines))
    return Path(path)
