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
from typing import Collection, NamedTuple, Sequence

import numpy as np

from ..edge.files import expand_paths
from ..edge.labels import is_all
from ..edge.metadata import InputSpec
from ..edge.model import Classifier
from ..edge.preprocess import IMAGE_SUFFIXES, load_image, preprocess
from ..edge.files import sha256_file
from ..edge.gates import OOD_RTOL, VARIANT_CAM_RTOL, VARIANT_OOD_MIN_AGREEMENT, cam_tolerance
from .defaults import DEFAULT_ATOL, DEFAULT_BATCH_SIZES, DEFAULT_N, MIN_GATE_IMAGES, PARITY_SEED, variant_gate

SHUFFLE_SEED = 0  # the one shuffle of a folder that every role picks its images from (see pick_images)



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
    images: str  # where the inputs came from: "run:val", "run:train", "folder" or "synthetic"
    criterion: str  # "max_abs_diff", "decision_agreement" or both joined by "+"
    threshold: float
    batch_sizes: list
    per_batch: dict  # batch size -> {max_abs_diff, mean_abs_diff, decision_agreement}
    min_agreement: float | None = None
    pipeline: dict | None = None
    failures: list = field(default_factory=list)  # plain-language reasons when passed is False
    image_source: str = ""  # the inputs in words (folder, split, seed, count)
    cam: dict | None = None  # the `cam` output compared too: {max_abs_diff, mean_abs_diff, scale, tolerance, ...}
    device: str = "cpu"  # the execution provider the candidate ran on (the reference always runs on CPU)
    ood: dict | None = None  # the `ood` scope score compared too: {max_abs_diff, max_rel_diff, agreement, ...}
    # SHA-256 of the reference file (the .keras, or the FP32 .onnx of a variant) and of the checked model file: what
    # binds a report to the files it judged (`--precision auto` compares them with the files on disk).
    reference_sha256: str = ""
    model_sha256: str = ""
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
        if self.cam:
            text += f", cam max_abs_diff={self.cam['max_abs_diff']:.3g}"
        if self.ood:
            text += f", ood max_rel_diff={self.ood['max_rel_diff']:.3g}, in/out agreement {self.ood['agreement']:.4f}"
        return text + "".join(f"\n  - {f}" for f in self.failures)


# ---------------------------------------------------------------------------------------------------- inputs

@dataclass(frozen=True)
class ImageSet:
    """A list of image files standing for a folder, e.g. the validation split of the run being exported."""
    files: tuple
    kind: str  # the report's `images`, e.g. "run:val"
    where: str  # in words, e.g. "the run's val split (3 subjects) of /data/C-NMC_Leukemia"


class ParityInputs(NamedTuple):
    x: np.ndarray  # NHWC float32 through THE preprocessing
    files: list[Path] | None  # the image files (folder input), in the order of x
    cells: list[np.ndarray] | None  # the raw RGB cells (synthetic input), in the order of x
    description: str
    kind: str = "synthetic"  # the report's `images`


def check_source(data) -> None:
    """Fail early (before anything is written) on a folder that is missing or holds no images."""
    if data is not None and not isinstance(data, ImageSet):
        _folder_images(data)


def _folder_images(data_dir: str | Path) -> list[Path]:
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise NotADirectoryError(f"image folder not found: {data_dir}")
    files = expand_paths([data_dir]).images
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {data_dir}")
    return files


def pick_images(data: str | Path | ImageSet, n: int, avoid: Collection[str | Path] = ()) -> list[Path]:
    """Up to n image files under the folder `data` (recursive) or from an ImageSet, in the order of one fixed
    seeded shuffle (so a class-per-folder layout contributes both classes); files in `avoid` come last, so two
    roles (parity and calibration) picking from one folder are disjoint wherever it holds enough images."""
    if isinstance(data, ImageSet):
        files = [Path(f) for f in data.files]
        if not files:
            raise FileNotFoundError(f"no images in {data.where}")
    else:
        files = _folder_images(data)
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


