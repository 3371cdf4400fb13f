"""THE preprocessing of leuk-edge: decode -> RGB -> resize -> float32 / 255.

Training (tf.data via ``tf.numpy_function``), export parity checks, ``classify`` and ``stream`` all call these
functions, so the pixels a model saw in training are the pixels it sees at the edge (no train/serve skew).
Only numpy and OpenCV here.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = (".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff")
RESIZE_MODES = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR}
SCALE = 1.0 / 255.0


class ImageReadError(ValueError):
    """A file that cannot be decoded as an image; the message is a short, user-facing reason."""


def _to_uint8(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        # 16-bit microscope exports: keep the full range, map 0..65535 onto 0..255.
        return np.round(img.astype(np.float32) / 257.0).astype(np.uint8)
    if np.issubdtype(img.dtype, np.floating):
        peak = 1.0 if float(np.nanmax(img)) <= 1.0 else 255.0
        return np.clip(np.nan_to_num(img) / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
    raise ImageReadError(f"unsupported pixel type {img.dtype}")


def to_rgb(img: np.ndarray, bgr: bool = True) -> np.ndarray:
    """Any OpenCV-decoded image (gray, BGR, BGRA; 8/16-bit) -> contiguous RGB uint8 (H, W, 3)."""
    img = _to_uint8(img)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.ndim != 3 or img.shape[2] not in (1, 3, 4):
        raise ImageReadError(f"unsupported image shape {img.shape}")
    if img.shape[2] == 1:
        return cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        # C-NMC cells sit on black: composite transparent pixels onto black, not white.
        alpha = img[:, :, 3:4].astype(np.float32) / 255.0
        img = np.round(img[:, :, :3].astype(np.float32) * alpha).astype(np.uint8)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB) if bgr else np.ascontiguousarray(img[:, :, :3])


def decode_image(path: str | Path) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3). Raises ImageReadError with a short reason."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageReadError(f"cannot read file: {exc.strerror or exc}") from None
    if size == 0:
        raise ImageReadError("empty file")
    # cv2.imread decodes a 450x450 BMP ~4x faster than imdecode from memory (OpenCV 5); imdecode remains the
    # path for names imread cannot open (non-ASCII on Windows) and gives the same pixels (same decoder).
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED) if str(path).isascii() else None
    if img is None:
        try:
            data = np.fromfile(path, dtype=np.uint8)
        except OSError as exc:
            raise ImageReadError(f"cannot read file: {exc.strerror or exc}") from None
        img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise ImageReadError("not a decodable image (corrupt, truncated or wrong format)")
    return to_rgb(img)


def preprocess(rgb: np.ndarray, height: int, width: int, resize: str = "area",
               out: np.ndarray | None = None) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> float32 (height, width, 3) in [0, 1], resized with the model's method.

    `out`: an optional float32 (height, width, 3) array to write into (e.g. a slot of a batch); same values."""
    if resize not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode {resize!r}; expected one of {sorted(RESIZE_MODES)}")
    if rgb.shape[0] != height or rgb.shape[1] != width:
        rgb = cv2.resize(rgb, (width, height), interpolation=RESIZE_MODES[resize])
    if out is not None:
        return np.multiply(rgb, np.float32(SCALE), out=out, dtype=np.float32)
    return rgb.astype(np.float32) * np.float32(SCALE)


def load_image(path: str | Path, height: int, width: int, resize: str = "area") -> np.ndarray:
    """File -> model input (height, width, 3) float32: decode_image + preprocess."""
    return preprocess(decode_image(path), height, width, resize)


def is_image_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES
