import pytest

from mmtok.images import BadImage, image_input, probe_image
from mmtok.reasons import Reason

# name -> (width, height, format, mode, frames, exif_orientation, display size)
EXPECTED = {
    "rgb_640x480.png": (640, 480, "png", "RGB", 1, None, (640, 480)),
    "baseline_640x480.jpg": (640, 480, "jpeg", "RGB", 1, None, (640, 480)),
    "progressive_320x240.jpg": (320, 240, "jpeg", "RGB", 1, None, (320, 240)),
    "cmyk_64x48.jpg": (64, 48, "jpeg", "CMYK", 1, None, (64, 48)),
    "photo_100x50.webp": (100, 50, "webp", "RGB", 1, None, (100, 50)),
    "animated_3frames_40x30.gif": (40, 30, "gif", "P", 3, None, (40, 30)),
    "multipage_2pages_32x24.tif": (32, 24, "tiff", "L", 2, None, (32, 24)),
    "gray16_50x40.png": (50, 40, "png", "I;16", 1, None, (50, 40)),
    "palette_alpha_30x20.png": (30, 20, "png", "P", 1, None, (30, 20)),
    "exif6_640x480.jpg": (640, 480, "jpeg", "RGB", 1, 6, (480, 640)),
    "tiny_1x1.png": (1, 1, "png", "RGB", 1, None, (1, 1)),
    "strip_4000x3.png": (4000, 3, "png", "RGB", 1, None, (4000, 3)),
    "café photo ü.jpg": (64, 48, "jpeg", "RGB", 1, None, (64, 48)),
    # The header of a truncated JPEG is intact: only a full decode finds the problem.
    "truncated_640x480.jpg": (640, 480, "jpeg", "RGB", 1, None, (640, 480)),
}

REJECTED = {
    "empty.jpg": Reason.EMPTY_FILE,
    "random_bytes.jpg": Reason.NOT_IMAGE,
    "page_saved_as.png": Reason.NOT_IMAGE,
    "drawing.svg": Reason.NOT_IMAGE,
    "bomb_40000x40000.png": Reason.BOMB,
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("as_bytes", [False, True], ids=["path", "bytes"])
def test_probe_values(image_files, name, as_bytes):
    path = image_files[name]
    info = probe_image(path.read_bytes() if as_bytes else str(path))
    width, height, fmt, mode, frames, orientation, display = EXPECTED[name]
    assert (info.width, info.height, info.format, info.mode) == (width, height, fmt, mode)
    assert (info.frames, info.exif_orientation, info.display_size) == (frames, orientation, display)
    assert info.file_bytes == path.stat().st_size


@pytest.mark.parametrize("name", sorted(REJECTED))
def test_probe_reasons(image_files, name):
    with pytest.raises(BadImage) as err:
        probe_image(str(image_files[name]))
    assert err.value.reason == REJECTED[name]
    assert err.value.message


def test_missing_path_and_directory(tmp_path):
    with pytest.raises(BadImage) as err:
        probe_image(str(tmp_path / "nope.jpg"))
    assert err.value.reason == Reason.MISSING_FILE
    with pytest.raises(BadImage) as err:
        probe_image(str(tmp_path))
    assert err.value.reason == Reason.READ_ERROR


def test_pixel_limit_is_configurable(image_files):
    path = str(image_files["rgb_640x480.png"])
    assert probe_image(path, max_pixels=640 * 480).width == 640
    with pytest.raises(BadImage) as err:
        probe_image(path, max_pixels=640 * 480 - 1)
    assert err.value.reason == Reason.BOMB
    assert "307,200" in err.value.message


def test_header_cut_inside_jpeg_markers_is_truncated(image_files):
    data = image_files["baseline_640x480.jpg"].read_bytes()[:300]
    with pytest.raises(BadImage) as err:
        probe_image(data)
    assert err.value.reason == Reason.TRUNCATED


@pytest.mark.parametrize(
    ("image", "reason"),
    [
        (None, Reason.NO_IMAGE),
        ({"path": None, "bytes": None}, Reason.NO_IMAGE),
        ({"path": "https://example.com/a.jpg", "bytes": None}, Reason.UNSUPPORTED_URI),
    ],
)
def test_image_input_reasons(image, reason):
    with pytest.raises(BadImage) as err:
        image_input(image)
    assert err.value.reason == reason


def test_image_input_prefers_bytes():
    assert image_input({"path": "/x.jpg", "bytes": b"abc"}) == b"abc"
    assert image_input({"path": "/x.jpg", "bytes": None}) == "/x.jpg"
