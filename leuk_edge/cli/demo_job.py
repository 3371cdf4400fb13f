"""`leuk-edge demo`: the whole toolkit on synthetic data, step by step through the real CLI commands.

data synth -> train cnn + inception -> compare -> export (parity gate, INT8) -> classify a held-out folder ->
synthetic microscope video -> stream -> report.html (the slide report) -> report.md. Each step is exactly what a
user would type, run in-process, so the demo exercises the product rather than a parallel code path.
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import DISCLAIMER, SYNTHETIC_NOTE


@dataclass(frozen=True)
class DemoPlan:
    """Sizes of one demo run. `full` keeps the architectures' real input sizes; `quick` shrinks everything."""
    name: str
    subjects: int
    cells_per_subject: int
    cnn_size: int
    cnn_epochs: int
    inception_size: int
    inception_epochs: int
    video_frames: int
    field_size: tuple[int, int]
    int8_both: bool
    # The microscope's scale: fine enough that a 30 um C-NMC crop holds at least the CNN's input (256 px needs
    # <= 0.117 um/px; the stream warns otherwise). Up-sampled crops look unlike the training tiles, and the scope
    # gate rightly calls such blasts `other` (measured: at 0.15 um/px both blasts of the full demo's video were).
    field_um_per_px: float = 0.15


FULL = DemoPlan("full", subjects=18, cells_per_subject=30, cnn_size=256, cnn_epochs=15, inception_size=224,
                inception_epochs=6, video_frames=90, field_size=(1280, 720), int8_both=False,
                field_um_per_px=0.1)
QUICK = DemoPlan("quick", subjects=9, cells_per_subject=6, cnn_size=64, cnn_epochs=2, inception_size=75,
                 inception_epochs=2, video_frames=12, field_size=(640, 360), int8_both=False)


class DemoError(RuntimeError):
    """A demo step failed; the message names the step and its exit code."""


@dataclass
class Step:
    name: str
    argv: list[str]
    seconds: float = 0.0
    exit_code: int = 0


@dataclass
class Demo:
    out: Path
    plan: DemoPlan
    log: Callable[[str], None] = print
    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def run(self, name: str, *args, gate_may_fail: bool = False) -> Step:
        from . import app

        argv = [str(a) for a in args]
        self.log(f"[{len(self.steps) + 1}] {name}: leuk-edge {shlex.join(argv)}")
        t0 = time.perf_counter()
        code = app(args=argv, prog_name="leuk-edge", standalone_mode=False)
        step = Step(name, argv, time.perf_counter() - t0, int(code or 0))
        self.steps.append(step)
        if step.exit_code == 1 and gate_may_fail:
            return step  # a variant's gate said no: the caller records it and carries on with FP32
        if step.exit_code != 0:
            raise DemoError(f"step '{name}' exited with {step.exit_code}; its output is above")
        return step


def _imagenet_weights(log) -> str:
    """Use ImageNet weights when they are already in the Keras cache; never block on a download."""
    from ..train.weights import keras_cache_file

    if keras_cache_file().is_file():
        return "imagenet"
    log("note: ImageNet weights are not in the Keras cache, so the InceptionV3 demo trains from random weights "
        "(--weights none); expect it to do worse than the CNN here")
    return "none"


def export_with_int8(d: Demo, name: str, keras_path: Path, models: Path, int8: bool) -> Path:
    """Export through the FP32 gate (must pass) and optionally INT8 (its gate may fail: then FP32 is used and
    the report says why). The gates run on the run's own images: parity on its validation split, INT8
    calibration on its training split. Returns the FP32 model: the edge steps run it with `--precision auto`,
    which takes the INT8 sibling only when it passed the export's gate on >= 100 real images (`edge.precision`)."""
    fp32 = models / f"{name}.onnx"
    args = ["export", keras_path, "--out", fp32]
    if not int8:
        d.run(f"export {name} (parity gate)", *args)
        return fp32
    step = d.run(f"export {name} (parity gate + INT8)", *args, "--int8", gate_may_fail=True)
    if not fp32.is_file():
        raise DemoError(f"the FP32 export of {name} failed its parity gate")
    if step.exit_code == 0 and (models / f"{name}.int8.onnx").is_file():
        auto = json.loads((models / f"{name}.int8.parity.json").read_text()).get("auto") or {}
        if auto.get("eligible") is False:
            d.notes.append(f"the INT8 {name} model passed its gate but --precision auto does not run it "
                           f"({auto.get('reason')}); the edge steps use the FP32 model")
            d.log("note: " + d.notes[-1])
        return fp32
    report = json.loads((models / f"{name}.int8.parity.json").read_text())  # a failed variant keeps its report
    d.notes.append(int8_failure_note(name, report))
    d.log("note: " + d.notes[-1])
    return fp32


