"""Open an exported model from its ONNX file alone and run it: `Classifier("model.onnx").predict(x)`."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort

from .metadata import MetadataError, ModelInfo
from .preprocess import preprocess
from .providers import check_session_providers, providers_for


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
        self.output_name = self.session.get_outputs()[0].name
        self.providers = self.session.get_providers()

    @property
    def size(self) -> tuple[int, int]:
        return self.info.input.height, self.info.input.width

    @property
    def threshold(self) -> float:
        return self.info.threshold

    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        h, w = self.size
        return preprocess(rgb, h, w, self.info.input.resize)

    def predict(self, batch: np.ndarray, tta: bool = False) -> np.ndarray:
        """Preprocessed NHWC float32 batch -> P(all) per image, shape (n,)."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.ndim == 3:
            batch = batch[None]
        if len(batch) == 0:
            return np.zeros((0,), np.float32)
        # TTA: the 8 views go through the model as one batch of 8n, then are averaged per image
        x = np.concatenate(dihedral(batch)) if tta else batch
        out = self.session.run([self.output_name], {self.input_name: x})[0].reshape(len(x), -1)[:, -1]
        return out.reshape(-1, len(batch)).mean(axis=0).astype(np.float32)

    def predict_rgb(self, images: Sequence[np.ndarray], tta: bool = False) -> np.ndarray:
        """RGB uint8 images of any size -> P(all)."""
        if not len(images):
            return np.zeros((0,), np.float32)
        return self.predict(np.stack([self.preprocess(im) for im in images]), tta=tta)

    def label(self, probability: float) -> str:
        return self.info.classes[1] if probability >= self.threshold else self.info.classes[0]
