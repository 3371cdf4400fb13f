"""Reading what an export needs from a training run: the .keras model (safe mode only) and its settings.

The settings (architecture, input size, resize method, threshold) come from RUN/config.json beside the model,
as the train command writes it. Without one they are inferred from the model itself and the caller is told
which values are guesses, because a guessed threshold or resize method silently changes edge decisions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..edge.preprocess import RESIZE_MODES


class UnsafeModelError(ValueError):
    """The .keras file would run arbitrary Python code when loaded (Lambda layer, custom function)."""


class ModelLoadError(ValueError):
    """The .keras file is missing or not a loadable Keras model."""


@dataclass(frozen=True)
class SourceInfo:
    """What the ONNX metadata says about the model, and where each value came from."""
    architecture: str  # metadata name: "cnn" | "inception_v3"
    height: int
    width: int
    resize: str
    threshold: float
    classes: tuple = ("hem", "all")
    config_path: str | None = None
    warnings: list = field(default_factory=list)  # one line per inferred value
    calibration: dict | None = None  # config.json's {"method": "temperature", "temperature": T, "fitted_on"}
    config: dict = field(default_factory=dict)  # the run's config.json as read ({} without one)
    threshold_source: str = "config"  # "config" | "metrics.json" (the run's val threshold) | "assumed" (0.5)

    @property
    def temperature(self) -> float:
        """The temperature P(all) = sigmoid(logit / T) is calibrated with; 1 for an uncalibrated run."""
        return float(self.calibration["temperature"]) if self.calibration else 1.0


def load_keras_model(path: str | Path):
    """Load a .keras file in Keras' safe mode. A model carrying Python code (Lambda layer) is refused, never run.

    Export and parity only need inference, so the optimizer state is not restored (compile=False).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"Keras model not found: {path}")
    if path.suffix != ".keras":
        raise ModelLoadError(f"expected a Keras v3 '.keras' file, got {path.name}")
    import keras

    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except ValueError as exc:
        text = str(exc)
        # Keras' safe mode raises ValueError mentioning the lambda / arbitrary code execution; say it in one line.
        if "safe_mode" in text or "arbitrary code" in text or "Lambda" in text:
            raise UnsafeModelError(
                f"refusing to load {path.name}: it contains Python code (e.g. a Lambda layer) that would run on "
                "load; leuk-edge only exports models made of standard layers"
            ) from None
        raise ModelLoadError(f"cannot load {path}: {text.splitlines()[0] if text else type(exc).__name__}") from None
    except Exception as exc:  # zip/h5 corruption surfaces as many different exception types
        raise ModelLoadError(f"cannot load {path}: {str(exc).splitlines()[0][:200] or type(exc).__name__}") from None


_NAME_TO_ARCH = {"leuk_cnn": "cnn", "leuk_inception_v3": "inception_v3"}


def _input_hw(model) -> tuple[int, int]:
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[3] != 3 or shape[1] is None or shape[2] is None:
        raise ModelLoadError(f"expected a fixed-size NHWC RGB input, the model takes {shape}")
    return int(shape[1]), int(shape[2])


def source_info(model, keras_path: str | Path) -> SourceInfo:
    """Settings for the metadata: config.json beside the .keras file wins; otherwise inferred (with warnings)."""
    from ..train.metrics import run_threshold
    from ..train.models import ARCHITECTURE, RESIZE

    keras_path = Path(keras_path)
    height, width = _input_hw(model)
    cfg_path = keras_path.parent / "config.json"
    cfg: dict = {}
    if cfg_path.is_file():
        try:
            cfg = json.loads(cfg_path.read_text())
        except json.JSONDecodeError as exc:
            raise ModelLoadError(f"{cfg_path} is not valid JSON: {exc}") from None
    warnings: list[str] = []

    arch = cfg.get("architecture") or ARCHITECTURE.get(cfg.get("model", ""))
    if not arch:
        arch = _NAME_TO_ARCH.get(model.name)
        if not arch:
            raise ModelLoadError(f"cannot tell the architecture of model '{model.name}' (no config.json beside it)")
        warnings.append(f"architecture '{arch}' inferred from the model name '{model.name}'")
    cli_name = {v: k for k, v in ARCHITECTURE.items()}.get(arch, arch)

    if "image_size" in cfg and int(cfg["image_size"]) not in (height, width):
        raise ModelLoadError(f"config.json says image_size {cfg['image_size']} but the model takes {height}x{width}")

    resize = cfg.get("resize")
    if not resize:
        resize = RESIZE.get(cli_name, "area")
        warnings.append(f"resize method '{resize}' assumed (no config.json)")
    if resize not in RESIZE_MODES:
        raise ModelLoadError(f"unknown resize method {resize!r} in {cfg_path}")

    try:
        threshold, threshold_source = run_threshold(keras_path.parent, cfg)  # the one rule evaluate uses too
    except ValueError as exc:
        raise ModelLoadError(f"{cfg_path}: {exc}") from None
    if threshold_source == "assumed":
        warnings.append("threshold 0.5 assumed: no validation-chosen threshold found (config.json/metrics.json)")

    classes = tuple(cfg.get("classes", ("hem", "all")))
    if list(classes) != ["hem", "all"]:
        raise ModelLoadError(f"classes must be ['hem', 'all'], config.json has {list(classes)}")
    return SourceInfo(architecture=arch, height=height, width=width, resize=resize, threshold=threshold,
                      classes=classes, config_path=str(cfg_path) if cfg else None, warnings=warnings,
                      calibration=_calibration(cfg.get("calibration"), cfg_path), config=cfg,
                      threshold_source=threshold_source)


def _calibration(entry, cfg_path: Path) -> dict | None:
    """config.json's calibration entry, checked; None when the run has none (older runs: uncalibrated)."""
    from ..train.calibration import calibration_of

    try:
        return calibration_of({"calibration": entry})
    except ValueError as exc:
        raise ModelLoadError(f"{cfg_path}: {exc}") from None
