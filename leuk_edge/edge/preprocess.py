"""THE preprocessing of leuk-edge: decode -> RGB -> resize -> float32 x scale (1/255).

Training (tf.data via ``tf.numpy_function``), export parity checks, ``classify`` and ``stream`` all call these
functions, so the pixels a model saw in training are the pixels it sees at the edge (no train/serve skew).
Only numpy and OpenCV here.

The contract (docs/contracts.md, "Preprocessing"):

- decode: 8-bit files as they are; 16-bit files are scaled by their bit depth (`bit_depth`, or detected: a
  maximum <= 4095 means 12-bit camera data in a 16-bit container) onto 0..255 with rounding; gray -> RGB;
  transparent pixels are composited onto black (the C-NMC background), whatever colour they carry.
- an image declaring more than `max_pixels` pixels is refused from its header, before decoding.
- resize to the model's size with the metadata's method (`area` = OpenCV INTER_AREA on 8-bit values, `linear`
  = INTER_LINEAR), then multiply by the metadata's `scale` (1/255).

Speed without changing a pixel: uncompressed 24-bit BMPs (the C-NMC format) are read straight into numpy; the
INTER_AREA down-scale with a non-integer ratio runs on float32 (OpenCV's generic area code is the same
arithmetic for 8-bit and float input: the float result rounded half-to-even is the 8-bit result, and faster;
`tests/test_preprocess.py` proves it equal); colour order is swapped after the resize, on the smaller image.
"""

from __future__ import annotations

import os

import threading
from pathlib import Path

import cv2
import numpy as np

from .image_headers import Scratch, header_dims, read_bmp_pixels

IMAGE_SUFFIXES = (".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff")
RESIZE_MODES = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR}
VALUE_SCALE = 1.0 / 255.0  # 8-bit value -> model input (metadata input.scale)
BIT_DEPTHS = (8, 10, 12, 14, 16)
DEFAULT_MAX_PIXELS = 50_000_000  # ~7000 x 7000: far above a microscope frame, far below what exhausts an edge box


class ImageReadError(ValueError):
    """A file that cannot be read or decoded as an image; the message is a short, user-facing reason."""


class ImageTooLarge(ImageReadError):
    """The image declares more pixels than allowed; refused before decoding."""


_local = threading.local()


def _scratch() -> Scratch:
    s = getattr(_local, "scratch", None)
    if s is None:
        s = _local.scratch = Scratch()
    return s


# ---------------------------------------------------------------------------------------------------- decode

def detect_bit_depth(img: np.ndarray, bit_depth: int | None = None) -> int:
    """The bit depth of decoded pixels: 8 for uint8; for uint16 the forced `bit_depth`, else 12 when the maximum
    is <= 4095 (12-bit camera data in a 16-bit file), else 16."""
    if img.dtype == np.uint8:
        return 8
    if bit_depth is not None:
        if bit_depth not in BIT_DEPTHS:
            raise ValueError(f"bit depth must be one of {', '.join(map(str, BIT_DEPTHS))}, got {bit_depth}")
        return int(bit_depth)
    return 12 if int(img.max(initial=0)) <= 4095 else 16


BAND_VALUES = 1 << 22  # values per band of rows in the conversions below (16 MiB of float32)


