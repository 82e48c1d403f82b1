"""One pixel-mode policy on every path: each stored mode of a real photo through the decode,
tile and hash paths, against an oracle computed apart from mmtok: transformers' own
`convert_to_rgb` where mmtok follows it, the high byte of each sample for 16-bit modes (where
transformers clips), and imagehash.phash of that oracle for the hash."""

import io
from pathlib import Path

import imagehash
import numpy as np
import pytest
from PIL import Image

from mmtok.images import BadImage, decode_rgb
from mmtok.images.decode import AlphaPolicy, eight_bit
from mmtok.images.phash import phash_image
from mmtok.presets import get_preset
from mmtok.presets.pixels import render_tiles
from mmtok.reasons import Reason
from mmtok.stages.signature import SignatureStage
from mmtok.stages.tiles import TileStage

image_transforms = pytest.importorskip("transformers.image_transforms")

PHOTO = Path(__file__).resolve().parents[2] / "examples" / "images" / "astronaut.jpg"
W, H = 96, 72


def photo() -> Image.Image:
    return Image.open(PHOTO).convert("RGB").resize((W, H), Image.Resampling.BICUBIC)


def save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def sixteen_bit_values() -> np.ndarray:
    """The photo's grey values widened to 16 bits (v * 257) plus noise in the low byte."""
    grey = np.asarray(photo().convert("L")).astype(np.int64)
    low = np.random.default_rng(0).integers(0, 256, grey.shape)
    return np.minimum(grey * 257 + low - (grey == 255) * low, 65535)


