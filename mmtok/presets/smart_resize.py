"""Dynamic resolution by `smart_resize`: Qwen2-VL, Qwen2.5-VL, Qwen3-VL, and Emu3's VQ tokenizer.

Source: transformers v5.23 `qwen2_vl/image_processing_pil_qwen2_vl.py` (`smart_resize`,
`_preprocess`), `qwen2_vl/processing_qwen2_vl.py` (one <|image_pad|> per merged patch between
<|vision_start|> and <|vision_end|>), `emu3/image_processing_emu3.py` (same function, factor 8).
We follow HF, not qwen-vl-utils: they differ only for strips like 200x1 (HF keeps a 28-px floor).
"""

from __future__ import annotations

import math

from mmtok.presets.layout import Layout, Refused, Rule, new_tuple, refuse_empty

MAX_RATIO = 200


def refuse_ratio(width: int, height: int) -> Refused:
    ratio = max(height, width) / min(height, width)
    return Refused(
        width, height, f"absolute aspect ratio must be smaller than {MAX_RATIO}, got {ratio}"
    )


def dynamic_resolution(
    patch_size: int,
    merge_size: int,
    min_pixels: int,
    max_pixels: int,
    temporal_patch_size: int,
    prompt_extra: int,
    row_end_tokens: bool,
) -> Rule:
    factor = patch_size * merge_size
    # Qwen duplicates a still image to temporal_patch_size frames inside every patch.
    values_per_patch = 3 * temporal_patch_size * patch_size * patch_size
    sqrt, floor, ceil = math.sqrt, math.floor, math.ceil
    # Qwen: <|vision_start|> pads <|vision_end|>. Emu3: one end-of-line placeholder per row.
    row_extra = 1 if row_end_tokens else 0
    max_ratio = MAX_RATIO

    def layout(width: int, height: int) -> Layout | Refused:
        if width < 1 or height < 1:
            return refuse_empty(width, height)
        # transformers' smart_resize(height, width, factor, min_pixels, max_pixels), inlined
        if (width / height if width > height else height / width) > max_ratio:
            return refuse_ratio(width, height)
        h = round(height / factor) * factor  # Python's round: halves go to the even number
        w = round(width / factor) * factor
        if h * w > max_pixels:
            beta = sqrt((height * width) / max_pixels)
            h = max(factor, floor(height / beta / factor) * factor)
            w = max(factor, floor(width / beta / factor) * factor)
        elif h * w < min_pixels:
            beta = sqrt(min_pixels / (height * width))
            h = ceil(height * beta / factor) * factor
            w = ceil(width * beta / factor) * factor
        rows = h // factor
        cols = w // factor
        tokens = rows * cols
        values = (h // patch_size) * (w // patch_size) * values_per_patch
        return new_tuple(
            Layout,
            (width, height, (w, h), None, (rows, cols), 1, tokens,
             tokens + rows * row_extra + prompt_extra, values, 4 * values),
        )  # fmt: skip

    return layout
