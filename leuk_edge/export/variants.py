"""Reduced-precision variants of an exported FP32 model: FP16 weights and INT8 static quantization.

Both keep the FP32 model's interface (float32 `image` in, float32 `p_all` out) and its `leuk_edge` metadata, so
the edge Classifier opens them exactly like the FP32 file.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx

from .convert import CAM_NAME, metadata_with_precision, set_metadata

CALIB_BATCH = 8


def make_fp16(src: str | Path, dst: str | Path) -> Path:
    """FP16 weights and compute; inputs/outputs stay float32 (keep_io_types) so callers need no change."""
    from onnxconverter_common import float16

    model = onnx.load(str(src))
    meta = metadata_with_precision(model, "fp16")
    # Values beyond float16's range are clamped rather than turned into inf (max_finite_val default 1e4); tiny
    # weights flushed to 1e-7 are expected and would otherwise print one warning per tensor.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model16 = float16.convert_float_to_float16(model, keep_io_types=True)
    set_metadata(model16, meta)
    onnx.save(model16, str(dst))
    return Path(dst)


def scope_nodes(model: onnx.ModelProto) -> list[str]:
    """The nodes of the `ood` score (train.scope.scope_layer: the taps' pooling and distances, named under `ood` by
    tf2onnx): kept in float.
    Measured on a 64 px CNN: quantized, the squared distance moved by up to 22 % and 1 of 32 val cells crossed
    the scope threshold (the variant gate failed); in float, 16 % (the int8 features' share) and none crossed. A
    (D x D) float MatMul costs nothing beside the convolutions."""
    return [n.name for n in model.graph.node if "/ood" in n.name or n.name.startswith("ood")]


def make_int8(src: str | Path, dst: str | Path, calib: np.ndarray, per_channel: bool = True) -> Path:
    """onnxruntime static quantization, QDQ format, per-channel int8 weights, uint8 activations (U8S8: the
    fast path of onnxruntime's x86 kernels), MinMax ranges from `calib`: NHWC float32 through THE preprocessing
    (the exporter uses `parity_inputs(..., seed=CALIB_SEED)`)."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = onnx.load(str(src))
    meta = metadata_with_precision(model, "int8")
    input_name = model.graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.i = 0

        def get_next(self):
            if self.i >= len(calib):
                return None
            batch = np.ascontiguousarray(calib[self.i:self.i + CALIB_BATCH], np.float32)
            self.i += CALIB_BATCH
            return {input_name: batch}

        def rewind(self):
            self.i = 0

    with tempfile.TemporaryDirectory(prefix="leuk_int8_") as tmp:
        # Shape inference + graph clean-up first, as onnxruntime's quantization docs recommend: quantizing the
        # un-fused graph leaves Q/DQ pairs around ops that later fuse away and costs accuracy and speed.
        pre = Path(tmp) / "pre.onnx"
        # onnxruntime's symbolic shape inference gives up on the `cam` head's small matrix ops (and leaves
        # temporary files in the working directory when it does); ONNX's own shape inference, which is what
        # convolutional graphs need for quantization, still runs.
        has_cam = any(o.name == CAM_NAME for o in model.graph.output)
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=has_cam)
        quantize_static(
            str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=scope_nodes(onnx.load(str(pre))),
        )
    q = onnx.load(str(dst))
    set_metadata(q, meta)
    onnx.save(q, str(dst))
    return Path(dst)
