"""The image a CLIP-family model sees, as uint8, made on a CPU worker with Pillow.

The rules are open_clip's eval transform (`open_clip/transform.py` `image_transform`, 3.3.0) with
torchvision's PIL resize and crop (`torchvision/transforms/functional.py`
`_compute_resized_output_size`, `center_crop`), minus `ToTensor` + `Normalize`, which run on the
device. Unlike open_clip, the image is converted to RGB *before* the resize (mmtok's safe decode),
so palette images are resized with the model's filter, not nearest; RGB and grayscale images give
identical pixels either way.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from mmtok.errors import MmtokError

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
RESIZE_MODES = ("shortest", "longest", "squash")
INTERPOLATIONS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


@dataclass(frozen=True)
class Preprocess:
    """open_clip's `PreprocessCfg` (eval): output size (height, width), mean/std per channel,
    resize filter, and how the aspect ratio is handled (`shortest` + centre crop, `longest` + pad
    with `fill_color`, or `squash`)."""

    size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    fill_color: int = 0

    def __post_init__(self):
        if self.resize_mode not in RESIZE_MODES:
            raise MmtokError(f"resize_mode must be one of {', '.join(RESIZE_MODES)}")
        # open_clip maps anything but "bilinear" (e.g. "random") to bicubic at eval time.
        if self.interpolation not in INTERPOLATIONS:
            raise MmtokError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}")

    @property
    def pixel_bytes(self) -> int:
        return self.size[0] * self.size[1] * 3

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_open_clip(cls, cfg: dict[str, Any]) -> Preprocess:
        """From an open_clip preprocess dict (`size` int or pair; `mean`/`std` scalar or triple)."""
        size = cfg.get("size", 224)
        size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        mean, std = cfg.get("mean") or OPENAI_MEAN, cfg.get("std") or OPENAI_STD
        interpolation = cfg.get("interpolation") or "bicubic"
        return cls(
            size=size,
            mean=_triple(mean),
            std=_triple(std),
            interpolation="bilinear" if interpolation == "bilinear" else "bicubic",
            resize_mode=cfg.get("resize_mode") or "shortest",
            fill_color=int(cfg.get("fill_color") or 0),
        )


def _triple(value) -> tuple[float, float, float]:
    values = [float(v) for v in value] if isinstance(value, list | tuple) else [float(value)] * 3
    return (values[0], values[1], values[2])


def _shortest_edge_size(width: int, height: int, target: int) -> tuple[int, int]:
    """torchvision `Resize(int)`: the short side becomes `target`, the long side is truncated."""
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(target * long / short)
    return (target, new_long) if width <= height else (new_long, target)


def _keep_ratio_size(width: int, height: int, size: tuple[int, int], longest: float):
    """open_clip `ResizeKeepRatio.get_params` without the random parts: (width, height)."""
    ratio_h, ratio_w = height / size[0], width / size[1]
    ratio = max(ratio_h, ratio_w) * longest + min(ratio_h, ratio_w) * (1.0 - longest)
    return round(width / ratio), round(height / ratio)


def _resize(im: Image.Image, width: int, height: int, resample) -> Image.Image:
    # torchvision returns the image unchanged when it already has the size.
    return im if im.size == (width, height) else im.resize((width, height), resample)


def _center_crop_or_pad(im: Image.Image, size: tuple[int, int], fill: int) -> Image.Image:
    """open_clip `center_crop_or_pad` / torchvision `center_crop` on a PIL image."""
    crop_h, crop_w = size
    width, height = im.size
    if crop_w > width or crop_h > height:
        left = (crop_w - width) // 2 if crop_w > width else 0
        top = (crop_h - height) // 2 if crop_h > height else 0
        canvas = Image.new(im.mode, (max(width, crop_w), max(height, crop_h)), (fill,) * 3)
        canvas.paste(im, (left, top))
        im, (width, height) = canvas, canvas.size
        if (width, height) == (crop_w, crop_h):
            return im
    top = int(round((height - crop_h) / 2.0))
    left = int(round((width - crop_w) / 2.0))
    return im.crop((left, top, left + crop_w, top + crop_h))


def model_input(im: Image.Image, p: Preprocess) -> np.ndarray:
    """The (height, width, 3) uint8 pixels the model sees for an RGB image, before normalising."""
    resample = INTERPOLATIONS[p.interpolation]
    width, height = im.size
    if p.resize_mode == "squash":
        im = _resize(im, p.size[1], p.size[0], resample)
    elif p.resize_mode == "longest":
        im = _resize(im, *_keep_ratio_size(width, height, p.size, 1.0), resample)
        im = _center_crop_or_pad(im, p.size, p.fill_color)
    else:
        if p.size[0] == p.size[1]:
            im = _resize(im, *_shortest_edge_size(width, height, p.size[0]), resample)
        else:  # ResizeKeepRatio(size) keeps its default bicubic filter (open_clip 3.3.0)
            new = _keep_ratio_size(width, height, p.size, 0.0)
            im = _resize(im, *new, Image.Resampling.BICUBIC)
        im = _center_crop_or_pad(im, p.size, 0)
    return np.asarray(im.convert("RGB"), dtype=np.uint8)
