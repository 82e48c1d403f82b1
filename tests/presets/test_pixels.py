"""render_tiles without an oracle: tile counts and sizes against the layout, order, padding."""

import io
import time

import numpy as np
import pytest
from conftest import photo
from PIL import Image

from mmtok.presets import get_preset, list_presets
from mmtok.presets.pixels import NoPixels, Tile, encode_tile, has_pixels, pack_rgb, render_tiles

SIZES = [(1, 1), (1, 300), (300, 1), (640, 480), (1000, 212), (561, 560), (3000, 2000)]


def tiles_of(spec, image):
    preset = get_preset(spec)
    layout = preset.layout(*image.size)
    return layout, render_tiles(image, layout, preset.family, preset.params, preset.pixels)


def expected_sizes(preset, layout) -> list[tuple[int, int]]:
    """What each family's processor ships, written out from the design note, per family."""
    p, family = preset.params, preset.family
    square = {
        "fit_to_canvas": p.get("tile_size"),
        "anyres": p.get("tile_size"),
        "internvl": p.get("tile_size"),
        "idefics3": p.get("max_image_size"),
        "fixed": p.get("size"),
        "gemma3": p.get("size"),
    }.get(family)
    if square:
        return [(square, square)] * layout.num_tiles
    if family in ("smart_resize", "pixtral"):
        return [layout.resized]
    return [layout.canvas]  # letterbox, moonvit: the padded canvas


@pytest.mark.parametrize(
    "spec", [p.name for p in list_presets() if has_pixels(p.family)] + ["gemma3:pan_and_scan=true"]
)
def test_every_preset_ships_its_layouts_tiles(spec):
    preset = get_preset(spec)
    for w, h in SIZES:
        layout = preset.layout(w, h)
        if not hasattr(layout, "num_tiles"):  # refused sizes have no pixels
            continue
        _, tiles = tiles_of(spec, photo(w, h))
        assert [t.image.size for t in tiles] == expected_sizes(preset, layout), (spec, w, h)
        assert all(t.image.mode == "RGB" for t in tiles)


def test_fit_to_canvas_tiles_are_row_major_and_padded_with_zeros():
    image = Image.new("RGB", (1000, 400), (200, 100, 50))
    layout, tiles = tiles_of("mllama", image)
    assert layout.grid == (1, 2) and layout.resized == (1000, 400)
    left, right = (np.asarray(t.image) for t in tiles)
    assert [(t.row, t.col) for t in tiles] == [(0, 0), (0, 1)]
    assert (left[:400] == (200, 100, 50)).all() and (left[400:] == 0).all()
    assert (right[:400, : 1000 - 560] == (200, 100, 50)).all() and (right[:, 440:] == 0).all()


def test_llama4_appends_a_global_tile_only_when_tiled():
    _, tiles = tiles_of("llama4", photo(1000, 400))
    assert [t.kind for t in tiles][-1] == "global" and tiles[-1].image.size == (336, 336)
    _, tiles = tiles_of("llama4", photo(300, 300))
    assert [t.kind for t in tiles] == ["tile"]


def test_anyres_base_first_and_content_centred():
    image = Image.new("RGB", (1000, 400), (255, 255, 255))
    layout, tiles = tiles_of("llava-next", image)
    assert [t.kind for t in tiles] == ["base", "tile", "tile", "tile"]
    assert layout.canvas == (1008, 336) and layout.resized == (840, 336)
    row = np.concatenate([np.asarray(t.image) for t in tiles[1:]], axis=1)
    assert (row[:, :84] == 0).all() and (row[:, 84:924] == 255).all() and (row[:, 924:] == 0).all()


def test_internvl_thumbnail_last():
    _, tiles = tiles_of("internvl", photo(1000, 500))
    assert [t.kind for t in tiles] == ["tile"] * 2 + ["thumbnail"]


def test_kimi_pads_right_and_bottom_with_zeros():
    layout, (tile,) = tiles_of("kimi-vl", Image.new("RGB", (30, 50), (255, 255, 255)))
    assert layout.resized == (30, 50) and layout.canvas == (56, 56)
    pixels = np.asarray(tile.image)
    assert (pixels[:50, :30] == 255).all()
    assert (pixels[50:] == 0).all() and (pixels[:, 30:] == 0).all()


