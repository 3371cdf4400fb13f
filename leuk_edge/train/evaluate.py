"""`leuk-edge evaluate` (a saved model on a dataset) and `leuk-edge compare` (runs side by side)."""

from __future__ import annotations

import json
from pathlib import Path

from .. import DISCLAIMER, SYNTHETIC_NOTE
from .calibration import apply_temperature, calibration_figures, temperature_of
from .data import load_dataset
from .metrics import compute_metrics, run_threshold
from .models import DEFAULT_SIZE, RESIZE


def _resolve(model_or_run: str | Path) -> tuple[Path, dict, dict | None]:
    p = Path(model_or_run)
    model_path = p / "model.keras" if p.is_dir() else p
    if not model_path.is_file():
        raise FileNotFoundError(f"no Keras model at {model_path}")
    cfg_path = model_path.parent / "config.json"
    config = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    split_path = model_path.parent / "split.json"
    split = json.loads(split_path.read_text()) if split_path.is_file() else None
    return model_path, config, split


def evaluate(model_or_run: str | Path, data: str | Path, batch_size: int = 32) -> dict:
    """Metrics of a saved model. With its run's split.json, `val` is the run's validation subjects; without,
    every labelled training_data image is scored as `all_labelled`. `test` is the labelled prelim set.
    Probabilities are calibrated with the run's temperature (1 for runs without one) before the run's threshold
    applies; each split also reports ECE, Brier and NLL, and the same three before calibration."""
    from .quiet import import_tensorflow

    import_tensorflow()
    import keras

    from .fit import predict_items

    model_path, config, split = _resolve(model_or_run)
    # safe_mode: a .keras file carrying arbitrary code (Lambda layers) is refused, not executed.
    model = keras.saving.load_model(model_path, safe_mode=True)
    size = int(config.get("image_size") or model.input_shape[1])
    resize = config.get("resize") or RESIZE.get(config.get("model", "cnn"), "area")
    threshold, _ = run_threshold(model_path.parent, config)  # chosen on the calibrated val P(all), as export reads it
    temperature = temperature_of(config)
    ds = load_dataset(data)
    sets = {}
    if split and split.get("val"):
        val_subjects = set(split["val"])
        sets["val"] = [it for it in ds.train if it.subject in val_subjects]
    if not sets.get("val"):
        sets = {"all_labelled": ds.train}
    if ds.test:
        sets["test"] = ds.test
    out = {}
    for name, items in sets.items():
        labels = [it.label for it in items]
        raw = predict_items(model, items, size, resize, batch_size)
        out[name] = {**compute_metrics(labels, apply_temperature(raw, temperature), threshold),
                     **calibration_figures(labels, raw, temperature)}
    from .scope import evaluate_entry, load_for

    stats = load_for(model_path)  # the run's scope gate, as trained (None: a run from before it)
    if stats is not None:
        out["scope"] = evaluate_entry(model, stats, sets, size, resize, batch_size)
    return out


def compare(runs: list[str | Path], out: str | Path) -> dict:
    """Side-by-side chart and markdown table of runs' metrics.json (test split if all runs have it, else val)."""
    from .plots import COMPARE_METRICS, plot_compare

    rows, synthetic = [], False
    for r in runs:
        r = Path(r)
        mpath = r / "metrics.json"
        if not mpath.is_file():
            raise FileNotFoundError(f"{r} is not a training run folder (no metrics.json)")
        cfg = json.loads((r / "config.json").read_text()) if (r / "config.json").is_file() else {}
        synthetic |= bool(cfg.get("synthetic"))
        name = f"{cfg.get('model', r.name)}@{cfg.get('image_size', DEFAULT_SIZE.get(cfg.get('model'), '?'))}"
        rows.append({"name": name, "run": str(r), "all_metrics": json.loads(mpath.read_text())})
    split = "test" if all("test" in row["all_metrics"] for row in rows) else "val"
    for row in rows:
        row["metrics"] = row["all_metrics"][split]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plot_compare(rows, split, out / "comparison.png", synthetic)
    head = "| model | run | n | " + " | ".join(label for _, label in COMPARE_METRICS) + " |"
    lines = [f"# Model comparison ({split} split)", "", head, "|" + "---|" * (3 + len(COMPARE_METRICS))]
    for row in rows:
        m = row["metrics"]
        vals = " | ".join("n/a" if m.get(k) is None else f"{m[k]:.4f}" for k, _ in COMPARE_METRICS)
        lines.append(f"| {row['name']} | {row['run']} | {m['n']} | {vals} |")
    lines += ["", f"_{DISCLAIMER}{' ' + SYNTHETIC_NOTE if synthetic else ''}_", ""]
    (out / "comparison.md").write_text("\n".join(lines))
    result = {"split": split, "rows": [{k: row[k] for k in ("name", "run", "metrics")} for row in rows]}
    (out / "comparison.json").write_text(json.dumps(result, indent=2))
    return result


