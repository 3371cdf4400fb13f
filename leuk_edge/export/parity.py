"""The parity gate: a reference model (Keras, or the FP32 ONNX for variants) and an ONNX model run on the same
inputs; the report says how far apart they are and whether that is within tolerance.

Two checks:
  tensor parity   – identical preprocessed tensors into both models, at batch 1 and at a larger batch (dynamic
                    batch dimensions and batch-dependent kernels are a classic source of export bugs);
  pipeline parity – image files through the *training* input pipeline into Keras vs the same files through the
                    *edge* Classifier (its metadata-driven preprocessing) into ONNX, so a train/serve skew
                    (wrong resize method or size in the metadata, colour order, scaling) cannot hide.
TensorFlow is imported only when a Keras reference is involved.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from ..edge.model import Classifier, make_session
from ..edge.preprocess import is_image_file, load_image, preprocess

DEFAULT_ATOL = 1e-4
DEFAULT_BATCH_SIZES = (1, 5)
DEFAULT_N = 20

Predict = Callable[[np.ndarray], np.ndarray]


@dataclass
class ParityReport:
    n: int
    max_abs_diff: float
    mean_abs_diff: float
    decision_agreement: float
    atol: float | None
    passed: bool
    reference: str
    model: str
    images: str
    criterion: str  # "max_abs_diff" or "decision_agreement"
    threshold: float
    batch_sizes: list
    per_batch: dict  # batch size -> {max_abs_diff, mean_abs_diff, decision_agreement}
    min_agreement: float | None = None
    pipeline: dict | None = None
    failures: list = field(default_factory=list)  # plain-language reasons when passed is False
    extra: dict = field(default_factory=dict)  # written as top-level fields (e.g. calibration for INT8)

    def to_dict(self) -> dict:
        d = asdict(self)
        extra = d.pop("extra")
        return {**d, **extra}

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    def summary(self) -> str:
        verdict = "PASSED" if self.passed else "FAILED"
        text = (f"parity {verdict}: n={self.n}, max_abs_diff={self.max_abs_diff:.3g}"
                + (f" (atol {self.atol:g})" if self.atol is not None else "")
                + f", decision agreement {self.decision_agreement:.4f}"
                + (f" (min {self.min_agreement:g})" if self.min_agreement is not None else ""))
        if self.pipeline:
            text += f", pipeline max_abs_diff={self.pipeline['max_abs_diff']:.3g}"
        return text + "".join(f"\n  - {f}" for f in self.failures)


def report_path(onnx_path: str | Path) -> Path:
    """X.onnx -> X.parity.json (beside it)."""
    p = Path(onnx_path)
    stem = p.name[:-5] if p.name.endswith(".onnx") else p.name
    return p.with_name(stem + ".parity.json")


# ---------------------------------------------------------------------------------------------------- inputs

def list_images(data_dir: str | Path, n: int) -> list[Path]:
    """Up to n image files under data_dir (recursive), spread evenly over the sorted list so a class-per-folder
    layout contributes both classes; deterministic."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise NotADirectoryError(f"image folder not found: {data_dir}")
    files = sorted(p for p in data_dir.rglob("*") if p.is_file() and is_image_file(p))
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(('bmp', 'png', 'jpg', 'tif'))}) under {data_dir}")
    if len(files) > n:
        idx = np.linspace(0, len(files) - 1, n).round().astype(int)
        files = [files[i] for i in idx]
    return files


def synthetic_cells(n: int, seed: int = 0) -> list[np.ndarray]:
    """n synthetic C-NMC-like cells (RGB uint8 450x450), alternating blast / normal."""
    from ..train.synth import render_cnmc_image

    rng = np.random.default_rng(seed)
    return [render_cnmc_image(rng, "all" if i % 2 == 0 else "hem") for i in range(n)]


