"""Device names -> onnxruntime execution providers, without silent fall-backs."""

from __future__ import annotations

import onnxruntime as ort

DEVICES = ("auto", "cpu", "cuda", "tensorrt", "openvino", "coreml", "directml")
_PROVIDER = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "directml": "DmlExecutionProvider",
}
# `auto` prefers GPUs; TensorRT is left out of auto since its engine build takes minutes on first use.
_AUTO_ORDER = ("cuda", "openvino", "coreml", "directml", "cpu")


class DeviceError(ValueError):
    """A device was asked for that this machine's onnxruntime cannot provide."""


def available_devices() -> list[str]:
    have = set(ort.get_available_providers())
    return [d for d, p in _PROVIDER.items() if p in have]


def provider_of(device: str) -> str:
    """The execution provider a device name stands for (`auto`: the best one available here). A named device is
    not checked against this machine: a Ray driver picks the file for its actors' device, which it may lack."""
    if device not in DEVICES:
        raise DeviceError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    return providers_for(device)[0] if device == "auto" else _PROVIDER[device]


def providers_for(device: str) -> list[str]:
    """The provider list for a device; CPU is appended only for ops the device cannot run."""
    if device not in DEVICES:
        raise DeviceError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    have = ort.get_available_providers()
    if device == "auto":
        device = next(d for d in _AUTO_ORDER if _PROVIDER[d] in have)
    wanted = _PROVIDER[device]
    if wanted not in have:
        hint = " (install leuk-edge[gpu] and the CUDA/cuDNN libraries)" if device in ("cuda", "tensorrt") else ""
        raise DeviceError(
            f"device '{device}' is not available in this onnxruntime{hint}; available: "
            f"{', '.join(available_devices())}"
        )
    chain = [wanted]
    if device == "tensorrt":
        chain.append(_PROVIDER["cuda"])
    if wanted != _PROVIDER["cpu"]:
        chain.append(_PROVIDER["cpu"])
    return chain


def check_session_providers(session: ort.InferenceSession, requested: list[str]) -> list[str]:
    """onnxruntime drops a provider whose libraries fail to load with only a warning: refuse that."""
    used = session.get_providers()
    if requested[0] not in used:
        raise DeviceError(
            f"{requested[0]} was requested but onnxruntime could not start it (ran with {', '.join(used)}); "
            "check the GPU driver and CUDA/cuDNN libraries"
        )
    return used
