"""The edge runtime: onnxruntime + OpenCV + numpy only. Never imports tensorflow, keras or tf2onnx."""

from .metadata import METADATA_KEY, InputSpec, MetadataError, ModelInfo
from .model import Classifier, ModelError
from .preprocess import ImageReadError, decode_image, load_image, preprocess
from .providers import DeviceError, available_devices
from .classify import Row, StageTimes, classify_paths
from .files import FileList, expand_paths
from .bench import BenchReport, bench_model

__all__ = [
    "METADATA_KEY", "InputSpec", "MetadataError", "ModelInfo", "Classifier", "ModelError", "ImageReadError",
    "decode_image", "load_image", "preprocess", "DeviceError", "available_devices",
    "Row", "StageTimes", "classify_paths", "FileList", "expand_paths", "BenchReport", "bench_model",
]
