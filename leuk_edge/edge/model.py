"""Open an exported model from its ONNX file alone and run it: `Classifier("model.onnx").predict(x)`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort

from .labels import OTHER, label_for
from .metadata import MetadataError, ModelInfo
from .preprocess import preprocess
from .providers import check_session_providers, providers_for


CAM_OUTPUT = "cam"  # name of the optional explanation output (docs/contracts.md)
OOD_OUTPUT = "ood"  # name of the optional out-of-scope score output (higher = farther from the training cells)


class ModelError(ValueError):
    """The model file is missing, unreadable or not a leuk-edge model."""


def make_session(path: str | Path, device: str = "auto", threads: int | None = None,
                 spinning: bool | None = None) -> ort.InferenceSession:
    """`spinning=False` makes idle intra-op threads sleep instead of spin: better when the process does other
    CPU work at the same time (classify's decode threads); None keeps onnxruntime's default."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = int(threads)
    if spinning is not None:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    providers = providers_for(device)
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types for invalid files
        raise ModelError(f"cannot load ONNX model {path}: {str(exc).splitlines()[0][:200]}") from None
    check_session_providers(session, providers)
    return session


def dihedral(x: np.ndarray) -> list[np.ndarray]:
    """The 8 flips/90-degree rotations of an NHWC batch (cells have no orientation)."""
    out = []
    for k in range(4):
        r = np.rot90(x, k, axes=(1, 2))
        out += [r, r[:, :, ::-1]]
    return [np.ascontiguousarray(a) for a in out]


@dataclass
class Inference:
    """One model call's outputs, per image: P(all), the out-of-scope score (None without a scope gate in use) and
    the explanation maps (None unless asked for)."""
    p_all: np.ndarray               # (n,) float32
    ood: np.ndarray | None = None   # (n,) float32, higher = farther from the training cells
    cam: np.ndarray | None = None   # (n, h, w) float32

    def __len__(self) -> int:
        return len(self.p_all)


class Classifier:
    """A leuk-edge ONNX model: metadata-driven preprocessing, P(all) out, labels by the stored threshold, and
    (models exported with a scope gate) the out-of-scope score `ood` that labels a cell `other`.

    `scope=False` (`--no-scope`) ignores the gate: every cell gets `all` or `hem` as before. `cam=False` leaves the
    `cam` output unused (a variant whose maps were not gated: `edge.precision.overlay_source`)."""

    def __init__(self, model: str | Path, device: str = "auto", threads: int | None = None,
                 spinning: bool | None = None, scope: bool = True, cam: bool = True):
        self.path = Path(model)
        self.session = make_session(self.path, device, threads, spinning)
        props = self.session.get_modelmeta().custom_metadata_map
        try:
            self.info = ModelInfo.from_metadata_map(props, source=str(self.path))
        except MetadataError as exc:
            raise ModelError(str(exc)) from None
        self.input_name = self.session.get_inputs()[0].name
        outputs = [o.name for o in self.session.get_outputs()]
        # P(all) is the output named in the metadata (the first output for older models); the optional second
        # output `cam` is the class-activation map of the "all" logit on the last feature-map grid.
        named = self.info.output.get("name")
        self.output_name = named if named in outputs else outputs[0]
        self.cam_name = CAM_OUTPUT if cam and CAM_OUTPUT in outputs and CAM_OUTPUT != self.output_name else None
        # The scope gate needs both the `ood` output and the metadata `scope` entry (its threshold).
        has_gate = OOD_OUTPUT in outputs and isinstance(self.info.extra.get("scope"), dict) \
            and "threshold" in self.info.extra["scope"]
        self.ood_name = OOD_OUTPUT if has_gate else None
        self.use_scope = bool(scope) and has_gate
        self.providers = self.session.get_providers()

    @property
    def size(self) -> tuple[int, int]:
        return self.info.input.height, self.info.input.width

    @property
    def threshold(self) -> float:
        return self.info.threshold

    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        h, w = self.size
        return preprocess(rgb, h, w, self.info.input.resize, value_scale=self.info.input.value_scale)

    @property
    def has_cam(self) -> bool:
        """True when the model carries the `cam` explanation output."""
        return self.cam_name is not None

    @property
    def calibration(self) -> dict | None:
        """The metadata's calibration entry ({"method", "temperature", "fitted_on"}), None for older models."""
        return self.info.extra.get("calibration")

    @property
    def scope(self) -> dict | None:
        """The metadata's scope entry ({"method", "threshold", "fitted_on", "accept_rate_val"}) when the model has
        a scope gate, else None."""
        return dict(self.info.extra["scope"]) if self.ood_name else None

    @property
    def has_scope(self) -> bool:
        """True when the model carries a scope gate (the `ood` output and its metadata), in use or not."""
        return self.ood_name is not None

    @property
    def ood_threshold(self) -> float | None:
        """The `ood` score over which a cell is `other`; None when no scope gate is in use."""
        return float(self.info.extra["scope"]["threshold"]) if self.use_scope else None

    def scope_note(self) -> str | None:
        """The one-line warning a run prints once when out-of-scope cells will not be flagged; None when the gate
        is in use."""
        if self.use_scope:
            return None
        if self.has_scope:
            return ("scope gate switched off (--no-scope): every cell is called all or hem, out-of-scope cells "
                    "(other white cells, debris) included")
        return (f"{self.path.name} has no scope gate (exported before it existed): out-of-scope cells are not "
                f"flagged '{OTHER}' and are counted as all or hem; re-export it to add one")

    def infer(self, batch: np.ndarray, tta: bool = False, cam: bool = False) -> Inference:
        """Preprocessed NHWC float32 batch -> Inference: P(all) (n,), the scope score `ood` (n,) when the gate is
        in use, and with `cam=True` the maps (n, h, w) float32 on the model's feature-map grid.

        TTA: the 8 views go through the model as one batch of 8n; P(all) and `ood` are averaged per image, the map
        is the unrotated view's. A model without the `cam` output asked for one is a ModelError."""
        if cam and not self.has_cam:
            raise ModelError(f"{self.path.name} has no '{CAM_OUTPUT}' output; export it with `leuk-edge export --cam`")
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.ndim == 3:
            batch = batch[None]
        n = len(batch)
        ood_wanted = self.use_scope
        if n == 0:
            empty = np.zeros((0,), np.float32)
            return Inference(empty, empty.copy() if ood_wanted else None,
                             np.zeros((0, 0, 0), np.float32) if cam else None)
        x = np.concatenate(dihedral(batch)) if tta else batch
        names = [self.output_name] + ([self.ood_name] if ood_wanted else []) + ([self.cam_name] if cam else [])
        outs = dict(zip(names, self.session.run(names, {self.input_name: x})))
        p = outs[self.output_name].reshape(len(x), -1)[:, -1].reshape(-1, n).mean(axis=0).astype(np.float32)
        ood = (np.asarray(outs[self.ood_name], np.float32).reshape(-1, n).mean(axis=0) if ood_wanted else None)
        maps = None
        if cam:
            raw = outs[self.cam_name]
            maps = np.asarray(raw[:n], np.float32).reshape(n, *raw.shape[-2:])
        return Inference(p, ood, maps)

    def infer_rgb(self, images: Sequence[np.ndarray], tta: bool = False, cam: bool = False) -> Inference:
        """RGB uint8 images of any size -> Inference (as `infer`)."""
        return self.infer(self._batch(images), tta=tta, cam=cam)

    def predict(self, batch: np.ndarray, tta: bool = False, cam: bool = False):
        """Preprocessed NHWC float32 batch -> P(all) per image, shape (n,); `cam=True` returns (P(all), cam).
        (P(all) only; `infer` also gives the scope score.)"""
        out = self.infer(batch, tta=tta, cam=cam)
        return (out.p_all, out.cam) if cam else out.p_all

    def predict_rgb(self, images: Sequence[np.ndarray], tta: bool = False, cam: bool = False):
        """RGB uint8 images of any size -> P(all) (and the cam maps with `cam=True`, as `predict`)."""
        return self.predict(self._batch(images), tta=tta, cam=cam)

    def _batch(self, images: Sequence[np.ndarray]) -> np.ndarray:
        h, w = self.size
        return np.stack([self.preprocess(im) for im in images]) if len(images) else np.zeros((0, h, w, 3), np.float32)

    def label(self, probability: float, ood: float | None = None) -> str:
        """The cell's label by THE decision rule (edge.labels): `other` when the scope gate is in use and `ood` is
        over its threshold, else `all`/`hem` by P(all)."""
        return label_for(probability, self.threshold, self.info.classes, ood, self.ood_threshold)

    def labels(self, out: Inference) -> list[str]:
        """The label of every image of one Inference."""
        ood = out.ood if out.ood is not None else [None] * len(out)
        return [self.label(float(p), None if o is None else float(o)) for p, o in zip(out.p_all, ood)]