def int8_failure_note(name: str, report: dict) -> str:
    """The demo's note for an INT8 variant that failed its gate, with the gate's own reasons (P(all) decisions,
    the scope gate's in/out decisions, ...) from its parity report."""
    reasons = "; ".join(report.get("failures") or []) or (
        f"decisions agree with FP32 on {report['decision_agreement']:.3f} < {report.get('min_agreement', 0.98)}")
    return (f"the INT8 {name} model failed its gate ({reasons}) and was renamed {name}.int8.failed.onnx; the edge "
            "steps use the FP32 model. Short synthetic training leaves many cells near a threshold (P(all) or the "
            "scope gate's), where INT8 rounding flips decisions")


def run_demo(out: str | Path, quick: bool = False, log: Callable[[str], None] = print) -> Path:
    plan = QUICK if quick else FULL
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    d = Demo(out, plan, log)
    t_start = time.perf_counter()
    if plan.name == "quick":
        d.notes.append(f"quick mode: input sizes shrunk to {plan.cnn_size} px (CNN) and {plan.inception_size} px "
                       "(InceptionV3) and epochs cut; the full demo uses 256 and 224 px")
        log(d.notes[-1])
    data = out / "data"
    d.run("synthetic C-NMC dataset", "data", "synth", data, "--subjects", plan.subjects,
          "--cells-per-subject", plan.cells_per_subject, "--final-cells", 10, "--seed", 0)
    d.run("inspect the dataset", "data", "inspect", data)
    weights = _imagenet_weights(log)
    if weights == "none":
        d.notes.append("InceptionV3 trained from random weights (ImageNet weights not cached, no download offline)")
    runs = out / "runs"
    d.run("train the CNN", "train", "--data", data, "--model", "cnn", "--out", runs / "cnn", "--epochs",
          plan.cnn_epochs, "--batch-size", 16, "--image-size", plan.cnn_size, "--patience", 6)
    d.run("train InceptionV3", "train", "--data", data, "--model", "inception", "--out", runs / "inception",
          "--epochs", plan.inception_epochs, "--batch-size", 16, "--image-size", plan.inception_size,
          "--weights", weights, "--patience", 3)
    d.run("compare the models", "compare", runs / "cnn", runs / "inception", "--out", out / "compare")
    models = out / "models"
    prelim = data / "C-NMC_Leukemia" / "validation_data" / "C-NMC_test_prelim_phase_data"
    edge_model = export_with_int8(d, "cnn", runs / "cnn" / "model.keras", models, True)
    export_with_int8(d, "inception", runs / "inception" / "model.keras", models, plan.int8_both)
    held_out = data / "C-NMC_Leukemia" / "testing_data"
    d.run("classify the held-out folder (edge runner)", "classify", held_out, prelim, "--model",
          edge_model, "--out", out / "classify.csv", "--device", "cpu")
    w, h = plan.field_size
    fields = out / "fields"
    # A normal smear's mix (neutrophils ~55 %, lymphocytes ~30 %, ...) plus blasts: the out-of-scope cells the
    # model must call `other` rather than count in the blast fraction.
    d.run("synthetic microscope fields and video (normal leukocyte mix + blasts)", "data", "fields", fields,
          "--frames", 3, "--video-frames", plan.video_frames, "--width", w, "--height", h, "--seed", 0,
          "--mix", "normal", "--blast-share", 0.15, "--um-per-px", plan.field_um_per_px)
    d.run("stream mode over the video", "stream", "--source", fields / "drift.mp4", "--model", models / "cnn.onnx",
          "--jsonl", out / "stream.jsonl", "--record", out / "stream.mp4", "--summary", out / "stream_summary.json",
          "--device", "cpu")
    d.run("slide report (self-contained HTML)", "report", out / "classify.csv", out / "stream.jsonl",
          out / "stream_summary.json", "--model", edge_model, "--run", runs / "cnn", "--out", out / "report.html")
    report = write_report(d, time.perf_counter() - t_start)
    log(f"demo finished in {time.perf_counter() - t_start:.0f} s; report: {report}")
    log(f"open the station: leuk-edge serve --model {models / 'cnn.onnx'} --source {fields / 'drift.mp4'} --loop")
    return report


def _metrics_table(out: Path) -> list[str]:
    cmp = json.loads((out / "compare" / "comparison.json").read_text())
    lines = [f"| model | split | n | accuracy | balanced acc. | weighted F1 | ROC AUC |", "|---|---|---|---|---|---|---|"]
    for row in cmp["rows"]:
        m = row["metrics"]
        fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
        lines.append(f"| {row['name']} | {cmp['split']} | {m['n']} | {fmt(m['accuracy'])} | "
                     f"{fmt(m['balanced_accuracy'])} | {fmt(m['weighted_f1'])} | {fmt(m['roc_auc'])} |")
    return lines


def _parity_lines(models: Path) -> list[str]:
    lines = ["| model file | passed | max abs diff | decision agreement | atol |", "|---|---|---|---|---|"]
    for p in sorted(models.glob("*.parity.json")):
        r = json.loads(p.read_text())
        lines.append(f"| {Path(r.get('model') or p.name.replace('.parity.json', '.onnx')).name} | {r['passed']} | {r['max_abs_diff']:.2e} | "
                     f"{r['decision_agreement']:.4f} | {r.get('atol')} |")
    return lines


