"""The parity gate: a reference model (Keras, or the FP32 ONNX for variants) and an ONNX model run on the same
inputs; the report says how far apart they are and whether that is within tolerance.

Two checks:
  tensor parity   – identical preprocessed tensors into both models, at batch 1 and at a larger batch (dynamic
                    batch dimensions and batch-dependent kernels are a classic source of export bugs);
  pipeline parity – image files through the *training* input pipeline (the size/resize training used) into
                    Keras vs the same files through THE edge preprocessing with the size/resize of the ONNX
                    metadata into ONNX, so a train/serve skew (wrong resize method or size in the metadata,
                    colour order, scaling) cannot hide. The ONNX half is the tensor check's own outputs: the
                    tensor inputs are those files through the metadata's preprocessing.
Every ONNX file is opened once, as an edge `Classifier` (CPU, full optimisation: what ships); its metadata gives
the settings and its `predict` the outputs. TensorFlow is imported only when a Keras reference is involved.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Collection, NamedTuple, Sequence

import numpy as np

from ..edge.files import expand_paths
from ..edge.labels import is_all
from ..edge.metadata import InputSpec
from ..edge.model import Classifier
from ..edge.preprocess import IMAGE_SUFFIXES, load_image, preprocess
from .defaults import (DEFAULT_ATOL, DEFAULT_BATCH_SIZES, DEFAULT_N, MIN_AGREEMENT_N, PARITY_SEED, onnx_sibling,
                       variant_gate)

SHUFFLE_SEED = 0  # the one shuffle of a folder that every role picks its images from (see pick_images)

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
    criterion: str  # "max_abs_diff", "decision_agreement" or both joined by "+"
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
    return onnx_sibling(onnx_path, ".parity.json")


# ---------------------------------------------------------------------------------------------------- inputs

class ParityInputs(NamedTuple):
    x: np.ndarray  # NHWC float32 through THE preprocessing
    files: list[Path] | None  # the image files (folder input), in the order of x
    cells: list[np.ndarray] | None  # the raw RGB cells (synthetic input), in the order of x
    description: str


def pick_images(data_dir: str | Path, n: int, avoid: Collection[str | Path] = ()) -> list[Path]:
    """Up to n image files under data_dir (recursive), in the order of one fixed seeded shuffle (so a
    class-per-folder layout contributes both classes); files in `avoid` come last, so two roles (parity and
    calibration) picking from one folder are disjoint wherever it holds enough images. Deterministic."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise NotADirectoryError(f"image folder not found: {data_dir}")
    files = expand_paths([data_dir]).images
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {data_dir}")
    order = [files[i] for i in np.random.default_rng(SHUFFLE_SEED).permutation(len(files))]
    if avoid:
        taken = {Path(p).resolve() for p in avoid}
        order = [f for f in order if f.resolve() not in taken] + [f for f in order if f.resolve() in taken]
    return order[:n]


def synthetic_cells(n: int, seed: int = PARITY_SEED) -> list[np.ndarray]:
    """n synthetic C-NMC-like cells (RGB uint8 450x450), alternating blast / normal (labels: `_cell_labels`)."""
    from ..synth.cells import render_cnmc_image

    rng = np.random.default_rng(seed)
    return [render_cnmc_image(rng, "all" if t else "hem") for t in _cell_labels(n)]


def _cell_labels(n: int) -> np.ndarray:
    return (np.arange(n) % 2 == 0).astype(np.int64)  # 1 = all (blast) first, then 0 = hem, alternating


def write_cells(cells: Sequence[np.ndarray], folder: Path) -> list[Path]:
    """Save RGB cells as BMP (lossless) so the file route and the array route see the same pixels."""
    from ..synth.cells import write_bmp

    paths = [Path(folder) / f"cell_{i:04d}.bmp" for i in range(len(cells))]
    for path, rgb in zip(paths, cells):
        write_bmp(path, rgb)
    return paths


def parity_inputs(height: int, width: int, resize: str, data: str | Path | None = None, n: int = DEFAULT_N,
                  seed: int = PARITY_SEED, avoid: Collection[str | Path] = ()) -> ParityInputs:
    """n inputs through THE preprocessing: images picked from the folder `data` (`pick_images`, `avoid`: files
    another role uses; the description says how many of them had to be reused), or synthetic cells (`seed`)."""
    if data is not None:
        files = pick_images(data, n, avoid)
        x = np.stack([load_image(p, height, width, resize) for p in files])
        taken = {Path(p).resolve() for p in avoid}
        shared = sum(f.resolve() in taken for f in files)
        note = f" ({shared} of them also parity images: the folder holds too few for both)" if shared else ""
        return ParityInputs(x, files, None, f"{len(files)} images from {data}{note}")
    cells = synthetic_cells(n, seed)
    x = np.stack([preprocess(c, height, width, resize) for c in cells])
    return ParityInputs(x, None, cells, f"{n} synthetic cells (leuk_edge.synth.cells, seed {seed})")