def transparent_area() -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[:, : W // 3] = True
    return mask


def stored_files() -> dict[str, bytes]:
    rgb = photo()
    grey = rgb.convert("L")
    wide = sixteen_bit_values()
    palette = rgb.quantize(64)
    indices = np.asarray(palette).copy()
    indices[transparent_area()] = 0
    palette_alpha = Image.fromarray(indices, "P")
    palette_alpha.putpalette(palette.getpalette())
    alpha = np.where(transparent_area(), 0, np.linspace(40, 255, W, dtype=np.uint8)[None, :])
    return {
        "RGB": save(rgb, "PNG"),
        "L": save(grey, "PNG"),
        "1": save(Image.fromarray(np.asarray(grey) > 110), "PNG"),
        "P": save(palette, "PNG"),
        "P+tRNS": save(palette_alpha, "PNG", transparency=0),
        "LA": save(Image.merge("LA", (grey, Image.fromarray(alpha.astype(np.uint8)))), "PNG"),
        "RGBA": save(
            Image.merge("RGBA", (*rgb.split(), Image.fromarray(alpha.astype(np.uint8)))), "PNG"
        ),
        "CMYK": save(rgb.convert("CMYK"), "TIFF"),
        "F": save(Image.fromarray(np.asarray(grey).astype(np.float32) + 0.25), "TIFF"),
        "I;16": save(Image.fromarray(wide.astype(np.uint16)), "PNG"),
        "I;16B": save(Image.fromarray(wide.astype(">u2")), "TIFF"),
        "I": save(Image.fromarray(wide.astype(np.int32)), "TIFF"),
        "I;16+tRNS": save(
            Image.fromarray(wide.astype(np.uint16)), "PNG", transparency=int(wide[0, 0])
        ),
    }


FILES = stored_files()
SIXTEEN = {"I;16", "I;16B", "I", "I;16+tRNS"}


def oracle(name: str) -> np.ndarray:
    """The 8-bit RGB the policy must give, alpha over white."""
    im = Image.open(io.BytesIO(FILES[name]))
    assert im.mode == name.split("+")[0]  # the file really stores that mode
    if name not in SIXTEEN:
        return image_transforms.convert_to_rgb(im, return_numpy=True)
    grey = (sixteen_bit_values() >> 8).astype(np.float64)
    if name == "I;16+tRNS":  # the transparent grey value shows white
        grey[sixteen_bit_values() == sixteen_bit_values()[0, 0]] = 255
    return np.repeat(grey.astype(np.uint8)[..., None], 3, axis=2)


@pytest.mark.parametrize("name", list(FILES))
def test_decode_path(name):
    assert np.array_equal(decode_rgb(FILES[name], alpha="white"), oracle(name))


@pytest.mark.parametrize("name", list(FILES))
def test_tiles_path(name):
    preset = get_preset("qwen2-vl")
    layout = preset.layout(W, H)
    stage = TileStage(preset, tile_format="raw")
    stage.setup()
    out = stage.process_row({"image": {"bytes": FILES[name]}, "num_tiles": layout.num_tiles})
    expected = render_tiles(
        Image.fromarray(oracle(name)), layout, preset.family, preset.params, preset.pixels
    )
    (field,) = stage.output_fields()
    (tiles,) = stage.build_column(field, [out["tiles"]]).to_pylist()  # the bytes as written
    got = [np.frombuffer(t["data"], np.uint8).reshape(t["height"], t["width"], 3) for t in tiles]
    assert len(got) == len(expected)
    assert all(np.array_equal(np.asarray(e.image), g) for e, g in zip(expected, got, strict=True))


@pytest.mark.parametrize("name", list(FILES))
def test_hash_path(name):
    stage = SignatureStage(images=True, captions=None)
    stage.setup()
    out = stage.process_row({"image": {"bytes": FILES[name]}, "caption": None})
    assert out["sig_reason"] is None
    assert out["phash"] == int(str(imagehash.phash(Image.fromarray(oracle(name)))), 16)
    assert out["pixels"] == W * H


@pytest.mark.parametrize("name", sorted(SIXTEEN - {"I;16+tRNS"}))
def test_a_16_bit_copy_hashes_like_the_photo_where_imagehash_clips_it_white(name):
    stage = SignatureStage(images=True, captions=None)
    stage.setup()
    ours = stage.process_row({"image": {"bytes": FILES[name]}, "caption": None})["phash"]
    original = int(str(imagehash.phash(photo())), 16)
    assert ours == original
    clipped = int(str(imagehash.phash(Image.open(io.BytesIO(FILES[name])))), 16)
    assert bin(clipped ^ original).count("1") > 8  # beyond --max-distance: convert("L") clips
    # and transformers hands a model the clipped image, which mmtok does not follow
    reference = image_transforms.convert_to_rgb(Image.open(io.BytesIO(FILES[name])), True)
    assert (reference == 255).mean() > 0.8 and (oracle(name) == 255).mean() < 0.1


@pytest.mark.parametrize("name", ["RGB", "L", "1", "P", "CMYK"])
def test_hash_is_imagehash_bit_for_bit_on_opaque_eight_bit_modes(name):
    im = Image.open(io.BytesIO(FILES[name]))
    im.load()
    assert phash_image(im)[0] == int(str(imagehash.phash(im)), 16)


def test_modes_only_in_memory():
    rgb = photo()
    pa_image = rgb.quantize(64).convert("PA")  # no file format stores PA
    expected = image_transforms.convert_to_rgb(pa_image, return_numpy=True)
    assert np.array_equal(np.asarray(eight_bit(pa_image, AlphaPolicy.WHITE)), expected)
    assert np.array_equal(
        np.asarray(eight_bit(pa_image, AlphaPolicy.WHITE, "L")),
        np.asarray(Image.fromarray(expected).convert("L")),
    )
    with pytest.raises(BadImage) as err:
        eight_bit(Image.new("La", (4, 4)), AlphaPolicy.WHITE)
    assert err.value.reason == Reason.UNSUPPORTED_MODE


def test_drop_keeps_the_colour_under_transparent_pixels():
    rgba = Image.open(io.BytesIO(FILES["RGBA"]))
    dropped = decode_rgb(FILES["RGBA"], alpha="drop")
    assert np.array_equal(dropped, np.asarray(rgba.convert("RGB")))
    assert (decode_rgb(FILES["RGBA"], alpha="white")[:, : W // 3] == 255).all()