def parity_inputs(height: int, width: int, resize: str, data=None, n: int = DEFAULT_N,
                  seed: int = PARITY_SEED, avoid: Collection[str | Path] = ()) -> ParityInputs:
    """n inputs through THE preprocessing: images picked from the folder or ImageSet `data` (`pick_images`,
    `avoid`: files another role uses; the description says how many of them had to be reused), or synthetic
    cells (`seed`) when `data` is None."""
    if data is not None:
        files = pick_images(data, n, avoid)
        x = np.stack([load_image(p, height, width, resize) for p in files])
        taken = {Path(p).resolve() for p in avoid}
        shared = sum(f.resolve() in taken for f in files)
        note = f" ({shared} of them also parity images: the folder holds too few for both)" if shared else ""
        where, kind = (data.where, data.kind) if isinstance(data, ImageSet) else (str(data), "folder")
        return ParityInputs(x, files, None, f"{len(files)} images from {where}{note}", kind)
    cells = synthetic_cells(n, seed)
    x = np.stack([preprocess(c, height, width, resize) for c in cells])
    return ParityInputs(x, None, cells, f"{n} synthetic cells (leuk_edge.synth.cells, seed {seed})", "synthetic")


# --------------------------------------------------------------------------------------------------- runners

def keras_reference(model, temperature: float = 1.0, cam: bool = False):
    """The Keras side of the gate: the original model's calibrated P(all) (and its class-activation map), by the
    independent computation in `train.cam.reference`. -> batch -> (p, cam or None)."""
    from ..train.cam import reference

    def run(batch: np.ndarray):
        return reference(model, batch, temperature, cam=cam)
    return run


def onnx_runner(clf: Classifier, cam: bool = False):
    """An open Classifier as a gate runner: batch -> (p, cam or None)."""
    def run(batch: np.ndarray):
        return clf.predict(batch, cam=True) if cam else (clf.predict(batch), None)
    return run


def as_classifier(model: str | Path | Classifier, device: str = "cpu") -> Classifier:
    """An ONNX path opened as the edge does (on `device`, full optimisation); an open Classifier as it is."""
    return model if isinstance(model, Classifier) else Classifier(model, device=device)


def _outputs(out):
    """A runner's result as (p, cam or None): plain arrays are P(all) alone."""
    return out if isinstance(out, tuple) else (out, None)


def _batched(fn, x: np.ndarray, batch: int):
    outs = [_outputs(fn(x[i:i + batch])) for i in range(0, len(x), batch)]
    p = np.concatenate([o[0] for o in outs])
    cam = np.concatenate([o[1] for o in outs]) if all(o[1] is not None for o in outs) else None
    return p, cam


def _cam_stats(ref: np.ndarray, got: np.ndarray) -> dict:
    if ref.shape != got.shape:
        raise ValueError(f"cam maps of shape {got.shape[1:]} against the reference's {ref.shape[1:]}")
    diff = np.abs(ref.astype(np.float64) - got.astype(np.float64))
    return {"max_abs_diff": float(diff.max()) if diff.size else 0.0,
            "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
            "scale": float(np.abs(ref).max()) if ref.size else 0.0, "grid": list(ref.shape[1:])}


def _stats(ref: np.ndarray, got: np.ndarray, threshold: float) -> dict:
    diff = np.abs(ref.astype(np.float64) - got.astype(np.float64))
    return {
        "max_abs_diff": float(diff.max()) if diff.size else 0.0,
        "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
        "decision_agreement": float(np.mean(is_all(ref, threshold) == is_all(got, threshold))) if diff.size else 1.0,
    }


def compare(reference, candidate, x: np.ndarray, threshold: float,
            batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES) -> dict:
    """The reference once (at the largest batch), the candidate at every batch size, on the same tensors.
    Runners return P(all), or (P(all), cam) when the `cam` maps are compared too.
    -> {batch: stats}, the worst case over batches, `cam` (worst case over batches, when both gave maps) and
    `candidate`: its P(all) at the largest batch."""
    if not batch_sizes or min(batch_sizes) < 1:
        raise ValueError("batch sizes must be positive")
    largest = max(batch_sizes)
    ref, ref_cam = _batched(reference, x, largest)
    got = {b: _batched(candidate, x, b) for b in batch_sizes}
    per_batch = {str(b): _stats(ref, p, threshold) for b, (p, _) in got.items()}
    cam = None
    if ref_cam is not None and all(c is not None for _, c in got.values()):
        per = [_cam_stats(ref_cam, c) for _, c in got.values()]
        cam = max(per, key=lambda d: d["max_abs_diff"])
    return {
        "per_batch": per_batch,
        "max_abs_diff": max(s["max_abs_diff"] for s in per_batch.values()),
        "mean_abs_diff": max(s["mean_abs_diff"] for s in per_batch.values()),
        "decision_agreement": min(s["decision_agreement"] for s in per_batch.values()),
        "candidate": got[largest][0],
        "cam": cam,
    }


# -------------------------------------------------------------------------------------------------- pipeline

