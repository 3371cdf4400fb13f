"""Defaults of the export gates and conversion.

No heavy imports (no TensorFlow, onnx or onnxruntime): the CLI reads its option defaults from here at start-up.
The gate tolerances live in `edge.gates` (the runtime's `--precision auto` checks a report against the same
numbers); the file names of an export's set in `edge.model_files`.
"""

from __future__ import annotations

# re-exported: the export's option defaults and its variant gates are the runtime's
from ..edge.gates import DEFAULT_ATOL, FP16_ATOL, INT8_MIN_AGREEMENT, MIN_GATE_IMAGES, variant_gate  # noqa: F401

DEFAULT_OPSET = 17  # per-channel QDQ needs >= 13; 17 is supported by every onnxruntime >= 1.14

# FP32 gate: Keras vs ONNX on identical tensors, and file to probability through both input pipelines.
DEFAULT_N = 20
DEFAULT_BATCH_SIZES = (1, 5)
PARITY_SEED = 0

DEFAULT_CALIB_SIZE = 64
CALIB_SEED = 1000  # synthetic calibration cells differ from the parity cells (seed PARITY_SEED)
