"""THE preprocessing pinned with independent values: hand-written files with known bytes, OpenCV's own INTER_AREA
as the second implementation of the fast resize, 12-bit data in 16-bit TIFFs, the pixel limit."""

import struct
import zlib

import cv2
import numpy as np
import pytest

from leuk_edge.edge.image_headers import Scratch, image_dims, read_bmp_pixels
from leuk_edge.edge.preprocess import (ImageReadError, ImageTooLarge, decode_image, detect_bit_depth, load_image,
                                       preprocess)


# --- hand-written files ---------------------------------------------------------------------------------------------

def png_bytes(width: int, height: int, color_type: int, rows: list[bytes] | None = None, bit_depth: int = 8,
              idat: bytes | None = None) -> bytes:
    """A PNG written by hand (signature, IHDR, IDAT, IEND): no image library on the writing side."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    if idat is None:
        idat = zlib.compress(b"".join(b"\x00" + r for r in rows))  # filter type 0 per row
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def bmp_bytes(bgr_rows_top_first: list[list[tuple[int, int, int]]], top_down: bool = False) -> bytes:
    """A 24-bit BI_RGB BMP written by hand: each pixel's B, G, R bytes, rows padded to 4 bytes, bottom-up unless
    `top_down` (negative height)."""
    h, w = len(bgr_rows_top_first), len(bgr_rows_top_first[0])
    stride = (w * 3 + 3) // 4 * 4
    stored = bgr_rows_top_first if top_down else bgr_rows_top_first[::-1]
    data = b"".join(bytes(v for px in row for v in px).ljust(stride, b"\x00") for row in stored)
    info = struct.pack("<IiiHHIIiiII", 40, w, -h if top_down else h, 1, 24, 0, len(data), 2835, 2835, 0, 0)
    header = struct.pack("<2sIHHI", b"BM", 14 + 40 + len(data), 0, 0, 54)
    return header + info + data


def test_one_pure_red_pixel_is_1_0_0(tmp_path):
    p = tmp_path / "red.png"
    p.write_bytes(png_bytes(1, 1, 2, [bytes([255, 0, 0])]))  # colour type 2 = RGB, stored R, G, B
    assert decode_image(p).tolist() == [[[255, 0, 0]]]
    x = load_image(p, 1, 1)
    assert x.dtype == np.float32 and x.shape == (1, 1, 3)
    assert x.tolist() == [[[1.0, 0.0, 0.0]]]


@pytest.mark.parametrize("top_down", [False, True])
def test_bmp_with_known_bgr_bytes_decodes_to_the_matching_rgb(tmp_path, top_down):
    # 3 pixels wide: 9 bytes per row, padded to 12 (the padding must not leak into the pixels)
    rows = [[(255, 0, 0), (0, 255, 0), (0, 0, 255)],  # B, G, R bytes: blue, green, red
            [(10, 20, 30), (40, 50, 60), (70, 80, 90)]]
    p = tmp_path / "known.bmp"
    p.write_bytes(bmp_bytes(rows, top_down=top_down))
    expected = [[[0, 0, 255], [0, 255, 0], [255, 0, 0]],  # RGB, top row first
                [[30, 20, 10], [60, 50, 40], [90, 80, 70]]]
    assert decode_image(p).tolist() == expected
    assert load_image(p, 2, 3).tolist() == (np.array(expected, np.float32) * np.float32(1 / 255)).tolist()


def test_transparent_pixels_come_out_black_whatever_their_colour(tmp_path):
    # colour type 6 = RGBA: transparent red, opaque green, half-transparent blue (alpha 128), transparent white
    p = tmp_path / "rgba.png"
    p.write_bytes(png_bytes(4, 1, 6, [bytes([255, 0, 0, 0, 0, 255, 0, 255, 0, 0, 255, 128, 255, 255, 255, 0])]))
    assert decode_image(p).tolist() == [[[0, 0, 0], [0, 255, 0], [0, 0, 128], [0, 0, 0]]]
    x = load_image(p, 1, 4)
    assert x[0, 0].tolist() == [0, 0, 0] and x[0, 3].tolist() == [0, 0, 0] and x[0, 1].tolist() == [0, 1, 0]


# --- bit depth ------------------------------------------------------------------------------------------------------

def test_bit_depth_detection_and_forcing():
    assert detect_bit_depth(np.zeros((2, 2), np.uint8)) == 8
    assert detect_bit_depth(np.array([[0, 4095]], np.uint16)) == 12
    assert detect_bit_depth(np.array([[0, 4096]], np.uint16)) == 16
    assert detect_bit_depth(np.array([[0, 4095]], np.uint16), 16) == 16
    with pytest.raises(ValueError, match="bit depth"):
        detect_bit_depth(np.array([[1]], np.uint16), 11)


@pytest.mark.parametrize("depth, value, expected", [
    (None, 4095, 255), (None, 2048, 128), (None, 65535, 255), (None, 32896, 128),  # 12-bit detected; 16-bit
    (10, 1023, 255), (10, 512, 128), (14, 16383, 255), (16, 4095, 16), (8, 255, 255), (8, 300, 255),
])
def test_16_bit_tiff_values_map_by_bit_depth(tmp_path, depth, value, expected):
    """A real 16-bit TIFF written by OpenCV; expected = round(value * 255 / (2**depth - 1)), clipped."""
    img = np.full((4, 4, 3), value, np.uint16)
    img[0, 0] = 0
    p = tmp_path / "v.tif"
    assert cv2.imwrite(str(p), img)
    assert cv2.imread(str(p), cv2.IMREAD_UNCHANGED).dtype == np.uint16  # really 16-bit on disk
    rgb = decode_image(p, bit_depth=depth)
    assert rgb[1, 1].tolist() == [expected] * 3 and rgb[0, 0].tolist() == [0, 0, 0]


def test_a_12_bit_copy_of_a_cell_decodes_to_the_8_bit_original(tmp_path):
    from leuk_edge.synth.cells import render_cnmc_image

    rgb = render_cnmc_image(np.random.default_rng(3), "all")
    twelve = np.rint(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR).astype(np.float64) * 4095 / 255).astype(np.uint16)
    p = tmp_path / "cell12.tiff"
    assert cv2.imwrite(str(p), twelve)
    np.testing.assert_array_equal(decode_image(p), rgb)  # 12 bits hold every 8-bit level exactly
    np.testing.assert_array_equal(load_image(p, 64, 64), preprocess(rgb, 64, 64))


# --- the fast resize == OpenCV INTER_AREA on 8 bits -----------------------------------------------------------------

SIZES = [((450, 450), (256, 256)), ((450, 450), (224, 224)), ((450, 450), (225, 225)), ((450, 450), (32, 32)),
         ((652, 1226), (256, 256)), ((301, 97), (48, 40)), ((100, 100), (256, 256)), ((64, 64), (64, 64)),
         ((120, 90), (40, 45)), ((450, 450), (449, 300))]


@pytest.mark.parametrize("resize", ["area", "linear"])
def test_fast_resize_is_bit_identical_to_opencv_on_8_bits(resize):
    """Second implementation: cv2.resize on the uint8 RGB image, then float32 x 1/255 (the contract as written)."""
    rng = np.random.default_rng(0)
    flag = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR}[resize]
    for (h, w), (th, tw) in SIZES:
        for img in (rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
                    np.full((h, w, 3), (7, 128, 250), np.uint8)):
            ref = cv2.resize(img, (tw, th), interpolation=flag).astype(np.float32) * np.float32(1 / 255)
            np.testing.assert_array_equal(preprocess(img, th, tw, resize), ref, err_msg=f"{(h, w)}->{(th, tw)}")


def test_fast_bmp_reader_gives_opencvs_pixels(tmp_path):
    rng = np.random.default_rng(1)
    scratch = Scratch()
    for i, shape in enumerate([(450, 450, 3), (37, 301, 3), (5, 1, 3)]):
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        p = tmp_path / f"x{i}.bmp"
        cv2.imwrite(str(p), img)
        fast = read_bmp_pixels(p, scratch)
        assert fast is not None
        np.testing.assert_array_equal(fast, cv2.imread(str(p), cv2.IMREAD_UNCHANGED))
        np.testing.assert_array_equal(decode_image(p), cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    gray = tmp_path / "gray.bmp"  # 8-bit palette BMP: not the fast path, OpenCV decodes it
    cv2.imwrite(str(gray), rng.integers(0, 256, (9, 7), dtype=np.uint8))
    assert read_bmp_pixels(gray, scratch) is None
    assert decode_image(gray).shape == (9, 7, 3)
    short = tmp_path / "short.bmp"
    short.write_bytes((tmp_path / "x0.bmp").read_bytes()[:5000])  # header promises more than the file has
    assert read_bmp_pixels(short, scratch) is None


# --- the pixel limit, from the header -------------------------------------------------------------------------------

def test_image_dims_from_headers(tmp_path):
    img = np.zeros((37, 53, 3), np.uint8)
    for ext in (".png", ".bmp", ".jpg", ".tif"):
        p = tmp_path / f"a{ext}"
        cv2.imwrite(str(p), img)
        assert image_dims(p) == (53, 37), ext
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    assert image_dims(tmp_path / "junk.png") is None


def test_an_image_over_the_pixel_limit_is_refused_before_decoding(tmp_path):
    p = tmp_path / "huge.png"
    p.write_bytes(png_bytes(20000, 20000, 0, idat=b"never decoded"))  # the header alone: no pixel data
    with pytest.raises(ImageTooLarge, match="image too large: 20000x20000 = 400 MP"):
        decode_image(p)
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.zeros((100, 100, 3), np.uint8))
    with pytest.raises(ImageTooLarge):
        decode_image(small, max_pixels=9999)
    assert decode_image(small, max_pixels=10000).shape == (100, 100, 3)
    assert isinstance(ImageTooLarge("x"), ImageReadError)  # an error row, not a crash


def _bigtiff(width: int, height: int, pixels: np.ndarray | None = None) -> bytes:
    """A little-endian BigTIFF (magic 43, 8-byte offsets, 20-byte IFD entries) of one uncompressed 8-bit gray strip,
    written by hand from the TIFF 6 / BigTIFF layout. Without `pixels`, the strip is declared but absent."""
    entries = []  # (tag, type, count, value): SHORT 3, LONG8 16

    def entry(tag, typ, value):
        entries.append(struct.pack("<HHQQ", tag, typ, 1, value))

    n_entries = 8
    data_at = 16 + 8 + 20 * n_entries + 8
    entry(256, 16, width)           # ImageWidth (LONG8)
    entry(257, 16, height)          # ImageLength
    entry(258, 3, 8)                # BitsPerSample
    entry(259, 3, 1)                # Compression: none
    entry(262, 3, 1)                # Photometric: black is zero
    entry(273, 16, data_at)         # StripOffsets
    entry(278, 16, height)          # RowsPerStrip
    entry(279, 16, width * height)  # StripByteCounts
    head = b"II" + struct.pack("<HHHQ", 43, 8, 0, 16)
    ifd = struct.pack("<Q", n_entries) + b"".join(entries) + struct.pack("<Q", 0)
    return head + ifd + (b"" if pixels is None else np.ascontiguousarray(pixels, np.uint8).tobytes())


@pytest.fixture
def no_decoder(monkeypatch):
    """OpenCV's decoders raise: what must be refused before decoding cannot reach them unnoticed."""
    def decoded(*args, **kwargs):
        raise AssertionError("decoded before the pixel check")

    monkeypatch.setattr(cv2, "imread", decoded)  # the module object preprocess uses
    monkeypatch.setattr(cv2, "imdecode", decoded)