def pipeline_parity(keras_run, keras_size: tuple[int, int], keras_resize: str, files: Sequence[Path],
                    edge_p: np.ndarray, edge_input: InputSpec, threshold: float, atol: float,
                    batch_size: int = 5) -> dict:
    """Image file -> training tf.data pipeline -> Keras (`keras_run`, a gate runner)  vs  `edge_p`: the ONNX
    outputs on the same files through
    THE edge preprocessing with the size/resize of the model's metadata (`edge_input`).

    The Keras side uses the size/resize the model was trained with (config.json); any disagreement in
    preprocessing between the two shows up as a difference here.
    """
    from ..train.pipeline import image_dataset

    ds = image_dataset([str(f) for f in files], None, size=keras_size, resize=keras_resize, batch_size=batch_size)
    keras_p = np.concatenate([_outputs(keras_run(np.asarray(x)))[0] for x in ds])
    if len(keras_p) != len(edge_p):
        raise ValueError(f"{len(edge_p)} edge outputs for {len(keras_p)} files")
    stats = _stats(keras_p, edge_p, threshold)
    return {"n": len(files), **stats, "passed": bool(stats["max_abs_diff"] <= atol),
            "keras": {"size": list(keras_size), "resize": keras_resize},
            "onnx": {"size": [edge_input.height, edge_input.width], "resize": edge_input.resize}}


# ------------------------------------------------------------------------------------------------------ gate

def _gate(res: dict, against: str, atol: float | None, min_agreement: float | None, threshold: float,
          batch_sizes: Sequence[int], reference: str, model: str, inputs: ParityInputs,
          pipeline: dict | None = None, cam_rtol: float | None = None, cam_fails_gate: bool = True,
          device: str = "cpu") -> ParityReport:
    """The verdict on a `compare` result (and a pipeline check), with a plain-language reason per failure.

    The `cam` maps, when compared, are judged by `cam_verdict` with `cam_rtol` (None: reported, not judged); a
    failed map check fails the whole gate when `cam_fails_gate` (FP32 against Keras), else only the maps (a
    variant: its maps are then not drawn, see `edge.precision.overlay_source`)."""
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
    cam = cam_verdict(res.get("cam"), cam_rtol)
    if cam is not None and cam["gated"] and not cam["passed"]:
        message = (f"cam maps differ from {against} by up to {cam['max_abs_diff']:.3g} > {cam['tolerance']:.3g} "
                   f"({cam_rtol:g} x max|cam|)")
        if cam_fails_gate:
            failures.append(message)
        else:
            cam["note"] = message + ": overlays come from the FP32 model"
    criterion = "+".join(name for name, used in (("max_abs_diff", atol is not None),
                                                  ("decision_agreement", min_agreement is not None)) if used)
    return ParityReport(
        n=len(res["candidate"]), max_abs_diff=res["max_abs_diff"], mean_abs_diff=res["mean_abs_diff"],
        decision_agreement=res["decision_agreement"], atol=atol, passed=not failures, reference=reference,
        model=model, images=inputs.kind, image_source=inputs.description, criterion=criterion,
        threshold=threshold, batch_sizes=list(batch_sizes), per_batch=res["per_batch"],
        min_agreement=min_agreement, pipeline=pipeline, failures=failures, cam=cam, device=device)


def cam_verdict(cam: dict | None, rtol: float | None) -> dict | None:
    """The compared `cam` maps (logit units, whose size depends on the model) judged: they pass when they differ
    by at most rtol x max(1, the reference map's largest |value|). rtol None: reported, `gated` false."""
    if cam is None:
        return None
    cam = dict(cam, gated=rtol is not None)
    if rtol is not None:
        cam["tolerance"] = cam_tolerance(cam["scale"], rtol)
        cam["passed"] = bool(cam["max_abs_diff"] <= cam["tolerance"])
    return cam


# ------------------------------------------------------------------------------------------------------- ood

