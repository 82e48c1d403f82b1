"""The pixels a VQ tokenizer sees, as uint8 on a CPU worker, exactly as each family's reference.

`preprocess(image, config)` takes the image as opened (any Pillow mode, not yet converted, no
EXIF rotation: none of the references applies one) and returns (resolution, resolution, 3)
uint8. `to_model_input` then maps uint8 to float32 in [-1, 1] on the device, through a
256-entry table computed in float64 as the references do (`np.array(img) / 255.0 * 2 - 1`,
then `.float()`): the same arithmetic in float32 on the device differs in the last bit for 128
of the 256 values.

Rules:
- `chameleon` (Chameleon, Anole, Lumina-mGPT; also used for the taming configs, whose own
  pipeline is albumentations + OpenCV): `facebookresearch/chameleon:chameleon/inference/
  image_tokenizer.py` (`_whiten_transparency`, `_vqgan_input_from`), re-implemented from its
  description: an RGB image is used as is; anything else with some alpha < 255 (after Pillow's
  `convert("RGBA")`, which applies a palette's or a grey image's tRNS) is blended on white in
  float64, (1 - a) * 255 + a * rgb with a = alpha / 255, and truncated to uint8; otherwise it is
  converted to RGB. Then the short side goes to `resolution` with LANCZOS, the sizes rounded
  with Python's `round` (half to even), and the centre is cropped at ((W - r) // 2, (H - r) // 2).
- `llamagen` (LlamaGen, Janus generation): `Image.convert("RGB")` (alpha dropped), then ADM's
  `center_crop_arr` (`FoundationVision/LlamaGen:dataset/augmentation.py`): halve with BOX while
  the short side is at least twice `resolution`, BICUBIC to short side = `resolution` (sizes
  rounded with `round`), centre crop at `//2` offsets.

Pixel modes go through mmtok's one conversion (`mmtok.images.decode.eight_bit`, alpha dropped);
for 8-bit modes that is Pillow's own conversion, as the references. 16-bit grey differs on
purpose: it becomes its high byte (Pillow's `convert` would clip every value above 255 to white).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from mmtok.images.decode import SIXTEEN_BIT_MODES, AlphaPolicy, eight_bit
from mmtok.models.vq.config import VQConfig

if TYPE_CHECKING:
    import torch

_ALPHA_MODES = frozenset({"RGBA", "LA", "PA"})


def _alpha(im: Image.Image) -> np.ndarray | None:
    """The image's alpha as uint8 (H, W), or None when it has none."""
    transparency = im.info.get("transparency")
    if im.mode in SIXTEEN_BIT_MODES:  # tRNS grey value of a 16-bit PNG (as decode.eight_bit)
        if not isinstance(transparency, int):
            return None
        return np.where(np.asarray(im) == transparency, 0, 255).astype(np.uint8)
    if im.mode not in _ALPHA_MODES and transparency is None:
        return None
    return np.asarray(im.convert("RGBA"))[:, :, 3]


def chameleon_rgb(im: Image.Image) -> Image.Image:
    """Chameleon's transparency rule (`_whiten_transparency`), on mmtok's pixel-mode policy."""
    if im.mode == "RGB":  # as is, even with a tRNS colour (the reference returns it unchanged)
        return im
    rgb = eight_bit(im, AlphaPolicy.DROP, "RGB")
    alpha = _alpha(im)
    if alpha is None or not (alpha < 255).any():
        return rgb
    a = alpha[:, :, np.newaxis] / 255.0
    blended = (1 - a) * 255 + a * np.asarray(rgb)
    return Image.fromarray(blended.astype(np.uint8), "RGB")


def chameleon_resize_crop(im: Image.Image, size: int) -> np.ndarray:
    """Short side to `size` with LANCZOS (sizes by `round`), centre crop at `//2` offsets."""
    scale = size / min(im.size)
    im = im.resize((round(scale * im.size[0]), round(scale * im.size[1])), Image.Resampling.LANCZOS)
    x0, y0 = (im.width - size) // 2, (im.height - size) // 2
    return np.asarray(im.crop((x0, y0, x0 + size, y0 + size)), dtype=np.uint8)


def llamagen_center_crop(im: Image.Image, size: int) -> np.ndarray:
    """ADM `center_crop_arr`: BOX halvings, BICUBIC to short side `size`, centre crop."""
    while min(im.size) >= 2 * size:
        im = im.resize(tuple(x // 2 for x in im.size), resample=Image.Resampling.BOX)
    scale = size / min(im.size)
    im = im.resize(tuple(round(x * scale) for x in im.size), resample=Image.Resampling.BICUBIC)
    arr = np.asarray(im, dtype=np.uint8)
    y0, x0 = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    return arr[y0 : y0 + size, x0 : x0 + size]


def preprocess(image: Image.Image, config: VQConfig) -> np.ndarray:
    """The (resolution, resolution, 3) uint8 pixels the tokenizer sees, by the config's rule."""
    if config.preprocess == "llamagen":
        rgb = eight_bit(image, AlphaPolicy.DROP, "RGB")
        out = llamagen_center_crop(rgb, config.resolution)
    else:
        out = chameleon_resize_crop(chameleon_rgb(image), config.resolution)
    return np.ascontiguousarray(out)


def unit_range_table() -> np.ndarray:
    """uint8 value -> float32 in [-1, 1], computed in float64 as the references
    (Chameleon `np.array(img) / 255.0 * 2 - 1`; taming `x / 127.5 - 1`; LlamaGen
    `2.0 * (x / 255.) - 1.0`: the three give the same float32 table)."""
    return (np.arange(256) / 255.0 * 2 - 1).astype(np.float32)


_TABLES: dict[str, torch.Tensor] = {}


def to_model_input(batch: torch.Tensor, *, channels_last: bool = False) -> torch.Tensor:
    """uint8 (B, H, W, 3) or (B, 3, H, W) -> float32 (B, 3, H, W) in [-1, 1], on the batch's
    device; contiguous NCHW (the reference layout) unless `channels_last`."""
    import torch

    if batch.dtype != torch.uint8 or batch.ndim != 4:
        raise ValueError(f"expected a uint8 (B, H, W, 3) or (B, 3, H, W) batch, got {batch.dtype}")
    key = str(batch.device)
    table = _TABLES.get(key)
    if table is None:
        table = _TABLES[key] = torch.from_numpy(unit_range_table()).to(batch.device)
    x = table[batch.int()]  # int32 indices: half the memory of int64
    if batch.shape[-1] == 3 and batch.shape[1] != 3:
        x = x.permute(0, 3, 1, 2)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return x.contiguous(memory_format=fmt)
