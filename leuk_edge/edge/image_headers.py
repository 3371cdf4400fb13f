"""Image dimensions from the file header alone (PNG, BMP, JPEG, TIFF and BigTIFF), read before any pixel is decoded.

OpenCV has no header-only API, and a small compressed file can declare a huge image (a 389 KB PNG of 20000 x 20000
pixels decodes to 1.2 GB of RGB): the runner checks the declared size against `--max-pixels` first. Also the
fast path for the C-NMC format: `read_bmp_pixels` puts an uncompressed 24-bit BMP's pixel array straight into
numpy (no general decoder), and leaves every other BMP variant to OpenCV.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


@dataclass(frozen=True)
class Layout:
    """What a header declares: size, format, and the decoded array's channels and bytes per sample."""

    width: int
    height: int
    format: str
    channels: int
    sample_bytes: int

    @property
    def decode_bytes(self) -> int:
        """The bytes OpenCV allocates to decode it (width x height x channels x bytes per sample)."""
        return self.width * self.height * self.channels * self.sample_bytes


# Channels of OpenCV's IMREAD_UNCHANGED result per PNG colour type (gray, RGB, palette, gray+alpha, RGBA): a palette
# or gray+alpha image may come back with an alpha channel, so they count 4.
_PNG_CHANNELS = {0: 1, 2: 3, 3: 4, 4: 4, 6: 4}


def _png(head: bytes) -> Layout | None:
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR" or len(head) < 26:
        return None
    w, h, depth, colour = struct.unpack(">IIBB", head[16:26])
    return Layout(w, h, "png", _PNG_CHANNELS.get(colour, 4), 2 if depth > 8 else 1)


def _bmp(head: bytes) -> Layout | None:
    if head[:2] != b"BM" or len(head) < 30:
        return None
    (dib,) = struct.unpack("<I", head[14:18])
    if dib == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        w, h, _planes, bpp = struct.unpack("<HHHH", head[18:26])
    else:
        w, h, _planes, bpp = struct.unpack("<iiHH", head[18:30])
    return Layout(abs(w), abs(h), "bmp", 4 if bpp == 32 else 3, 1)


def _jpeg(fh: BinaryIO) -> Layout | None:
    fh.seek(2)
    while True:
        b = fh.read(1)
        while b and b != b"\xff":  # skip to the next marker
            b = fh.read(1)
        while b == b"\xff":  # fill bytes
            b = fh.read(1)
        if not b:
            return None
        marker = b[0]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length field
            continue
        if marker == 0xD9:
            return None
        raw = fh.read(2)
        if len(raw) < 2:
            return None
        (length,) = struct.unpack(">H", raw)
        if marker in _JPEG_SOF:
            seg = fh.read(6)
            if len(seg) < 6:
                return None
            precision, h, w, components = struct.unpack(">BHHB", seg)
            return Layout(w, h, "jpeg", max(components, 1), 2 if precision > 8 else 1)
        fh.seek(length - 2, 1)


# TIFF field types that can hold ImageWidth / ImageLength / BitsPerSample / SamplesPerPixel: SHORT, LONG, and
# BigTIFF's LONG8.
_TIFF_INTS = {3: "H", 4: "I", 16: "Q"}