def explain_errors(model_or_run: str | Path, data: str | Path, n: int, out: str | Path,
                   batch_size: int = 32) -> dict:
    """Grad-CAM overlays (train/cam.py) of the `n` most confident errors of each evaluated split (as
    `evaluate`: the run's val subjects, else every labelled training image; and the labelled test set), for
    model review. Confidence of an error = the probability the model gave the wrong class (calibrated with the
    run's temperature, decided at its threshold). Writes OUT/<split>/NN_<name>.png and OUT/errors.json."""
    import keras
    import numpy as np

    from ..edge.labels import is_all
    from ..edge.preprocess import decode_image, load_image
    from ..synth.cells import write_bmp
    from .cam import overlay, reference

    if n < 1:
        raise ValueError("--explain needs a positive number of errors")
    model_path, config, split = _resolve(model_or_run)
    model = keras.saving.load_model(model_path, safe_mode=True)
    size = int(config.get("image_size") or model.input_shape[1])
    resize = config.get("resize") or RESIZE.get(config.get("model", "cnn"), "area")
    threshold, _ = run_threshold(model_path.parent, config)
    temperature = temperature_of(config)
    ds = load_dataset(data)
    sets = {}
    if split and split.get("val"):
        sets["val"] = [it for it in ds.train if it.subject in set(split["val"])]
    if not sets.get("val"):
        sets = {"all_labelled": ds.train}
    if ds.test:
        sets["test"] = ds.test
    out = Path(out)
    result = {"threshold": threshold, "temperature": temperature, "splits": {}}
    for name, items in sets.items():
        batches = (np.stack([load_image(it.path, size, size, resize) for it in items[i:i + batch_size]])
                   for i in range(0, len(items), batch_size))
        p = np.concatenate([reference(model, x, temperature, cam=False)[0] for x in batches])
        y = np.array([it.label for it in items])
        pred = is_all(p, threshold).astype(int)
        wrong = np.flatnonzero(pred != y)
        confidence = np.where(pred == 1, p, 1 - p)  # the probability given to the wrong class
        worst = wrong[np.argsort(-confidence[wrong], kind="stable")][:n]
        rows = []
        for rank, i in enumerate(worst):
            it = items[i]
            x = load_image(it.path, size, size, resize)[None]
            _, cam = reference(model, x, temperature, cam=True)
            sign = 1.0 if pred[i] == 1 else -1.0  # show the evidence for the (wrong) decision
            predicted, truth = ("all" if pred[i] else "hem"), ("all" if it.label else "hem")
            img = overlay(decode_image(it.path), sign * cam[0],
                          f"P(all) {p[i]:.2f} -> {predicted}, truth {truth}")
            path = out / name / f"{rank + 1:02d}_{Path(it.path).stem}.png"
            write_bmp(path, img)
            rows.append({"path": it.path, "truth": truth, "predicted": predicted, "probability": float(p[i]),
                         "overlay": str(path)})
        result["splits"][name] = {"n": len(items), "errors": int(len(wrong)), "explained": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "errors.json").write_text(json.dumps(result, indent=2))
    return result
