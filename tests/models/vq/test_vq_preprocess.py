"""The VQ preprocessing against independent re-implementations of each reference rule.

References (rules re-implemented here from their description, not copied):
- Chameleon: facebookresearch/chameleon@dbbe47f `chameleon/inference/image_tokenizer.py`
  `_whiten_transparency` (RGB as is; else RGBA, and if some alpha < 255 a float64 blend on white
  truncated to uint8, else convert("RGB")) and `_vqgan_input_from` (short side to the target
  with LANCZOS, sizes by round(), crop at (W - s) // 2, (H - s) // 2, then x / 255 * 2 - 1).
- LlamaGen: FoundationVision/LlamaGen@ce98ec4 `dataset/augmentation.py` `center_crop_arr`
  (after `Image.open(...).convert("RGB")` in `tokenizer/tokenizer_image/vq_demo.py`).
- 16-bit grey: mmtok's policy (`mmtok/images/decode.py`): the high byte, then the rule above.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mmtok.images.decode import AlphaPolicy, eight_bit
from mmtok.models.vq import preprocess, to_model_input
from mmtok.models.vq.preprocess import chameleon_resize_crop
from mmtok.models.vq.tiny import tiny_config
from tests.models.vq.vq_images import write_images


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("vq-images"))


def high_byte(im: Image.Image) -> Image.Image:
    """A 16-bit grey image as mmtok sees it: v >> 8, with its tRNS grey value as alpha."""
    values = np.asarray(im).astype(np.int64)
    grey = Image.fromarray((values >> 8).astype(np.uint8), "L")
    key = im.info.get("transparency")
    if key is None:
        return grey
    return Image.merge(
        "LA", (grey, Image.fromarray(np.where(values == key, 0, 255).astype(np.uint8)))
    )


def chameleon_expected(im: Image.Image, size: int) -> np.ndarray:
    if im.mode.startswith("I;16"):
        im = high_byte(im)
    if im.mode != "RGB":
        rgba = np.array(im.convert("RGBA")).astype(np.float64)
        if rgba[:, :, 3].min() < 255:
            a = rgba[:, :, 3:] / 255.0
            im = Image.fromarray((a * rgba[:, :, :3] + (1 - a) * 255).astype(np.uint8), "RGB")
        else:
            im = im.convert("RGB")
    w, h = im.size
    scale = size / min(w, h)
    im = im.resize((round(w * scale), round(h * scale)), Image.Resampling.LANCZOS)
    left, top = (im.width - size) // 2, (im.height - size) // 2
    return np.array(im)[top : top + size, left : left + size]


def llamagen_expected(im: Image.Image, size: int) -> np.ndarray:
    im = high_byte(im).convert("RGB") if im.mode.startswith("I;16") else im.convert("RGB")
    while min(im.size) >= 2 * size:
        im = im.resize((im.width // 2, im.height // 2), resample=Image.Resampling.BOX)
    scale = size / min(im.size)
    im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.BICUBIC)
    a = np.array(im)
    top, left = (a.shape[0] - size) // 2, (a.shape[1] - size) // 2
    return a[top : top + size, left : left + size]


CASES = [
    "rgb_97x131.jpg",
    "rgb_300x200.png",
    "rgba_131x77.png",
    "p_trns_90x120.png",
    "p_90x120.gif",
    "p_alpha_palette_77x50.png",
    "l_150x64.jpg",
    "la_70x70.png",
    "i16_80x45.png",
    "i16_trns_80x45.png",
    "rgb_trns_60x90.png",
    "rgb_513x37.png",
    "cmyk_64x100.jpg",
]


@pytest.mark.parametrize("size", [64, 48])
@pytest.mark.parametrize("name", CASES)
def test_chameleon_rule_is_the_reference(files, name, size):
    config = tiny_config(resolution=size)
    out = preprocess(Image.open(files[name]), config)
    assert out.dtype == np.uint8 and out.shape == (size, size, 3)
    np.testing.assert_array_equal(out, chameleon_expected(Image.open(files[name]), size))


@pytest.mark.parametrize("size", [64, 40])
@pytest.mark.parametrize("name", CASES)
def test_llamagen_rule_is_the_reference(files, name, size):
    config = tiny_config("llamagen", resolution=size, ch_mult=(1, 1))
    out = preprocess(Image.open(files[name]), config)
    assert out.dtype == np.uint8 and out.shape == (size, size, 3)
    np.testing.assert_array_equal(out, llamagen_expected(Image.open(files[name]), size))


def test_llamagen_halves_with_box_first(files):
    """300x200 at 64: min side 200 >= 128, so one BOX halving before BICUBIC; skipping it
    changes pixels (the test above would catch a missing halving)."""
    im = Image.open(files["rgb_300x200.png"]).convert("RGB")
    direct = im.resize((96, 64), Image.Resampling.BICUBIC)
    out = preprocess(im, tiny_config("llamagen", ch_mult=(1, 1)))
    assert not np.array_equal(out, np.array(direct)[:, 16:80])


def test_chameleon_alpha_is_a_truncated_float_blend_not_alpha_composite(files):
    """transformers' processor composites with Image.alpha_composite (mmtok's WHITE policy);
    Chameleon blends in float and truncates: the two differ on a ramp of alpha values."""
    im = Image.open(files["rgba_131x77.png"])
    config = tiny_config()
    composite = chameleon_resize_crop(eight_bit(im, AlphaPolicy.WHITE, "RGB"), 64)
    assert not np.array_equal(preprocess(im, config), composite)


def test_sixteen_bit_is_its_high_byte_not_pillows_clip(files):
    im = Image.open(files["i16_80x45.png"])
    out = preprocess(im, tiny_config())
    clipped = chameleon_resize_crop(im.convert("RGB"), 64)  # Pillow: everything > 255 is white
    assert not np.array_equal(out, clipped)
    assert out.std() > 10  # a picture, not a white sheet


def test_rgb_with_a_transparent_colour_is_used_as_is(files):
    """The reference returns an RGB image unchanged, tRNS colour or not."""
    im = Image.open(files["rgb_trns_60x90.png"])
    assert "transparency" in im.info
    out = preprocess(im, tiny_config())
    np.testing.assert_array_equal(out, chameleon_resize_crop(im.convert("RGB"), 64))


def test_model_input_is_the_references_float64_scaling():
    pixels = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    pixels[0, 0, :8, 0] = np.arange(248, 256)
    expected = torch.from_numpy(pixels / 255.0 * 2 - 1).permute(0, 3, 1, 2).float()
    hwc = to_model_input(torch.from_numpy(pixels))
    chw = to_model_input(torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous())
    assert hwc.dtype == torch.float32 and hwc.is_contiguous()
    assert torch.equal(hwc, expected) and torch.equal(chw, expected)
    assert to_model_input(torch.from_numpy(pixels), channels_last=True).is_contiguous(
        memory_format=torch.channels_last
    )
    every = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(1, 3, 16, 16)
    float32_math = every.float() / 255 * 2 - 1  # what a naive device normalisation gives
    assert not torch.equal(float32_math, to_model_input(every.contiguous()))