def _bands(img: np.ndarray):
    """Row slices covering `img`, each about BAND_VALUES values."""
    step = max(1, BAND_VALUES // max(1, img[0].size))
    return (slice(r, r + step) for r in range(0, img.shape[0], step))


def _to_uint8(img: np.ndarray, bit_depth: int | None = None) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        # Full range of the detected/forced depth onto 0..255 (16-bit: v/257; 12-bit: v*255/4095); no ties
        # exist for these factors, so rounding is exact. In bands of rows: the float32 temporaries stay small
        # (whole-image ones were 2x the decoded image each, three at once).
        factor = np.float32(255.0 / ((1 << detect_bit_depth(img, bit_depth)) - 1))
        out = np.empty(img.shape, np.uint8)
        for rows in _bands(img):
            scaled = img[rows].astype(np.float32)
            scaled *= factor
            out[rows] = np.clip(np.rint(scaled, out=scaled), 0, 255, out=scaled)
        return out
    if np.issubdtype(img.dtype, np.floating):
        peak = 1.0 if float(np.nanmax(img)) <= 1.0 else 255.0
        return np.clip(np.nan_to_num(img) / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
    raise ImageReadError(f"unsupported pixel type {img.dtype}")


def to_bgr(img: np.ndarray, bit_depth: int | None = None) -> np.ndarray:
    """Any OpenCV-decoded image (gray, BGR, BGRA; 8/16-bit, float) -> BGR uint8 (H, W, 3)."""
    img = _to_uint8(img, bit_depth)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ImageReadError(f"unsupported image shape {img.shape}")
    if img.shape[2] == 4:
        # C-NMC cells sit on black: composite transparent pixels onto black (their colour is dropped), not white.
        out = np.empty(img.shape[:2] + (3,), np.uint8)
        for rows in _bands(img):
            alpha = img[rows, :, 3:4].astype(np.float32) / 255.0
            out[rows] = np.round(img[rows, :, :3].astype(np.float32) * alpha)
        return out
    return img


def to_rgb(img: np.ndarray, bgr: bool = True, bit_depth: int | None = None) -> np.ndarray:
    """Any OpenCV-decoded image (gray, BGR, BGRA; 8/16-bit) -> contiguous RGB uint8 (H, W, 3)."""
    out = to_bgr(img, bit_depth)
    return cv2.cvtColor(out, cv2.COLOR_BGR2RGB) if bgr else np.ascontiguousarray(out)


def check_pixels(width: int, height: int, max_pixels: int | None) -> None:
    if max_pixels and width * height > max_pixels:
        raise ImageTooLarge(f"image too large: {width}x{height} = {width * height / 1e6:.0f} MP "
                            f"(limit {max_pixels / 1e6:g} MP, --max-pixels)")


def decode_bgr(path: str | Path, bit_depth: int | None = None,
               max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as BGR uint8 (H, W, 3), possibly a view into this thread's scratch buffer (valid until
    the thread's next call). Raises ImageReadError (ImageTooLarge before decoding) with a short reason."""
    path = Path(path)
    try:
        # One open: size, the format and declared dimensions from the bytes (refused before any decoding) and the
        # BMP fast path. Only what the header check understands reaches a decoder: OpenCV picks its decoder by
        # the bytes too, so a WebP, PNM, ... named .png would otherwise be decoded before any size check.
        with open(path, "rb") as fh:
            if os.fstat(fh.fileno()).st_size == 0:
                raise ImageReadError("empty file")
            found = header_dims(fh)
            if found is None:
                raise ImageReadError("not a PNG, JPEG, BMP or TIFF image by its bytes, or its header is cut short")
            check_pixels(found[0], found[1], max_pixels)
            pixels = read_bmp_pixels(fh, _scratch()) if found[2] == "bmp" else None
    except OSError as exc:
        raise ImageReadError(f"cannot read file: {exc.strerror or exc}") from None
    if pixels is not None:
        return pixels
    try:
        # cv2.imread decodes a 450x450 BMP ~4x faster than imdecode from memory (OpenCV 5); imdecode remains the
        # path for names imread cannot open (non-ASCII on Windows) and gives the same pixels (same decoder).
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED) if str(path).isascii() else None
        if img is None:
            img = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except OSError as exc:
        raise ImageReadError(f"cannot read file: {exc.strerror or exc}") from None
    except cv2.error as exc:
        raise ImageReadError(f"not a decodable image ({str(exc).strip().splitlines()[-1][:120]})") from None
    except MemoryError:
        raise ImageReadError("not enough memory to decode this image") from None
    if img is None or img.size == 0:
        raise ImageReadError("not a decodable image (corrupt, truncated or wrong format)")
    check_pixels(img.shape[1], img.shape[0], max_pixels)  # a header that under-states the size
    return to_bgr(img, bit_depth)


def decode_image(path: str | Path, bit_depth: int | None = None,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3). Raises ImageReadError with a short reason."""
    return cv2.cvtColor(decode_bgr(path, bit_depth, max_pixels), cv2.COLOR_BGR2RGB)


# ---------------------------------------------------------------------------------------------------- resize

FLOAT_AREA_MAX_VALUES = 1 << 24  # the float32 copy of a larger source (> 64 MiB) costs more memory than it saves time


def _float_area(shape: tuple, height: int, width: int, resize: str) -> bool:
    """INTER_AREA down-scaling with a non-integer ratio: OpenCV's generic area code, same on float32 (faster).
    Integer ratios (its 8-bit fast path rounds half up) and up-scaling (bilinear, fixed-point) stay on 8 bits, and
    so do large sources (the float copy is 4x the image: a 25 MB upload would cost 100 MB more)."""
    if resize != "area" or np.prod(shape) > FLOAT_AREA_MAX_VALUES:
        return False
    sy, sx = shape[0] / height, shape[1] / width
    return sx >= 1 and sy >= 1 and not (sx.is_integer() and sy.is_integer())


def resize_scale(src: np.ndarray, height: int, width: int, resize: str = "area", out: np.ndarray | None = None,
                 value_scale: float = VALUE_SCALE, swap_rb: bool = False) -> np.ndarray:
    """uint8 (H, W, 3) -> float32 (height, width, 3) = resized 8-bit values x scale, written into `out` if given.
    `swap_rb`: the source is BGR, the result RGB (swapped after the resize: the same values, fewer to move).
    `src` may be a flipped view (e.g. a bottom-up BMP): it is read once, in the float conversion."""
    if resize not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode {resize!r}; expected one of {sorted(RESIZE_MODES)}")
    if out is None:
        out = np.empty((height, width, 3), np.float32)
    s = _scratch()
    if src.shape[0] == height and src.shape[1] == width:
        small = src
    elif _float_area(src.shape, height, width, resize):
        f = s.get("float_src", src.shape, np.float32)
        np.copyto(f, src)
        small = s.get("float_small", (height, width, 3), np.float32)
        cv2.resize(f, (width, height), dst=small, interpolation=cv2.INTER_AREA)
        np.rint(small, out=small)  # == the 8-bit result (round half to even, as OpenCV's saturate_cast)
    else:
        small = cv2.resize(np.ascontiguousarray(src), (width, height), interpolation=RESIZE_MODES[resize])
    if swap_rb:
        if small.dtype != np.float32:
            small = cv2.cvtColor(np.ascontiguousarray(small), cv2.COLOR_BGR2RGB)
        else:
            cv2.cvtColor(small, cv2.COLOR_BGR2RGB, dst=out)
            small = out
    return np.multiply(small, np.float32(value_scale), out=out, dtype=np.float32)


def preprocess(rgb: np.ndarray, height: int, width: int, resize: str = "area",
               out: np.ndarray | None = None, value_scale: float = VALUE_SCALE) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> float32 (height, width, 3) in [0, 1], resized with the model's method.

    `out`: an optional float32 (height, width, 3) array to write into (e.g. a slot of a batch); same values."""
    return resize_scale(rgb, height, width, resize, out=out, value_scale=value_scale)


def load_image(path: str | Path, height: int, width: int, resize: str = "area", *, bit_depth: int | None = None,
               max_pixels: int | None = DEFAULT_MAX_PIXELS, value_scale: float = VALUE_SCALE,
               out: np.ndarray | None = None) -> np.ndarray:
    """File -> model input (height, width, 3) float32: decode + preprocess (the fast path of both)."""
    return resize_scale(decode_bgr(path, bit_depth, max_pixels), height, width, resize, out=out, value_scale=value_scale,
                        swap_rb=True)


def is_image_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES
