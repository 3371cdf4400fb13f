"""The edge runtime: onnxruntime + OpenCV + numpy only. Never imports tensorflow, keras or tf2onnx."""

from .metadata import METADATA_KEY, InputSpec, MetadataError, ModelInfo
from .model import Classifier, ModelError
from .preprocess import ImageReadError, decode_image, load_image, preprocess
from .providers import DeviceError, available_devices

__all__ = [
    "METADATA_KEY", "InputSpec", "MetadataError", "ModelInfo", "Classifier", "ModelError", "ImageReadError",
    "decode_image", "load_image", "preprocess", "DeviceError", "available_devices",
]
