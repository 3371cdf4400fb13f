"""`leuk-edge train | evaluate | compare` (TensorFlow imported lazily, inside the commands)."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from .common import console, echo_json, user_errors


class ModelName(str, Enum):
    cnn = "cnn"
    inception = "inception"


class StainAugment(str, Enum):
    hed = "hed"
    none = "none"


class Strategy(str, Enum):
    default = "default"
    mirrored = "mirrored"
    multiworker = "multiworker"


def train_cmd(
    data: Path = typer.Option(..., "--data", help="C-NMC folder (or any folder holding that layout, or DIR/{all,hem})."),
    model: ModelName = typer.Option(ModelName.cnn, "--model", help="cnn (from scratch, 256 px) or inception (InceptionV3, 224 px)."),
    out: Path = typer.Option(..., "--out", help="Run folder to write."),
    epochs: int = typer.Option(20, min=1, help="Epochs (inception with pretrained weights: half head-only, half fine-tuning; with --weights none all train the whole network)."),
    batch_size: int = typer.Option(32, min=1),
    image_size: Optional[int] = typer.Option(None, min=32, help="Override the architecture's input size (InceptionV3 needs >= 75)."),
    weights: str = typer.Option("imagenet", help="inception: imagenet (Keras cache/download), none, or a local .h5 path."),
    seed: int = typer.Option(0),
    strategy: Strategy = typer.Option(Strategy.default, help="mirrored: all local GPUs (tf.distribute.MirroredStrategy); multiworker: several "
                                  "machines (MultiWorkerMirroredStrategy, TF_CONFIG; --batch-size is the global batch)."),
    val_fraction: float = typer.Option(0.2, min=0.05, max=0.5, help="Share of training subjects held out for validation."),
    patience: int = typer.Option(5, min=1, help="Early-stopping patience on validation loss."),
    learning_rate: float = typer.Option(3e-4),
    fine_tune_learning_rate: float = typer.Option(1e-5, help="inception with pretrained weights: the fine-tuning phase's rate."),
    no_class_weight: bool = typer.Option(False, "--no-class-weight", help="Do not weight classes by frequency."),
    stain_augment: StainAugment = typer.Option(StainAugment.hed, "--stain-augment", help="Colour augmentation of "
                                               "the training cells: hed (HED jitter + mild brightness/saturation, "
                                               "Tellez et al. 2019) or none."),
    stain_sigma: float = typer.Option(0.05, "--stain-sigma", min=0.0, max=0.5, help="HED jitter strength."),
    scope_accept: float = typer.Option(0.95, "--scope-accept", min=0.5, max=1.0,
                                       help="Share of in-scope validation cells the scope gate accepts "
                                            "(its threshold on the Mahalanobis ood score)."),
):
    """Train a model on C-NMC-layout data into a run folder (model, metrics, plots, split)."""
    with user_errors():
        if model == ModelName.inception and image_size is not None and image_size < 75:
            raise ValueError("InceptionV3 needs --image-size of at least 75")
        from ..train.fit import TrainConfig, train

        cfg = TrainConfig(data=str(data), model=model.value, out=str(out), epochs=epochs, batch_size=batch_size,
                          image_size=image_size, weights=weights, seed=seed, strategy=strategy.value,
                          val_fraction=val_fraction, patience=patience, learning_rate=learning_rate,
                          fine_tune_learning_rate=fine_tune_learning_rate,
                          class_weight=not no_class_weight, stain_augment=stain_augment.value,
                          stain_sigma=stain_sigma, scope_accept=scope_accept)
        from ..train.metrics import split_metrics

        metrics = train(cfg, log=lambda m: console.print(m, highlight=False))
    for split, m in split_metrics(metrics).items():
        console.print(f"{split}: n={m['n']} balanced_accuracy={m['balanced_accuracy']} "
                      f"weighted_f1={m['weighted_f1']:.4f} roc_auc={m['roc_auc']} threshold={m['threshold']:.3f} "
                      f"ECE={m['ece']:.3f} (uncalibrated {m['uncalibrated']['ece']:.3f})", highlight=False)
    warnings = (metrics.get("health") or {}).get("warnings") or []
    if warnings:  # repeated last, where a user looks: the numbers above describe a model that may be broken
        console.print(f"[bold red]WARNING: {len(warnings)} training health warning(s) (metrics.json `health`); "
                      "do not deploy this model before reading them:[/]", highlight=False)
        from rich.markup import escape

        for line in warnings:
            console.print(f"[red]  - {escape(line)}[/]", highlight=False)


def evaluate_cmd(
    model_or_run: Path = typer.Argument(..., help="A run folder or a .keras file."),
    data: Path = typer.Option(..., "--data"),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write the metrics JSON here."),
    batch_size: int = typer.Option(32, min=1),
    explain: int = typer.Option(0, "--explain", min=0, help="Also save Grad-CAM overlays of the N most "
                                "confident errors of each split (for model review)."),
    explain_dir: Optional[Path] = typer.Option(None, "--explain-dir", help="Where --explain writes (default: "
                                               "RUN/explain)."),
):
    """Re-evaluate a saved model on a labelled dataset (threshold, temperature and size from its run's
    config.json): metrics plus calibration (ECE, Brier, NLL, and the same before calibration) per split."""
    with user_errors():
        from ..train.evaluate import evaluate

        metrics = evaluate(model_or_run, data, batch_size)
        if explain:
            _explain(model_or_run, data, explain, explain_dir, batch_size)
    if out:
        out.write_text(json.dumps(metrics, indent=2))
    echo_json(metrics)


def _explain(model_or_run: Path, data: Path, n: int, folder: Optional[Path], batch_size: int) -> None:
    from ..train.evaluate import explain_errors

    run = model_or_run if model_or_run.is_dir() else model_or_run.parent
    res = explain_errors(model_or_run, data, n, folder or run / "explain", batch_size)
    for split, s in res["splits"].items():
        console.print(f"{split}: {s['errors']} errors of {s['n']}; {len(s['explained'])} explained -> "
                      f"{folder or run / 'explain'}/{split}/", highlight=False)


def compare_cmd(
    runs: List[Path] = typer.Argument(..., help="Two or more run folders."),
    out: Path = typer.Option(..., "--out", help="Folder for comparison.png / .md / .json."),
):
    """Side-by-side chart and table of runs (accuracy, balanced accuracy, weighted F1, AUC)."""
    with user_errors():
        from ..train.evaluate import compare

        result = compare(runs, out)
    console.print((out / "comparison.md").read_text(), highlight=False)
    console.print(f"chart: {out / 'comparison.png'}  ({result['split']} split)")


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)
    app.command("evaluate")(evaluate_cmd)
    app.command("compare")(compare_cmd)
