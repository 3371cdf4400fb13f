"""Open an exported model from its ONNX file alone and run it: `Classifier("model.onnx").predict(x)`."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort

from .labels import label_for
from .metadata import MetadataError, ModelInfo
from .preprocess import preprocess
from .providers import check_session_providers, providers_for


CAM_OUTPUT = "cam"  # name of the optional explanation output (docs/contracts.md)


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


class Classifier:
    """A leuk-edge ONNX model: metadata-driven preprocessing, P(all) out, labels by the stored threshold."""

    def __init__(self, model: str | Path, device: str = "auto", threads: int | None = None,
                 spinning: bool | None = None):
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
        self.cam_name = CAM_OUTPUT if CAM_OUTPUT in outputs and CAM_OUTPUT != self.output_name else None
        self.providers = self.session.get_providers()

    @property
    def size(self) -> tuple[int, int]:
        return self.info.input.height, self.info.input.width

    @property
    def threshold(self) -> float:
        return self.info.threshold

    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        h, w = self.size
        return preprocess(rgb, h, w, self.info.input.resize, scale=self.info.input.scale)

    @property
    def has_cam(self) -> bool:
        """True when the model carries the `cam` explanation output."""
        return self.cam_name is not None

    @property
    def calibration(self) -> dict | None:
        """The metadata's calibration entry ({"method", "temperature", "fitted_on"}), None for older models."""
        return self.info.extra.get("calibration")

    def predict(self, batch: np.ndarray, tta: bool = False, cam: bool = False):
        """Preprocessed NHWC float32 batch -> P(all) per image, shape (n,).

        `cam=True` returns (P(all), cam) with cam of shape (n, h, w) float32 on the model's feature-map grid
        (for TTA, the map of the unrotated view); a model without the `cam` output is a ModelError."""
        if cam and not self.has_cam:
            raise ModelError(f"{self.path.name} has no '{CAM_OUTPUT}' output; export it with `leuk-edge export --cam`")
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.ndim == 3:
            batch = batch[None]
        n = len(batch)
        if n == 0:
            p = np.zeros((0,), np.float32)
            return (p, np.zeros((0, 0, 0), np.float32)) if cam else p
        # TTA: the 8 views go through the model as one batch of 8n, then are averaged per image;
        # the first n rows are the unrotated view.
        x = np.concatenate(dihedral(batch)) if tta else batch
        names = [self.output_name, self.cam_name] if cam else [self.output_name]
        outs = self.session.run(names, {self.input_name: x})
        p = outs[0].reshape(len(x), -1)[:, -1].reshape(-1, n).mean(axis=0).astype(np.float32)
        if not cam:
            return p
        return p, np.asarray(outs[1][:n], np.float32).reshape(n, *outs[1].shape[-2:])

    def predict_rgb(self, images: Sequence[np.ndarray], tta: bool = False, cam: bool = False):
        """RGB uint8 images of any size -> P(all) (and the cam maps with `cam=True`, as `predict`)."""
        h, w = self.size
        batch = np.stack([self.preprocess(im) for im in images]) if len(images) else np.zeros((0, h, w, 3), np.float32)
        return self.predict(batch, tta=tta, cam=cam)

    def label(self, probability: float) -> str:
        return label_for(probability, self.threshold, self.info.classes)
