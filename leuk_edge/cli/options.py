"""Options that several commands share, each declared once: its flag, default, help and check.

Single options are `Annotated` types (`Device`, `Threads`, `Precision`, ...). Groups of options that travel together
are dataclasses marked with `@option_group`; a command declares one parameter of that type and `@command`
expands it into the group's flags on the command line, then hands the command one filled-in object:

    @command
    def stream(source: ..., run: ModelOptions, live: LiveOptions): ...

so `stream` and `serve` take the same `--backend`, `--um-per-px`, ... with the same checks, and a new shared
flag is one new field. Nothing heavy is imported here: the CLI starts fast.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import MISSING, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Annotated, Optional, get_type_hints

import typer

from ..edge.detect import CNMC_CANVAS_UM, DetectorConfig
from ..edge.sources import BACKENDS
from .common import UsageError

DEVICE_HELP = "auto | cpu | cuda | tensorrt | openvino | coreml | directml. A named device that is not available " \
              "is an error (no silent fall-back to CPU)."
PRECISION_HELP = ("auto | fp32 | fp16 | int8. auto runs MODEL.int8.onnx (CPU) or MODEL.fp16.onnx (GPU) only when "
                  "its export manifest and gate report bind it to this MODEL.onnx (gated with the export's own "
                  "criterion on >= 100 real images on the same kind of device), else the FP32 model; the summary "
                  "says which file ran and why.")

Device = Annotated[str, typer.Option("--device", "-d", help=DEVICE_HELP)]
Threads = Annotated[Optional[int], typer.Option("--threads", min=1,
                                                help="onnxruntime intra-op threads (default: one per core).")]
Precision = Annotated[str, typer.Option("--precision", "-p", help=PRECISION_HELP)]
SCOPE_HELP = ("--scope (default): a model with a scope gate labels cells out of its scope 'other' (never counted "
              "in all, hem or the blast fraction); --no-scope: every cell is all or hem. A model without the gate "
              "runs with a one-line warning.")
Scope = Annotated[bool, typer.Option("--scope/--no-scope", help=SCOPE_HELP)]
ModelFile = Annotated[Path, typer.Option("--model", "-m", help="Exported leuk-edge ONNX model (metadata inside).")]


def option_group(cls):
    """Mark a dataclass as a group of CLI options (see `command`)."""
    cls.__cli_group__ = True
    return cls


def command(fn):
    """Expand every parameter typed with an `option_group` dataclass into that group's options (its fields, with
    their `Annotated` Typer declarations and defaults), and rebuild the object before calling `fn`."""
    hints = get_type_hints(fn, include_extras=True)
    groups: dict[str, type] = {}
    params: list[inspect.Parameter] = []
    for p in inspect.signature(fn).parameters.values():
        cls = hints.get(p.name)
        if isinstance(cls, type) and is_dataclass(cls) and getattr(cls, "__cli_group__", False):
            groups[p.name] = cls
            field_hints = get_type_hints(cls, include_extras=True)
            params += [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=field_hints[f.name],
                                         default=inspect.Parameter.empty if f.default is MISSING else f.default)
                       for f in fields(cls)]
        else:
            params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints.get(p.name, p.annotation)))
    names = [p.name for p in params]
    clash = {n for n in names if names.count(n) > 1}
    if clash:
        raise TypeError(f"{fn.__name__}: option names declared twice: {', '.join(sorted(clash))}")

    @functools.wraps(fn)
    def run(**kwargs):
        for name, cls in groups.items():
            kwargs[name] = cls(**{f.name: kwargs.pop(f.name) for f in fields(cls)})
        return fn(**kwargs)

    run.__signature__ = inspect.Signature(params)
    run.__annotations__ = {p.name: p.annotation for p in params}
    return run


@option_group
@dataclass
class ModelOptions:
    """Which model file runs, where, and how it labels: `--model`, `--device`, `--threads`, `--precision`,
    `--scope/--no-scope` (classify, stream, serve)."""
    model: ModelFile
    device: Device = "auto"
    threads: Threads = None
    precision: Precision = "auto"
    scope: Scope = True

    def choose(self, device: str | None = None):
        """The PrecisionChoice for `device` (default: --device); a missing model or an unusable explicit
        precision is a usage error."""
        from ..edge.precision import choose_precision

        if not self.model.is_file():
            raise UsageError(f"model file not found: {self.model}")
        return choose_precision(self.model, self.precision, device or self.device)

    def open(self, threads: int | None = None):
        """(Classifier, PrecisionChoice): the chosen file opened on --device. Idle onnxruntime threads sleep rather
        than spin: between model calls the same cores decode, detect, crop and draw."""
        from ..edge import Classifier
        from ..edge.precision import overlay_source

        choice = self.choose()
        # A variant whose maps were not gated runs without them: overlays come from the FP32 model.
        clf = Classifier(choice.path, device=self.device, threads=self.threads or threads, spinning=False,
                         cam=overlay_source(choice.path) == choice.path, scope=self.scope)
        return clf, choice


@option_group
@dataclass
class LiveOptions:
    """How frames are read and cells found: the options `stream` and `serve` share."""
    backend: Annotated[Optional[str], typer.Option(
        "--backend", help=f"Force OpenCV's capture backend: {' | '.join(BACKENDS)} (default: ffmpeg for URLs, "
                          "automatic otherwise).")] = None
    um_per_px: Annotated[Optional[float], typer.Option(
        "--um-per-px", help="Frame scale in micrometres per pixel.")] = None
    magnification: Annotated[Optional[float], typer.Option(
        "--magnification", help="Total magnification; scale = --camera-pixel-um / magnification.")] = None
    camera_pixel_um: Annotated[float, typer.Option(
        "--camera-pixel-um", help="Camera pixel pitch as it lands in the frame (with --magnification).")] = \
        DetectorConfig.camera_pixel_um
    crop_um: Annotated[float, typer.Option(
        "--crop-um", min=0.0, help="Side of each cell's square crop in micrometres, a fixed field like C-NMC's "
                                   "450 px canvas (0: 2.15 x the cell's own size).")] = CNMC_CANVAS_UM
    keep_edge: Annotated[bool, typer.Option(
        "--keep-edge-cells", help="Also report cells cut by the frame edge.")] = False
    stride: Annotated[int, typer.Option("--stride", min=1, help="Process every Nth frame of the source.")] = 1
    reconnect_s: Annotated[float, typer.Option(
        "--reconnect-s", min=0.0, help="How long a lost camera/stream is retried (with back-off) before the run "
                                       "ends.")] = 10.0
    timeout_s: Annotated[float, typer.Option(
        "--timeout-s", min=0.1, help="Seconds a camera/stream may take to open or to deliver a frame before it "
                                     "counts as lost.")] = 5.0

    def check(self) -> "LiveOptions":
        if self.backend is not None and self.backend not in ("auto", *BACKENDS):
            raise UsageError(f"unknown --backend {self.backend!r}; choose {', '.join(BACKENDS)}")
        if self.um_per_px is not None and self.magnification is not None:
            raise UsageError("give --um-per-px or --magnification, not both")
        return self

    def stream_options(self, max_frames: int | None = None):
        """The edge StreamOptions (detector, stride, crop); the rest is checked by the stream itself."""
        from ..edge.stream import StreamOptions

        detector = DetectorConfig(um_per_px=self.um_per_px, magnification=self.magnification,
                                  camera_pixel_um=self.camera_pixel_um, drop_edge=not self.keep_edge)
        return StreamOptions(detector=detector, stride=self.stride, max_frames=max_frames,
                             crop_um=self.crop_um or None)

    def source_kwargs(self) -> dict:
        """Keyword arguments of `edge.sources.open_source` (a read may block as long as an open)."""
        return {"backend": self.backend, "reconnect_s": self.reconnect_s, "open_timeout_s": self.timeout_s,
                "read_timeout_s": self.timeout_s}