def _ood_at(clf: Classifier, x: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate([clf.infer(x[i:i + batch]).ood for i in range(0, len(x), batch)])


def _ood_stats(ref: np.ndarray, got: dict, threshold: float) -> dict:
    """The worst case over batch sizes of the candidate's ood against `ref`: absolute, relative to
    max(1, |ref|), and the in/out-of-scope decisions at the scope threshold."""
    ref = np.asarray(ref, np.float64)
    diffs = [np.abs(np.asarray(g, np.float64) - ref) for g in got.values()]
    rel = [d / np.maximum(1.0, np.abs(ref)) for d in diffs]
    agree = [float(np.mean((np.asarray(g) > threshold) == (ref > threshold))) for g in got.values()]
    return {"n": int(len(ref)), "max_abs_diff": float(max(d.max() for d in diffs)),
            "max_rel_diff": float(max(r.max() for r in rel)), "agreement": min(agree),
            "threshold": float(threshold), "reference_range": [float(ref.min()), float(ref.max())]}


def ood_parity(model, clf: Classifier, stats, x: np.ndarray, batch_sizes: Sequence[int],
               rtol: float = OOD_RTOL) -> tuple[dict, list[str]]:
    """The ONNX `ood` against the NumPy reference: the run's saved statistics (scope.npz) applied in float64 to
    the Keras model's own features at the scope taps (train.scope.ood, not the graph's layer). -> (report
    entry, failures). A model with an `ood` output and no statistics to check it by, or the reverse, fails."""
    from ..train.scope import features_of, ood

    if stats is None or not clf.has_scope:
        missing = "the run has no scope.npz to check it by" if stats is None else "the model has no `ood` output"
        return {"checked": False}, [f"scope gate cannot be checked: {missing}"]
    ref = ood(stats, features_of(model, x, stats.names))
    got = {b: _ood_at(clf, x, b) for b in batch_sizes}
    entry = {**_ood_stats(ref, got, stats.threshold), "rtol": rtol, "checked": True}
    entry["passed"] = bool(entry["max_rel_diff"] <= rtol)
    failures = [] if entry["passed"] else [
        f"ood differs from the NumPy reference (scope.npz + Keras features) by up to {entry['max_rel_diff']:.3g} "
        f"x max(1, |ood|) > {rtol:g}"]
    return entry, failures


def variant_ood(ref: Classifier, clf: Classifier, x: np.ndarray, batch_sizes: Sequence[int],
                min_agreement: float = VARIANT_OOD_MIN_AGREEMENT) -> tuple[dict, list[str]]:
    """A variant's `ood` against its FP32 model's: the in/out-of-scope decisions at the FP32 model's scope
    threshold must agree on at least `min_agreement` of the cells (the score itself moves with the precision)."""
    if not (ref.has_scope and clf.has_scope):
        return {"checked": False}, ["the variant and its FP32 model do not both carry the scope gate (`ood`)"]
    threshold = float(ref.scope["threshold"])
    got = {b: _ood_at(clf, x, b) for b in batch_sizes}
    entry = {**_ood_stats(_ood_at(ref, x, max(batch_sizes)), got, threshold), "min_agreement": min_agreement,
             "checked": True}
    entry["passed"] = bool(entry["agreement"] >= min_agreement)
    failures = [] if entry["passed"] else [
        f"in/out-of-scope decisions agree with FP32 on {entry['agreement']:.4f} < {min_agreement:g} of the cells"]
    return entry, failures


def check_parity(reference, onnx_model: str | Path | Classifier, data=None,
                 atol: float = DEFAULT_ATOL, n: int = DEFAULT_N, batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
                 seed: int = PARITY_SEED, pipeline: bool = True, reference_name: str | None = None,
                 train_resize: str | None = None, min_agreement: float | None = None,
                 temperature: float | None = None, device: str = "cpu", scope="run") -> ParityReport:
    """Keras (a .keras path or a loaded model) vs ONNX (a path or an open Classifier). Passes when every
    |difference| <= atol, at every batch size and, with `pipeline`, also through the train and edge input
    pipelines; with `min_agreement`, also when that fraction of decisions at the threshold agree. When the ONNX
    model has the `cam` output, its maps must match the Keras model's (`train.cam.reference`) too. When the ONNX
    model has the `ood` output or `scope` (train.scope.ScopeStats; default "run": the scope.npz beside a .keras
    path) is given, `ood` must match the NumPy reference (`ood_parity`).

    The Keras side is the calibrated P(all): sigmoid(logit / `temperature`); default: the run's config.json
    beside a .keras path (1 without a calibration entry). `train_resize`: the resize method of the training
    pipeline; default from config.json beside a .keras path (what training used), else the ONNX metadata's.
    `device`: the execution provider the ONNX model runs on (a path is opened there); Keras runs on the CPU."""
    from .keras_io import load_keras_model, source_info

    clf = as_classifier(onnx_model, device)
    keras_path = None
    if isinstance(reference, (str, Path)):
        keras_path = Path(reference)
        model = load_keras_model(keras_path)
    else:
        model = reference
    src = source_info(model, keras_path) if keras_path else None
    if temperature is None:
        temperature = src.temperature if src else 1.0
    spec = clf.info.input
    kh, kw = int(model.inputs[0].shape[1]), int(model.inputs[0].shape[2])
    if (kh, kw) != clf.size:
        raise ValueError(f"the ONNX model takes {spec.height}x{spec.width} images but the Keras model {kh}x{kw}")
    inp = parity_inputs(spec.height, spec.width, spec.resize, data, n, seed)
    ref_run = keras_reference(model, temperature, cam=clf.has_cam)
    res = compare(ref_run, onnx_runner(clf, cam=clf.has_cam), inp.x, clf.threshold, batch_sizes)

    pipe = None
    if pipeline:
        keras_resize = train_resize or (src.resize if src else spec.resize)
        with tempfile.TemporaryDirectory(prefix="leuk_parity_") as tmp:
            files = inp.files if inp.files is not None else write_cells(inp.cells, Path(tmp))
            pipe = pipeline_parity(keras_reference(model, temperature), (kh, kw), keras_resize, files,
                                   res["candidate"], spec, clf.threshold, atol, max(batch_sizes))
    name = reference_name or (f"keras:{keras_path}" if keras_path else f"keras:{model.name}")
    rep = _gate(res, "Keras", atol, min_agreement, clf.threshold, batch_sizes, reference=name,
                model=str(clf.path), inputs=inp, pipeline=pipe, cam_rtol=atol, device=_device_of(clf))
    rep.extra["temperature"] = float(temperature)
    if isinstance(scope, str):
        from ..train.scope import load_for

        scope = load_for(keras_path) if keras_path is not None else None
    if scope is not None or clf.has_scope:
        rep.ood, failures = ood_parity(model, clf, scope, inp.x, batch_sizes)
        rep.failures += failures
        rep.passed = rep.passed and not failures
    if keras_path is not None and isinstance(onnx_model, (str, Path)):
        rep.reference_sha256, rep.model_sha256 = sha256_file(keras_path), sha256_file(onnx_model)
    return rep


def _device_of(clf: Classifier) -> str:
    """The execution provider a Classifier's session runs on first, e.g. "CPUExecutionProvider"."""
    return clf.providers[0] if clf.providers else "unknown"


def check_variant(reference_onnx: str | Path | Classifier, onnx_model: str | Path | Classifier,
                  data=None, atol: float | None = None, min_agreement: float | None = None,
                  n: int | None = None, batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
                  seed: int = PARITY_SEED, device: str = "cpu") -> ParityReport:
    """A reduced-precision ONNX model vs the FP32 ONNX it came from (paths or open Classifiers).

    Without atol and min_agreement the gate follows the `precision` in the variant's metadata (`variant_gate`):
    FP16 by atol, INT8 by decision agreement at the model's threshold (its outputs legitimately move by a few
    hundredths). The `cam` maps, when both have them, are judged on their own (`VARIANT_CAM_RTOL`): maps that
    differ more are reported as not to be drawn, and the variant still passes on its P(all). `n` defaults to
    MIN_GATE_IMAGES images. `device`: where the variant runs (a path is opened there); the reference runs on
    the CPU. Given as paths, both files' SHA-256 go into the report."""
    ref, clf = as_classifier(reference_onnx), as_classifier(onnx_model, device)
    if ref.info.input != clf.info.input or ref.threshold != clf.threshold:
        raise ValueError(f"{clf.path} and {ref.path} carry different preprocessing/threshold metadata")
    if atol is None and min_agreement is None:
        atol, min_agreement = variant_gate(str(clf.info.extra.get("precision", "fp32")))
    spec = ref.info.input
    inp = parity_inputs(spec.height, spec.width, spec.resize, data, MIN_GATE_IMAGES if n is None else n, seed)
    both_cam = ref.has_cam and clf.has_cam
    res = compare(onnx_runner(ref, both_cam), onnx_runner(clf, both_cam), inp.x, ref.threshold, batch_sizes)
    against = str(ref.info.extra.get("precision", "fp32")).upper()
    rep = _gate(res, against, atol, min_agreement, ref.threshold, batch_sizes, reference=f"onnx:{ref.path}",
                model=str(clf.path), inputs=inp, device=_device_of(clf), cam_rtol=VARIANT_CAM_RTOL,
                cam_fails_gate=False)
    if ref.has_scope or clf.has_scope:
        rep.ood, failures = variant_ood(ref, clf, inp.x, batch_sizes)
        rep.failures += failures
        rep.passed = rep.passed and not failures
    if isinstance(reference_onnx, (str, Path)) and isinstance(onnx_model, (str, Path)):
        rep.reference_sha256, rep.model_sha256 = sha256_file(reference_onnx), sha256_file(onnx_model)
    return rep
