"""Keras -> ONNX with tf2onnx, the `leuk_edge` metadata entry, and the structural checks every exported file gets.

The graph takes NHWC float32 RGB in [0, 1] named `image` with a dynamic batch dimension `N`, and returns
P(all) named `p_all` with shape (N, 1) (calibrated: the run's temperature is folded into the graph) and, with
the explanation, `cam` with shape (N, h, w); everything else the edge needs travels in the metadata.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import onnx

from .. import DISCLAIMER, __version__
from ..edge.metadata import METADATA_KEY, InputSpec, ModelInfo
from ..edge.model import Classifier
from .defaults import DEFAULT_OPSET
from .keras_io import SourceInfo

INPUT_NAME = "image"
OUTPUT_NAME = "p_all"
CAM_NAME = "cam"
OOD_NAME = "ood"
BATCH_DIM = "N"
OUTPUT_MEANING = "P(all): probability that the cell is a leukemic blast (class index 1); 1 - P is P(hem)"


def convert_keras(model, height: int, width: int, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """tf2onnx conversion of a model with outputs P(all) or [P(all), cam] (`train.graph.explain_model`). The
    explicit input_signature is required with Keras 3 (tf2onnx cannot trace the model's own signature) and fixes
    the input name and the dynamic batch dimension."""
    import tensorflow as tf
    import tf2onnx

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    if len(model.outputs) not in (1, 2, 3):
        raise ValueError(f"expected outputs P(all) [, cam] [, ood], this model has {len(model.outputs)} outputs")
    spec = (tf.TensorSpec((None, height, width, 3), tf.float32, name=INPUT_NAME),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset)
    _stable_io(proto, len(model.outputs))
    return proto


def _rename_output(graph, old: str, new: str) -> None:
    for node in graph.node:
        node.output[:] = [new if o == old else o for o in node.output]
        node.input[:] = [new if i == old else i for i in node.input]
    for out in graph.output:
        if out.name == old:
            out.name = new


def _stable_io(proto: onnx.ModelProto, n_outputs: int = 1) -> None:
    """Name the outputs `p_all` (rank 2), `cam` (rank 3) and `ood` (rank 1) whatever the Keras layers were called,
    and the batch dim `N` (tf2onnx leaves an arbitrary `unk__NN`), so consumers can rely on them."""
    graph = proto.graph
    if len(graph.input) != 1 or len(graph.output) != n_outputs:
        raise ValueError(f"converted graph has {len(graph.input)} inputs / {len(graph.output)} outputs, "
                         f"expected 1/{n_outputs}")
    by_rank = {len(o.type.tensor_type.shape.dim): o.name for o in graph.output}
    names = {2: OUTPUT_NAME, 3: CAM_NAME, 1: OOD_NAME}
    wanted = {rank: names[rank] for rank in by_rank if rank in names}
    if len(by_rank) != n_outputs or set(by_rank) != set(wanted) or 2 not in wanted:
        raise ValueError(f"converted outputs have ranks {sorted(by_rank)}, expected 2 [, 3] [, 1]")
    for rank, new in wanted.items():
        if by_rank[rank] != new:
            _rename_output(graph, by_rank[rank], new)
    for vi in (graph.input[0], *graph.output):
        dim0 = vi.type.tensor_type.shape.dim[0]
        if not dim0.HasField("dim_value"):
            dim0.dim_param = BATCH_DIM


def build_model_info(src: SourceInfo, source_sha256: str, opset: int, precision: str = "fp32",
                     cam: dict | None = None, card: dict | None = None, scope: dict | None = None) -> ModelInfo:
    """The metadata: `calibration` when the run has one (the output is then sigmoid(logit / T)), `cam` when the
    explanation output is exported, `card` the model card's essentials."""
    meaning = OUTPUT_MEANING
    if src.calibration:
        meaning += (f"; calibrated: sigmoid(logit / {src.temperature:g}), temperature fitted on "
                    f"{src.calibration['fitted_on']}")
    extra = {
        "source_sha256": source_sha256,
        "leuk_edge_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "opset": opset,
        "precision": precision,
    }
    if src.calibration:
        extra["calibration"] = dict(src.calibration)
    if cam:
        extra["cam"] = cam
    if card:
        extra["card"] = card
    if scope:
        extra["scope"] = scope
    return ModelInfo(
        architecture=src.architecture,
        input=InputSpec(name=INPUT_NAME, height=src.height, width=src.width, resize=src.resize),
        output={"name": OUTPUT_NAME, "meaning": meaning},
        threshold=src.threshold,
        classes=tuple(src.classes),
        extra=extra,
    )


def set_metadata(proto: onnx.ModelProto, info_json: str) -> None:
    """The one metadata_props entry, `leuk_edge` (docs/contracts.md); anything a converter or quantizer left is dropped."""
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, info_json
    proto.doc_string = f"leuk-edge model. {DISCLAIMER}"


def metadata_with_precision(proto: onnx.ModelProto, precision: str) -> str:
    """The model's `leuk_edge` metadata JSON with `precision` replaced (for a variant made from it)."""
    info = ModelInfo.from_metadata_map({p.key: p.value for p in proto.metadata_props})
    return replace(info, extra={**info.extra, "precision": precision}).to_json()


def check_onnx(path: str | Path, device: str = "cpu") -> Classifier:
    """The ONNX checker with full shape/type inference, then the edge Classifier on `device` (an onnxruntime
    session at full optimisation, and the metadata parsed): a file that passes both loads everywhere leuk-edge
    runs. The Classifier is returned so the parity gate runs on this very session instead of opening another."""
    onnx.checker.check_model(str(path), full_check=True)
    return Classifier(path, device=device)