def _calibration_lines(runs: Path) -> list[str]:
    from ..train.calibration import temperature_of
    from ..train.metrics import split_metrics

    lines = ["| run | schedule | temperature | split | ECE before → after | Brier before → after | NLL before → after |",
             "|---|---|---|---|---|---|---|"]
    for run in sorted(p for p in runs.iterdir() if (p / "metrics.json").is_file()):
        cfg = json.loads((run / "config.json").read_text())
        t = temperature_of(cfg)
        for split, m in split_metrics(json.loads((run / "metrics.json").read_text())).items():
            u = m.get("uncalibrated") or {}
            cell = lambda k: f"{u[k]:.4f} → {m[k]:.4f}" if k in u and k in m else "n/a"  # noqa: E731
            lines.append(f"| {run.name} | {cfg.get('schedule', '')} | {t:.3f} | {split} | {cell('ece')} | "
                         f"{cell('brier')} | {cell('nll')} |")
    return lines


def _cards(out: Path) -> str:
    cards = sorted((out / "models").glob("*.card.md"))
    return ", ".join(f"`{p.relative_to(out)}`" for p in cards) if cards else "none written by this export."


def _scope_lines(out: Path, stream: dict) -> list[str]:
    """What the stream called the video's cells, against the drawn truth (synth.truth.score_stream)."""
    from ..synth.truth import read_events, score_stream

    truth_path, events_path = out / "fields" / "drift.json", out / "stream.jsonl"
    if not (stream and truth_path.is_file() and events_path.is_file()):
        return ["(no stream run)"]
    score = score_stream(read_events(events_path), json.loads(truth_path.read_text()), summary=stream)
    scope, cells = stream.get("scope") or {}, stream.get("cells") or {}
    kinds = (score.get("tracks") or score)["kinds"]
    bf = score["blast_fraction"]
    lines = [f"Scope gate in use: **{scope.get('used')}** ({scope.get('method') or scope.get('note')}). "
             f"Tracked cells: {cells.get('total')} = all {cells.get('all')} + hem {cells.get('hem')} + "
             f"**other {cells.get('other')}** (never counted in the blast fraction).", "",
             "| drawn kind | cells (tracks) | labelled other |", "|---|---:|---:|"]
    lines += [f"| {k} | {v['cells']} | {v['other_share'] if v['other_share'] is not None else '–'} |"
              for k, v in kinds.items()]
    lines += ["", f"Blast fraction: truth {bf['truth']['fraction']}, measured {bf['measured']['fraction']} "
                  f"(95 % interval {bf['measured']['ci95']}); truth inside the interval: {bf['truth_within_ci95']}."]
    return lines


def write_report(d: Demo, seconds: float) -> Path:
    out = d.out
    arts = sorted(p for p in out.rglob("*") if p.is_file() and "data" not in p.relative_to(out).parts[:1])
    stream = json.loads((out / "stream_summary.json").read_text()) if (out / "stream_summary.json").is_file() else {}
    lines = [
        "# leuk-edge demo report", "",
        f"**{DISCLAIMER}** {SYNTHETIC_NOTE}", "",
        f"Plan: `{d.plan.name}` — {d.plan.subjects} synthetic subjects x {d.plan.cells_per_subject} cells; "
        f"CNN at {d.plan.cnn_size} px, InceptionV3 at {d.plan.inception_size} px. Total {seconds:.0f} s.", "",
        *(f"- {n}" for n in d.notes), "",
        "## Models (held-out synthetic subjects)", "", *_metrics_table(out), "",
        "![comparison](compare/comparison.png)", "",
        "## Training schedule and calibration (temperature fitted on val)", "", *_calibration_lines(out / "runs"), "",
        "## Export parity gates", "", *_parity_lines(out / "models"), "",
        "## Slide report and model card", "",
        "`report.html`: counts and blast fraction with its 95 % Wilson interval per sample, the P(all) histogram, "
        "the flagged and uncertain cells (with CAM overlays when the model has a cam output), the model card and "
        "the CNN run's metrics; one file, opens offline. Model card: " + _cards(out), "",
        "## Out-of-scope cells in the field video", "", *_scope_lines(out, stream), "",
        "## Stream mode", "",
        "```json", json.dumps(stream, indent=2)[:3000], "```", "",
        "## Steps", "", "| # | step | command | seconds |", "|---|---|---|---|",
        *(f"| {i} | {s.name} | `leuk-edge {shlex.join(s.argv)}` | {s.seconds:.1f} |"
          for i, s in enumerate(d.steps, 1)), "",
        "## Artefacts", "", *(f"- `{p.relative_to(out)}` ({p.stat().st_size:,} bytes)" for p in arts), "",
        "Figures: `runs/*/curves.png`, `runs/*/confusion.png`, `runs/*/roc.png`, `compare/comparison.png`; "
        "annotated video: `stream.mp4`.", "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