# --------------------------------------------------------------------------------------------------- runners

def keras_predict(model) -> Predict:
    def run(batch: np.ndarray) -> np.ndarray:
        # Direct call, not model.predict: no tf.data wrapping, and training=False pins Dropout/BatchNorm.
        return np.asarray(model(batch, training=False), np.float32).reshape(len(batch), -1)[:, -1]
    return run


def as_classifier(model: str | Path | Classifier) -> Classifier:
    """An ONNX path opened as the edge does (CPU, full optimisation); an open Classifier is used as it is."""
    return model if isinstance(model, Classifier) else Classifier(model, device="cpu")


def _batched(fn: Predict, x: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate([fn(x[i:i + batch]) for i in range(0, len(x), batch)])


def _stats(ref: np.ndarray, got: np.ndarray, threshold: float) -> dict:
    diff = np.abs(ref.astype(np.float64) - got.astype(np.float64))
    return {
        "max_abs_diff": float(diff.max()) if diff.size else 0.0,
        "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
        "decision_agreement": float(np.mean(is_all(ref, threshold) == is_all(got, threshold))) if diff.size else 1.0,
    }


def compare(reference: Predict, candidate: Predict, x: np.ndarray, threshold: float,
            batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES) -> dict:
    """The reference once (at the largest batch), the candidate at every batch size, on the same tensors;
    -> {batch: stats}, the worst case over batches, and `candidate`: its outputs at the largest batch."""
    if not batch_sizes or min(batch_sizes) < 1:
        raise ValueError("batch sizes must be positive")
    largest = max(batch_sizes)
    ref = _batched(reference, x, largest)
    got = {b: _batched(candidate, x, b) for b in batch_sizes}
    per_batch = {str(b): _stats(ref, p, threshold) for b, p in got.items()}
    return {
        "per_batch": per_batch,
        "max_abs_diff": max(s["max_abs_diff"] for s in per_batch.values()),
        "mean_abs_diff": max(s["mean_abs_diff"] for s in per_batch.values()),
        "decision_agreement": min(s["decision_agreement"] for s in per_batch.values()),
        "candidate": got[largest],
    }


# -------------------------------------------------------------------------------------------------- pipeline

def pipeline_parity(keras_model, keras_size: tuple[int, int], keras_resize: str, files: Sequence[Path],
                    edge_p: np.ndarray, edge_input: InputSpec, threshold: float, atol: float,
                    batch_size: int = 5) -> dict:
    """Image file -> training tf.data pipeline -> Keras  vs  `edge_p`: the ONNX outputs on the same files through
    THE edge preprocessing with the size/resize of the model's metadata (`edge_input`).

    The Keras side uses the size/resize the model was trained with (config.json); any disagreement in
    preprocessing between the two shows up as a difference here.
    """
    from ..train.pipeline import image_dataset

    ds = image_dataset([str(f) for f in files], None, size=keras_size, resize=keras_resize, batch_size=batch_size)
    keras_p = np.concatenate([keras_predict(keras_model)(np.asarray(x)) for x in ds])
    if len(keras_p) != len(edge_p):
        raise ValueError(f"{len(edge_p)} edge outputs for {len(keras_p)} files")
    stats = _stats(keras_p, edge_p, threshold)
    return {"n": len(files), **stats, "passed": bool(stats["max_abs_diff"] <= atol),
            "keras": {"size": list(keras_size), "resize": keras_resize},
            "onnx": {"size": [edge_input.height, edge_input.width], "resize": edge_input.resize}}


# ------------------------------------------------------------------------------------------------------ gate

def _gate(res: dict, against: str, atol: float | None, min_agreement: float | None, threshold: float,
          batch_sizes: Sequence[int], reference: str, model: str, images: str,
          pipeline: dict | None = None) -> ParityReport:
    """The verdict on a `compare` result (and a pipeline check), with a plain-language reason per failure."""
    if atol is None and min_agreement is None:
        raise ValueError("a parity gate needs atol, min_agreement or both")
    failures = []
    if atol is not None and res["max_abs_diff"] > atol:
        failures.append(f"outputs differ from {against} by up to {res['max_abs_diff']:.3g} > atol {atol:g}")
    if min_agreement is not None and res["decision_agreement"] < min_agreement:
        failures.append(f"decision agreement with {against} at threshold {threshold:g} is "
                        f"{res['decision_agreement']:.4f} < {min_agreement:g}")
    if pipeline is not None and not pipeline["passed"]:
        failures.append(f"whole-pipeline parity (training input pipeline + {against} vs edge preprocessing + "
                        f"ONNX) differs by up to {pipeline['max_abs_diff']:.3g} > atol {atol:g}")
    criterion = "+".join(name for name, used in (("max_abs_diff", atol is not None),
                                                  ("decision_agreement", min_agreement is not None)) if used)
    return ParityReport(
        n=len(res["candidate"]), max_abs_diff=res["max_abs_diff"], mean_abs_diff=res["mean_abs_diff"],
        decision_agreement=res["decision_agreement"], atol=atol, passed=not failures, reference=reference,
        model=model, images=images, criterion=criterion, threshold=threshold, batch_sizes=list(batch_sizes),
        per_batch=res["per_batch"], min_agreement=min_agreement, pipeline=pipeline, failures=failures)


def check_parity(reference, onnx_model: str | Path | Classifier, data: str | Path | None = None,
                 atol: float = DEFAULT_ATOL, n: int = DEFAULT_N, batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
                 seed: int = PARITY_SEED, pipeline: bool = True, reference_name: str | None = None,
                 train_resize: str | None = None, min_agreement: float | None = None) -> ParityReport:
    """Keras (a .keras path or a loaded model) vs ONNX (a path or an open Classifier). Passes when every
    |difference| <= atol, at every batch size and, with `pipeline`, also through the train and edge input
    pipelines; with `min_agreement`, also when that fraction of decisions at the threshold agree.

    `train_resize`: the resize method of the training pipeline; default from config.json beside a .keras path
    (what training used), else the ONNX metadata's."""
    from .keras_io import load_keras_model, source_info

    clf = as_classifier(onnx_model)
    keras_path = None
    if isinstance(reference, (str, Path)):
        keras_path = Path(reference)
        model = load_keras_model(keras_path)
    else:
        model = reference
    spec = clf.info.input
    kh, kw = int(model.inputs[0].shape[1]), int(model.inputs[0].shape[2])
    if (kh, kw) != clf.size:
        raise ValueError(f"the ONNX model takes {spec.height}x{spec.width} images but the Keras model {kh}x{kw}")
    inp = parity_inputs(spec.height, spec.width, spec.resize, data, n, seed)
    res = compare(keras_predict(model), clf.predict, inp.x, clf.threshold, batch_sizes)

    pipe = None
    if pipeline:
        keras_resize = train_resize or (source_info(model, keras_path).resize if keras_path else spec.resize)
        with tempfile.TemporaryDirectory(prefix="leuk_parity_") as tmp:
            files = inp.files if inp.files is not None else write_cells(inp.cells, Path(tmp))
            pipe = pipeline_parity(model, (kh, kw), keras_resize, files, res["candidate"], spec, clf.threshold,
                                   atol, max(batch_sizes))
    return _gate(res, "Keras", atol, min_agreement, clf.threshold, batch_sizes,
                 reference=reference_name or (f"keras:{keras_path}" if keras_path else f"keras:{model.name}"),
                 model=str(clf.path), images=inp.description, pipeline=pipe)


def check_variant(reference_onnx: str | Path | Classifier, onnx_model: str | Path | Classifier,
                  data: str | Path | None = None, atol: float | None = None, min_agreement: float | None = None,
                  n: int | None = None, batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
                  seed: int = PARITY_SEED) -> ParityReport:
    """A reduced-precision ONNX model vs the FP32 ONNX it came from (paths or open Classifiers).

    Without atol and min_agreement the gate follows the `precision` in the variant's metadata (`variant_gate`):
    FP16 by atol, INT8 by decision agreement at the model's threshold (its outputs legitimately move by a few
    hundredths). `n` defaults to MIN_AGREEMENT_N images."""
    ref, clf = as_classifier(reference_onnx), as_classifier(onnx_model)
    if ref.info.input != clf.info.input or ref.threshold != clf.threshold:
        raise ValueError(f"{clf.path} and {ref.path} carry different preprocessing/threshold metadata")
    if atol is None and min_agreement is None:
        atol, min_agreement = variant_gate(str(clf.info.extra.get("precision", "fp32")))
    spec = ref.info.input
    inp = parity_inputs(spec.height, spec.width, spec.resize, data, MIN_AGREEMENT_N if n is None else n, seed)
    res = compare(ref.predict, clf.predict, inp.x, ref.threshold, batch_sizes)
    against = str(ref.info.extra.get("precision", "fp32")).upper()
    return _gate(res, against, atol, min_agreement, ref.threshold, batch_sizes, reference=f"onnx:{ref.path}",
                 model=str(clf.path), images=inp.description)
