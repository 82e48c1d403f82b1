"""Fixed-size encoders: every image becomes the same number of tokens.

- LLaVA-1.5 (transformers `llava/`): shortest edge 336, centre crop 336x336; 576 tokens.
- Chameleon (`chameleon/`): shortest edge 512, centre crop; 1024 VQ ids + 2 markers.
- Janus (`janus/image_processing_pil_janus.py`): longest side to 384, short side at least
  `min_size`, padded to 384x384; 576 tokens between <begin_of_image> and <end_of_image>.
- Gemma 3 (`gemma3/image_processing_pil_gemma3.py`, `processing_gemma3.py`): squash to 896x896,
  256 tokens; with pan & scan also 2-4 crops along the long axis, 256 tokens each.
"""

from __future__ import annotations

import math

from mmtok.presets.layout import Layout, Rule, new_tuple, refuse_empty


def fixed_square(size: int, tokens: int, prompt_extra: int) -> Rule:
    values = 3 * size * size

    def layout(width: int, height: int) -> Layout:
        if width < 1 or height < 1:
            return refuse_empty(width, height)
        return new_tuple(
            Layout,
            (width, height, (size, size), None, (1, 1), 1, tokens, tokens + prompt_extra, values,
             4 * values),
        )  # fmt: skip

    return layout


def letterbox(size: int, min_size: int, tokens: int, prompt_extra: int) -> Rule:
    values = 3 * size * size

    def layout(width: int, height: int) -> Layout:
        if width < 1 or height < 1:
            return refuse_empty(width, height)
        scale = size / (width if width > height else height)
        content = (max(round(width * scale), min_size), max(round(height * scale), min_size))
        return new_tuple(
            Layout,
            (width, height, content, (size, size), (1, 1), 1, tokens, tokens + prompt_extra,
             values, 4 * values),
        )  # fmt: skip

    return layout


def pan_and_scan_crops(
    width: int, height: int, min_crop_size: int, max_num_crops: int, min_ratio: float
) -> tuple[int, int]:
    """(rows, cols) of Gemma 3's pan & scan crops, or (0, 0) when it does not apply."""
    long, short = max(width, height), min(width, height)
    if long / short < min_ratio:
        return 0, 0
    n = min(math.floor(long / short + 0.5), math.floor(long / min_crop_size))
    n = min(max_num_crops, max(2, n))
    crop_long, crop_short = math.ceil(long / n), short
    if min(crop_long, crop_short) < min_crop_size:
        return 0, 0
    return (1, n) if width >= height else (n, 1)


def gemma3(
    size: int,
    tokens_per_image: int,
    pan_and_scan: bool,
    min_crop_size: int,
    max_num_crops: int,
    min_ratio_to_activate: float,
) -> Rule:
    image_values = 3 * size * size

    def layout(width: int, height: int) -> Layout:
        if width < 1 or height < 1:
            return refuse_empty(width, height)
        rows, cols = (0, 0)
        if pan_and_scan:
            rows, cols = pan_and_scan_crops(
                width, height, min_crop_size, max_num_crops, min_ratio_to_activate
            )
        images = 1 + rows * cols
        tokens = images * tokens_per_image
        # per image: "\n\n" <start_of_image> tokens <end_of_image> "\n\n" (each "\n\n" one token)
        prompt = images * (tokens_per_image + 4)
        values = images * image_values
        return new_tuple(
            Layout,
            (width, height, (size, size), None, (max(rows, 1), max(cols, 1)), images, tokens,
             prompt, values, 4 * values),
        )  # fmt: skip

    return layout
