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

from .convert import get_metadata, set_metadata, with_precision
from .parity import list_images, synthetic_cells

DEFAULT_CALIB_SIZE = 64
CALIB_SEED = 1000  # distinct from the parity seed, so INT8 is not judged on the images it was calibrated on
CALIB_BATCH = 8


def variant_path(fp32_path: str | Path, precision: str) -> Path:
    """MODEL.onnx -> MODEL.int8.onnx / MODEL.fp16.onnx."""
    p = Path(fp32_path)
    stem = p.name[:-5] if p.name.endswith(".onnx") else p.name
    return p.with_name(f"{stem}.{precision}.onnx")


def _metadata_json(proto: onnx.ModelProto) -> str:
    import json

    return json.dumps(get_metadata(proto), sort_keys=True)


def make_fp16(src: str | Path, dst: str | Path) -> Path:
    """FP16 weights and compute; inputs/outputs stay float32 (keep_io_types) so callers need no change."""
    from onnxconverter_common import float16

    model = onnx.load(str(src))
    meta = _metadata_json(model)
    # Values beyond float16's range are clamped rather than turned into inf (max_finite_val default 1e4); tiny
    # weights flushed to 1e-7 are expected and would otherwise print one warning per tensor.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model16 = float16.convert_float_to_float16(model, keep_io_types=True)
    set_metadata(model16, with_precision(meta, "fp16"))
    onnx.save(model16, str(dst))
    return Path(dst)


def calibration_images(height: int, width: int, resize: str, data: str | Path | None = None,
                       size: int = DEFAULT_CALIB_SIZE) -> tuple[np.ndarray, str]:
    """Calibration tensors through THE preprocessing: images from `data`, or synthetic cells when None."""
    from ..edge.preprocess import load_image, preprocess

    if data is not None:
        files = list_images(data, size)
        return np.stack([load_image(f, height, width, resize) for f in files]), f"{len(files)} images from {data}"
    cells = synthetic_cells(size, seed=CALIB_SEED)
    return (np.stack([preprocess(c, height, width, resize) for c in cells]),
            f"{size} synthetic cells (seed {CALIB_SEED})")


def make_int8(src: str | Path, dst: str | Path, calib: np.ndarray, per_channel: bool = True) -> Path:
    """onnxruntime static quantization, QDQ format, per-channel int8 weights, uint8 activations (U8S8: the
    fast path of onnxruntime's x86 kernels), MinMax ranges from `calib`."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = onnx.load(str(src))
    meta = _metadata_json(model)
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
        quant_pre_process(str(src), str(pre))
        quantize_static(
            str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    q = onnx.load(str(dst))
    set_metadata(q, with_precision(meta, "int8"))
    onnx.save(q, str(dst))
    return Path(dst)