def _tiff(fh: BinaryIO, head: bytes) -> Layout | None:
    """The layout from the first IFD of a classic TIFF (magic 42: 12-byte entries, 4-byte offsets) or a BigTIFF
    (magic 43: 20-byte entries, 8-byte offsets)."""
    order = {b"II": "<", b"MM": ">"}.get(head[:2])
    if order is None:
        return None
    (magic,) = struct.unpack(order + "H", head[2:4])
    if magic == 42:
        (ifd,) = struct.unpack(order + "I", head[4:8])
        count_fmt, entry_size, value_at = "H", 12, 8
    elif magic == 43 and struct.unpack(order + "HH", head[4:8]) == (8, 0):
        (ifd,) = struct.unpack(order + "Q", head[8:16])
        count_fmt, entry_size, value_at = "Q", 20, 12
    else:
        return None
    fh.seek(ifd)
    raw = fh.read(struct.calcsize(count_fmt))
    if len(raw) < struct.calcsize(count_fmt):
        return None
    (count,) = struct.unpack(order + count_fmt, raw)
    tags: dict[int, int] = {258: 1, 277: 1}  # BitsPerSample, SamplesPerPixel: the TIFF defaults
    for _ in range(min(count, 4096)):
        entry = fh.read(entry_size)
        if len(entry) < entry_size:
            break
        tag, typ = struct.unpack(order + "HH", entry[:4])
        if tag in (256, 257, 258, 277) and typ in _TIFF_INTS:  # width, length, bits per sample, samples per pixel
            fmt = _TIFF_INTS[typ]
            (n,) = struct.unpack_from(order + ("I" if entry_size == 12 else "Q"), entry, 4)
            if tag == 258 and n * struct.calcsize(fmt) > entry_size - value_at:  # one value per sample, stored
                here = fh.tell()                                                # elsewhere: the first one
                (at,) = struct.unpack_from(order + ("I" if entry_size == 12 else "Q"), entry, value_at)
                fh.seek(at)
                raw = fh.read(struct.calcsize(fmt))
                fh.seek(here)
                if len(raw) == struct.calcsize(fmt):
                    tags[tag] = struct.unpack(order + fmt, raw)[0]
                continue
            tags[tag] = struct.unpack_from(order + fmt, entry, value_at)[0]
    if 256 not in tags or 257 not in tags:
        return None
    return Layout(tags[256], tags[257], "tiff", max(tags[277], 1), max(1, (tags[258] + 7) // 8))


def declared_layout(fh: BinaryIO) -> Layout | None:
    """What the header of a seekable binary file (a file or io.BytesIO) declares, or None when the format is not
    one of PNG, BMP, JPEG, TIFF (BigTIFF too) or the header cannot be parsed. The format is recognised by the bytes,
    never by a file name."""
    try:
        head = fh.read(32)
        if head[:8] == b"\x89PNG\r\n\x1a\n":
            return _png(head)
        if head[:2] == b"BM":
            return _bmp(head)
        if head[:2] == b"\xff\xd8":
            return _jpeg(fh)
        if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):  # TIFF, BigTIFF
            return _tiff(fh, head)
    except (OSError, struct.error):
        return None
    return None


def header_dims(fh: BinaryIO) -> tuple[int, int, str] | None:
    """(width, height, format) declared by the header of a seekable binary file (a file or io.BytesIO), or None
    when the format is not one of PNG, BMP, JPEG, TIFF or the header cannot be parsed (recognised by the bytes)."""
    found = declared_layout(fh)
    return None if found is None else (int(found.width), int(found.height), found.format)


def image_dims(path: str | Path) -> tuple[int, int] | None:
    """(width, height) declared by the file's header, or None when the format is not one of PNG, BMP, JPEG,
    TIFF or the header cannot be parsed (the caller then decodes and checks the decoded size)."""
    try:
        with open(path, "rb") as fh:
            found = header_dims(fh)
    except OSError:
        return None
    return None if found is None else found[:2]


def read_bmp_pixels(src: str | Path | BinaryIO, scratch: "Scratch") -> np.ndarray | None:
    """An uncompressed 24-bit BMP (BI_RGB, the C-NMC format) -> its BGR pixels as an (H, W, 3) uint8 view
    into `scratch` (top row first; bottom-up files come back as a flipped view, nothing copied).
    None for any other BMP variant or a file shorter than its header says: OpenCV decodes those.
    `src`: a path, or a file already open (read from its start: the decoder opens each file once)."""
    if isinstance(src, (str, Path)):
        with open(src, "rb") as fh:
            return read_bmp_pixels(fh, scratch)
    fh = src
    fh.seek(0)
    head = fh.read(54)
    if len(head) < 54 or head[:2] != b"BM":
        return None
    (offset,) = struct.unpack("<I", head[10:14])
    dib, w, h, planes, bpp, compression = struct.unpack("<IiiHHI", head[14:34])
    if dib < 40 or planes != 1 or bpp != 24 or compression != 0 or w <= 0 or h == 0:
        return None
    rows = abs(h)
    stride = (w * 3 + 3) & ~3  # rows are padded to 4 bytes
    need = stride * rows
    fh.seek(offset)
    buf = scratch.get("bmp", (need,), np.uint8)
    if fh.readinto(memoryview(buf)) != need:
        return None
    pixels = buf.reshape(rows, stride)[:, : w * 3].reshape(rows, w, 3)
    return pixels[::-1] if h > 0 else pixels


class Scratch:
    """Per-thread reusable arrays keyed by name: no per-image allocation of the big decode/resize buffers."""

    def __init__(self):
        self._arrays: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple, dtype) -> np.ndarray:
        a = self._arrays.get(name)
        size = int(np.prod(shape))
        if a is None or a.dtype != dtype or a.size < size:
            a = np.empty(size, dtype)
            self._arrays[name] = a
        return a[:size].reshape(shape)