def write_cells(cells: Sequence[np.ndarray], folder: Path) -> list[Path]:
    """Save RGB cells as lossless PNG so the file route and the array route see the same pixels."""
    paths = []
    for i, rgb in enumerate(cells):
        p = folder / f"cell_{i:04d}.png"
        if not cv2.imwrite(str(p), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {p}")
        paths.append(p)
    return paths


def parity_inputs(height: int, width: int, resize: str, data: str | Path | None = None, n: int = DEFAULT_N,
                  seed: int = 0) -> tuple[np.ndarray, list[Path] | None, list[np.ndarray] | None, str]:
    """-> (NHWC float32 batch through THE preprocessing, files or None, raw synthetic RGB or None, description)."""
    if data is not None:
        files = list_images(data, n)
        x = np.stack([load_image(p, height, width, resize) for p in files])
        return x, files, None, f"{len(files)} images from {data}"
    cells = synthetic_cells(n, seed)
    x = np.stack([preprocess(c, height, width, resize) for c in cells])
    return x, None, cells, f"{n} synthetic cells (leuk_edge.train.synth, seed {seed})"


# --------------------------------------------------------------------------------------------------- runners

def keras_predict(model) -> Predict:
    def run(batch: np.ndarray) -> np.ndarray:
        # Direct call, not model.predict: no tf.data wrapping, and training=False pins Dropout/BatchNorm.
        return np.asarray(model(batch, training=False), np.float32).reshape(len(batch), -1)[:, -1]
    return run


def onnx_predict(path: str | Path) -> Predict:
    # The same session settings as the edge (full graph optimisation, CPU): fused kernels are what ships.
    session = make_session(path, device="cpu")
    inp, out = session.get_inputs()[0].name, session.get_outputs()[0].name

    def run(batch: np.ndarray) -> np.ndarray:
        y = session.run([out], {inp: np.ascontiguousarray(batch, np.float32)})[0]
        return np.asarray(y, np.float32).reshape(len(batch), -1)[:, -1]
    return run


def _batched(fn: Predict, x: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate([fn(x[i:i + batch]) for i in range(0, len(x), batch)])


def _stats(ref: np.ndarray, got: np.ndarray, threshold: float) -> dict:
    diff = np.abs(ref.astype(np.float64) - got.astype(np.float64))
    return {
        "max_abs_diff": float(diff.max()) if diff.size else 0.0,
        "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
        "decision_agreement": float(np.mean((ref >= threshold) == (got >= threshold))) if diff.size else 1.0,
    }


def compare(reference: Predict, candidate: Predict, x: np.ndarray, threshold: float,
            batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES) -> dict:
    """Run both at every batch size on the same tensors; -> {batch: stats} plus the worst case over batches."""
    per_batch = {}
    for b in batch_sizes:
        per_batch[str(b)] = _stats(_batched(reference, x, b), _batched(candidate, x, b), threshold)
    return {
        "per_batch": per_batch,
        "max_abs_diff": max(s["max_abs_diff"] for s in per_batch.values()),
        "mean_abs_diff": max(s["mean_abs_diff"] for s in per_batch.values()),
        "decision_agreement": min(s["decision_agreement"] for s in per_batch.values()),
    }


# -------------------------------------------------------------------------------------------------- pipeline

def pipeline_parity(keras_model, keras_size: tuple[int, int], keras_resize: str, onnx_path: str | Path,
                    files: Sequence[Path], atol: float, batch_size: int = 5) -> dict:
    """Image file -> training tf.data pipeline -> Keras  vs  image file -> edge Classifier -> ONNX.

    The Keras side uses the size/resize the model was trained with (config.json); the ONNX side uses only what
    its metadata says. Any disagreement in preprocessing shows up as a difference here.
    """
    from ..train.pipeline import image_dataset

    ds = image_dataset([str(f) for f in files], None, size=keras_size, resize=keras_resize, batch_size=batch_size)
    keras_p = np.concatenate([keras_predict(keras_model)(np.asarray(x)) for x in ds])
    clf = Classifier(onnx_path, device="cpu")
    h, w = clf.size
    edge_p = clf.predict(np.stack([load_image(f, h, w, clf.info.input.resize) for f in files]))
    stats = _stats(keras_p, edge_p, clf.threshold)
    return {"n": len(files), **stats, "passed": bool(stats["max_abs_diff"] <= atol),
            "keras": {"size": list(keras_size), "resize": keras_resize},
            "onnx": {"size": [h, w], "resize": clf.info.input.resize}}


# ------------------------------------------------------------------------------------------------------ gate

def _onnx_settings(onnx_path: Path) -> tuple[int, int, str, float]:
    info = Classifier(onnx_path, device="cpu").info
    return info.input.height, info.input.width, info.input.resize, info.threshold


def check_parity(reference, onnx_path: str | Path, data: str | Path | None = None, atol: float = DEFAULT_ATOL,
                 n: int = DEFAULT_N, batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES, seed: int = 0,
                 pipeline: bool = True, reference_name: str | None = None,
                 train_resize: str | None = None) -> ParityReport:
    """Keras (a .keras path or a loaded model) vs ONNX. Passes when every |difference| <= atol, at every batch
    size and, with `pipeline`, also through the train and edge input pipelines.

    `train_resize`: the resize method of the training pipeline; default from config.json beside a .keras path
    (what training used), else the ONNX metadata's."""
    from .keras_io import load_keras_model, source_info

    onnx_path = Path(onnx_path)
    keras_path = None
    if isinstance(reference, (str, Path)):
        keras_path = Path(reference)
        model = load_keras_model(keras_path)
    else:
        model = reference
    h, w, resize, threshold = _onnx_settings(onnx_path)
    kh, kw = int(model.inputs[0].shape[1]), int(model.inputs[0].shape[2])
    if (kh, kw) != (h, w):
        raise ValueError(f"the ONNX model takes {h}x{w} images but the Keras model {kh}x{kw}")
    x, files, cells, desc = parity_inputs(h, w, resize, data, n, seed)
    res = compare(keras_predict(model), onnx_predict(onnx_path), x, threshold, batch_sizes)
    failures = []
    if res["max_abs_diff"] > atol:
        failures.append(f"Keras and ONNX outputs differ by up to {res['max_abs_diff']:.3g} > atol {atol:g}")

    pipe = None
    if pipeline:
        keras_resize = train_resize or (source_info(model, keras_path).resize if keras_path else resize)
        with tempfile.TemporaryDirectory(prefix="leuk_parity_") as tmp:
            if files is None:
                files = write_cells(cells, Path(tmp))
            pipe = pipeline_parity(model, (kh, kw), keras_resize, onnx_path, files, atol, max(batch_sizes))
        if not pipe["passed"]:
            failures.append(f"whole-pipeline parity (training input pipeline + Keras vs edge preprocessing + "
                            f"ONNX) differs by up to {pipe['max_abs_diff']:.3g} > atol {atol:g}")
    return ParityReport(
        n=len(x), max_abs_diff=res["max_abs_diff"], mean_abs_diff=res["mean_abs_diff"],
        decision_agreement=res["decision_agreement"], atol=atol, passed=not failures,
        reference=reference_name or (f"keras:{keras_path}" if keras_path else f"keras:{model.name}"),
        model=str(onnx_path), images=desc, criterion="max_abs_diff", threshold=threshold,
        batch_sizes=list(batch_sizes), per_batch=res["per_batch"], pipeline=pipe, failures=failures)


def check_variant(reference_onnx: str | Path, onnx_path: str | Path, data: str | Path | None = None,
                  atol: float | None = None, min_agreement: float | None = None, n: int = DEFAULT_N,
                  batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES, seed: int = 0) -> ParityReport:
    """A reduced-precision ONNX model vs the FP32 ONNX it came from: by atol (FP16) and/or by decision agreement
    at the model's threshold (INT8, whose outputs legitimately move by a few hundredths)."""
    if atol is None and min_agreement is None:
        raise ValueError("a variant check needs atol, min_agreement or both")
    h, w, resize, threshold = _onnx_settings(Path(reference_onnx))
    vh, vw, vresize, vthreshold = _onnx_settings(Path(onnx_path))
    if (vh, vw, vresize, vthreshold) != (h, w, resize, threshold):
        raise ValueError(f"{onnx_path} and {reference_onnx} carry different preprocessing/threshold metadata")
    x, _, _, desc = parity_inputs(h, w, resize, data, n, seed)
    res = compare(onnx_predict(reference_onnx), onnx_predict(onnx_path), x, threshold, batch_sizes)
    failures = []
    if atol is not None and res["max_abs_diff"] > atol:
        failures.append(f"outputs differ from FP32 by up to {res['max_abs_diff']:.3g} > atol {atol:g}")
    if min_agreement is not None and res["decision_agreement"] < min_agreement:
        failures.append(f"decision agreement with FP32 at threshold {threshold:g} is "
                        f"{res['decision_agreement']:.4f} < {min_agreement:g}")
    return ParityReport(
        n=len(x), max_abs_diff=res["max_abs_diff"], mean_abs_diff=res["mean_abs_diff"],
        decision_agreement=res["decision_agreement"], atol=atol, passed=not failures,
        reference=f"onnx:{reference_onnx}", model=str(onnx_path), images=desc,
        criterion="decision_agreement" if min_agreement is not None else "max_abs_diff", threshold=threshold,
        batch_sizes=list(batch_sizes), per_batch=res["per_batch"], min_agreement=min_agreement, failures=failures)