def test_bigtiff_dims_come_from_its_header_and_it_decodes(tmp_path):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (30, 41), dtype=np.uint8)
    p = tmp_path / "big.tif"
    p.write_bytes(_bigtiff(41, 30, gray))
    assert image_dims(p) == (41, 30)
    np.testing.assert_array_equal(decode_image(p), np.repeat(gray[:, :, None], 3, axis=2))


def test_bigtiff_over_the_limit_is_refused_before_decoding(tmp_path, no_decoder):
    p = tmp_path / "huge.tif"
    p.write_bytes(_bigtiff(30000, 20000))  # 600 MP declared, no pixel data at all
    with pytest.raises(ImageTooLarge, match="30000x20000"):
        decode_image(p)


def test_bytes_that_do_not_match_the_name_are_sniffed_never_decoded_unchecked(tmp_path, no_decoder):
    """A PNM named .png: OpenCV would pick its decoder by the bytes and decode before any size check."""
    p = tmp_path / "cell.png"
    p.write_bytes(b"P6\n20000 20000\n255\n" + b"\x00" * 64)
    with pytest.raises(ImageReadError, match="not a PNG, JPEG, BMP or TIFF image by its bytes"):
        decode_image(p)
    big_png = tmp_path / "cell.bmp"  # a PNG header under a BMP name: checked as the PNG it is
    big_png.write_bytes(png_bytes(20000, 20000, 0, idat=b"never decoded"))
    with pytest.raises(ImageTooLarge, match="20000x20000"):
        decode_image(big_png)


def test_a_jpeg_named_png_decodes(tmp_path):
    p = tmp_path / "cell.png"
    ok, data = cv2.imencode(".jpg", np.full((20, 30, 3), 128, np.uint8))
    p.write_bytes(data.tobytes())
    assert decode_image(p).shape == (20, 30, 3)
