"""The `leuk_edge` ONNX metadata contract (docs/contracts.md): everything the edge needs to use a model.

`export` writes it (with the onnx package); the edge reads it through onnxruntime alone.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

METADATA_KEY = "leuk_edge"
SCHEMA_VERSION = 1
REQUIRED_KEYS = ("schema_version", "architecture", "classes", "threshold", "input", "output")
INPUT_KEYS = ("name", "height", "width", "channels", "layout", "color", "scale", "resize")


class MetadataError(ValueError):
    """The model lacks a usable `leuk_edge` metadata entry."""


@dataclass(frozen=True)
class InputSpec:
    name: str
    height: int
    width: int
    channels: int = 3
    layout: str = "NHWC"
    color: str = "RGB"
    value_scale: float = 1.0 / 255.0  # 8-bit pixel value -> model input; stored as the metadata's input "scale"
    resize: str = "area"

    def to_dict(self) -> dict:
        """The metadata's `input` object (docs/contracts.md: the factor is stored under "scale")."""
        d = asdict(self)
        d["scale"] = d.pop("value_scale")
        return d


@dataclass(frozen=True)
class ModelInfo:
    architecture: str
    input: InputSpec
    output: dict
    threshold: float = 0.5
    classes: tuple = ("hem", "all")
    schema_version: int = SCHEMA_VERSION
    extra: dict = field(default_factory=dict)  # source_sha256, leuk_edge_version, created, ...

    def to_json(self) -> str:
        d = asdict(self)
        extra = d.pop("extra")
        d["input"] = self.input.to_dict()
        d["classes"] = list(self.classes)
        return json.dumps({**d, **extra}, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> ModelInfo:
        missing = [k for k in REQUIRED_KEYS if k not in d]
        if missing:
            raise MetadataError(f"'{METADATA_KEY}' metadata lacks {', '.join(missing)}")
        inp = d["input"]
        missing = [k for k in INPUT_KEYS if k not in inp]
        if missing:
            raise MetadataError(f"'{METADATA_KEY}' metadata input lacks {', '.join(missing)}")
        if inp["layout"] != "NHWC" or inp["color"] != "RGB" or int(inp["channels"]) != 3:
            raise MetadataError("only NHWC RGB 3-channel models are supported")
        if list(d["classes"]) != ["hem", "all"]:
            raise MetadataError(f"classes must be ['hem', 'all'], got {d['classes']}")
        try:
            value_scale = float(inp["scale"])
        except (TypeError, ValueError):
            value_scale = float("nan")
        if not (0 < value_scale < float("inf")):  # the runner multiplies the 8-bit pixels by it (edge.preprocess)
            raise MetadataError(f"input scale must be a positive number, got {inp['scale']!r}")
        known = set(REQUIRED_KEYS)
        return cls(
            architecture=str(d["architecture"]),
            input=InputSpec(**{k: inp[k] for k in INPUT_KEYS if k != "scale"}, value_scale=value_scale),
            output=dict(d["output"]),
            threshold=float(d["threshold"]),
            classes=tuple(d["classes"]),
            schema_version=int(d["schema_version"]),
            extra={k: v for k, v in d.items() if k not in known},
        )

    @classmethod
    def from_metadata_map(cls, props: dict, source: str = "model") -> ModelInfo:
        if METADATA_KEY not in props:
            raise MetadataError(
                f"{source} has no '{METADATA_KEY}' metadata entry; export it with `leuk-edge export`"
            )
        try:
            d = json.loads(props[METADATA_KEY])
        except json.JSONDecodeError as exc:
            raise MetadataError(f"'{METADATA_KEY}' metadata of {source} is not valid JSON: {exc}") from None
        return cls.from_dict(d)
