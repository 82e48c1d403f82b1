import io
import tracemalloc

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


def test_sixteen_bit_gray_scales_with_rounding(image_files):
    arr = decode_rgb(str(image_files["gray16_50x40.png"]))
    values = np.arange(40 * 50).reshape(40, 50) * 32
    expected = (values * 255 + 32767) // 65535
    assert arr.shape == (40, 50, 3)
    assert np.array_equal(arr[..., 0], expected) and np.array_equal(arr[..., 2], expected)


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


def test_float_mode_is_unsupported():
    buf = io.BytesIO()
    Image.fromarray(np.ones((4, 4), np.float32)).save(buf, "TIFF")
    with pytest.raises(BadImage) as err:
        decode_rgb(buf.getvalue())
    assert err.value.reason == Reason.UNSUPPORTED_MODE


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