def test_janus_letterbox_pad_value_and_override():
    image = Image.new("RGB", (400, 100), (255, 0, 0))
    _, (tile,) = tiles_of("janus", image)
    pixels = np.asarray(tile.image)
    assert tile.image.size == (384, 384)
    assert (pixels[0, 0] == 127).all() and (pixels[192, 192] == (255, 0, 0)).all()
    _, (tile,) = tiles_of("janus:pad_value=0", image)
    assert (np.asarray(tile.image)[0, 0] == 0).all()


def test_gemma3_pan_and_scan_crops_follow_the_full_image():
    _, tiles = tiles_of("gemma3:pan_and_scan=true", photo(1800, 600))
    assert [(t.kind, t.row, t.col) for t in tiles] == [
        ("image", 0, 0),
        ("crop", 0, 0),
        ("crop", 0, 1),
        ("crop", 0, 2),
    ]


def test_extreme_strip_is_cropped_without_building_the_full_resize():
    # shortest edge 512 would make this 2,560,000 x 512 before the crop
    start = time.perf_counter()
    _, (tile,) = tiles_of("chameleon", photo(5000, 1))
    assert tile.image.size == (512, 512) and time.perf_counter() - start < 5


def test_api_presets_have_no_pixels_and_size_mismatch_is_a_bug():
    preset = get_preset("gpt-4o")
    with pytest.raises(NoPixels):
        render_tiles(photo(10, 10), preset.layout(10, 10), preset.family, preset.params, {})
    mllama = get_preset("mllama")
    with pytest.raises(ValueError, match="layout is for"):
        render_tiles(photo(10, 10), mllama.layout(20, 10), "fit_to_canvas", mllama.params, {})


def test_encode_tile_raw_and_png_hold_the_same_pixels():
    image = photo(37, 23)
    raw = encode_tile(image, "raw")
    assert np.array_equal(np.frombuffer(raw, np.uint8).reshape(23, 37, 3), np.asarray(image))
    png = Image.open(io.BytesIO(encode_tile(image, "png")))
    assert np.array_equal(np.asarray(png), np.asarray(image))


@pytest.mark.parametrize(
    "box", [None, (0, 0, 700, 300), (0, 0, 1, 1), (699, 0, 700, 300), (3, 5, 451, 7), (9, 0, 9, 0)]
)
def test_pack_rgb_writes_the_bytes_of_the_cropped_tile(box):
    """Raw tiles are packed from their box of the canvas straight into the column's buffer
    (an image wider than tobytes' 64 KiB chunk, so a tile spans several chunks)."""
    image = photo(700, 300)
    tile = Tile("tile", 0, 0, image, box)
    expected = encode_tile(image if box is None else image.crop(box), "raw")
    assert tile.size == (tile.image.width, tile.image.height)
    out = np.full(len(expected) + 2, 7, np.uint8)
    pack_rgb(tile, out[1:-1])
    assert out[1:-1].tobytes() == expected and out[0] == out[-1] == 7
    with pytest.raises(ValueError, match="bytes for a"):
        pack_rgb(tile, out)


def test_png_tiles_are_smaller_than_pillows_default_png():
    """The run-length zlib strategy (faster) also compresses photo-like tiles better."""
    image = photo(448, 448)
    default = io.BytesIO()
    image.save(default, format="PNG", compress_level=1)
    png = encode_tile(image, "png")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), np.asarray(image))
    assert len(png) < 0.97 * len(default.getvalue())


def test_pixel_overrides_are_checked():
    from mmtok.errors import MmtokError

    assert get_preset("qwen2-vl:resample=bilinear").pixel_settings() == {"resample": "bilinear"}
    with pytest.raises(MmtokError, match="resample"):
        get_preset("qwen2-vl:resample=fancy")
    with pytest.raises(MmtokError, match="pad_value"):
        get_preset("janus:pad_value=300")
