import io
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
from PIL import Image

from mmtok.images import AlphaPolicy, BadImage, decode_rgb
from mmtok.reasons import Reason


def test_rgb_shape_and_dtype(image_files):
    arr = decode_rgb(str(image_files["rgb_640x480.png"]))
    assert arr.shape == (480, 640, 3) and arr.dtype == np.uint8 and arr.flags.c_contiguous
    assert np.array_equal(arr, np.asarray(Image.open(image_files["rgb_640x480.png"])))


def test_exif_transpose_on_and_off(image_files):
    path = str(image_files["exif6_640x480.jpg"])
    stored = decode_rgb(path, exif_transpose=False)
    shown = decode_rgb(path)
    assert stored.shape == (480, 640, 3)
    assert shown.shape == (640, 480, 3)
    # Orientation 6: the stored image is rotated 90 degrees clockwise for display.
    assert np.array_equal(shown, np.rot90(stored, k=-1))


def test_palette_transparency_drop_or_white(image_files):
    path = str(image_files["palette_alpha_30x20.png"])
    dropped = decode_rgb(path, alpha=AlphaPolicy.DROP)
    white = decode_rgb(path, alpha=AlphaPolicy.WHITE)
    assert dropped[0, 0].tolist() == [0, 0, 255]  # the colour under the transparent index
    assert white[0, 0].tolist() == [255, 255, 255]
    assert dropped[0, 15].tolist() == white[0, 15].tolist() == [255, 0, 0]  # opaque pixels


def test_rgba_half_alpha_blends_on_white():
    buf = io.BytesIO()
    Image.new("RGBA", (2, 2), (0, 0, 0, 128)).save(buf, "PNG")
    assert decode_rgb(buf.getvalue(), alpha="drop")[0, 0].tolist() == [0, 0, 0]
    assert decode_rgb(buf.getvalue(), alpha="white")[0, 0].tolist() == [127, 127, 127]


def _png16(samples: np.ndarray, colour_type: int) -> bytes:
    """A 16-bit PNG (grey: colour type 0, RGB: 2) written by hand: Pillow cannot save 48-bit."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    h, w = samples.shape[:2]
    rows = b"".join(b"\x00" + samples[y].astype(">u2").tobytes() for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def test_sixteen_bit_gray_is_its_high_byte_as_pillow_decodes_16_bit_colour(image_files):
    arr = decode_rgb(str(image_files["gray16_50x40.png"]))
    values = np.arange(40 * 50).reshape(40, 50) * 32
    assert arr.shape == (40, 50, 3)
    assert np.array_equal(arr[..., 0], values >> 8) and np.array_equal(arr[..., 2], values >> 8)
    # the same samples stored as 16-bit RGB: Pillow itself unpacks those to their high byte
    samples = np.random.default_rng(0).integers(0, 65536, (8, 9)).astype(np.uint16)
    colour = _png16(np.repeat(samples[..., None], 3, axis=2), 2)
    assert Image.open(io.BytesIO(colour)).mode == "RGB"
    grey = decode_rgb(_png16(samples, 0))
    assert np.array_equal(grey, decode_rgb(colour))
    assert np.array_equal(grey[..., 1], samples >> 8)


def test_cmyk_converts_to_rgb(image_files):
    assert decode_rgb(str(image_files["cmyk_64x48.jpg"]))[0, 0].tolist() == [255, 0, 0]


@pytest.mark.parametrize(
    ("name", "pixel"),
    [("animated_3frames_40x30.gif", [255, 0, 0]), ("multipage_2pages_32x24.tif", [10, 10, 10])],
)
def test_first_frame_of_multi_frame_files(image_files, name, pixel):
    assert decode_rgb(str(image_files[name]))[0, 0].tolist() == pixel


def test_truncated_rejected_unless_allowed(image_files):
    path = str(image_files["truncated_640x480.jpg"])
    with pytest.raises(BadImage) as err:
        decode_rgb(path)
    assert err.value.reason == Reason.TRUNCATED
    assert decode_rgb(path, allow_truncated=True).shape == (480, 640, 3)


def test_bomb_is_refused_before_allocation(image_files):
    # 40000 x 40000 RGB would need 4.8 GB; the refusal must come from the header alone.
    tracemalloc.start()
    with pytest.raises(BadImage) as err:
        decode_rgb(str(image_files["bomb_40000x40000.png"]))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert err.value.reason == Reason.BOMB
    assert peak < 10 << 20


def test_float_mode_converts_as_pillow_on_the_eight_bit_scale():
    values = np.array([[-3.0, 0.5, 1.7, 127.5, 254.9, 300.0]], np.float32)
    buf = io.BytesIO()
    Image.fromarray(values).save(buf, "TIFF")
    assert decode_rgb(buf.getvalue())[0, :, 0].tolist() == [0, 0, 1, 127, 254, 255]


def _cut(data: bytes, fraction: float) -> bytes:
    return data[: max(64, int(len(data) * fraction))]


@pytest.mark.parametrize(
    ("fmt", "options"),
    [
        ("WEBP", {}),
        ("WEBP", {"lossless": True}),
        ("TIFF", {}),
        ("TIFF", {"compression": "tiff_deflate"}),
        ("JPEG2000", {}),
        ("JPEG2000", {"no_jp2": True}),
        ("PNG", {}),
        ("JPEG", {}),
        ("GIF", {}),
        ("BMP", {}),
    ],
)
@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.99])
def test_a_cut_file_is_truncated_in_every_format(fmt, options, fraction):
    buf = io.BytesIO()
    photo = np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    Image.fromarray(photo).save(buf, fmt, **options)
    with pytest.raises(BadImage) as err:
        decode_rgb(_cut(buf.getvalue(), fraction))
    assert err.value.reason == Reason.TRUNCATED, err.value.message


def test_a_whole_but_corrupt_webp_stays_a_decode_error():
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 10, 10)).save(buf, "WEBP")
    data = bytearray(buf.getvalue())
    data[20:] = bytes(len(data) - 20)  # every byte after the chunk header zeroed, length kept
    with pytest.raises(BadImage) as err:
        decode_rgb(bytes(data))
    assert err.value.reason == Reason.DECODE_ERROR


@pytest.mark.parametrize(
    "name",
    [
        "tiny_1x1.png",
        "strip_4000x3.png",
        "photo_100x50.webp",
        "progressive_320x240.jpg",
        "café photo ü.jpg",
    ],
)
def test_awkward_but_valid_images_decode(image_files, name):
    arr = decode_rgb(str(image_files[name]))
    with Image.open(image_files[name]) as im:
        assert arr.shape == (im.height, im.width, 3)
