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
    area_per_token = factor * factor
    # Qwen duplicates a still image to temporal_patch_size frames inside every patch: values
    # per merged token = merge^2 patches of 3 * temporal * patch^2.
    values_per_token = merge_size * merge_size * 3 * temporal_patch_size * patch_size * patch_size
    sqrt, floor, ceil = math.sqrt, math.floor, math.ceil
    # Qwen: <|vision_start|> pads <|vision_end|>. Emu3: one end-of-line placeholder per row.
    row_extra = 1 if row_end_tokens else 0
    max_ratio, new, record = MAX_RATIO, new_tuple, Layout  # closure cells: the fastest lookups

    def layout(width: int, height: int) -> Layout | Refused:
        # transformers' smart_resize(height, width, factor, min_pixels, max_pixels), inlined and
        # counted in merged tokens (h_bar = rows * factor), which keeps every product exact
        # (long / short > 200 in floats is long > 200 * short in integers: the two can only
        # disagree within a float rounding of 200, for sides beyond 10^13 px)
        if width > height:
            if height < 1 or width > max_ratio * height:
                return refuse_empty(width, height) if height < 1 else refuse_ratio(width, height)
        elif width < 1 or height > max_ratio * width:
            return refuse_empty(width, height) if width < 1 else refuse_ratio(width, height)
        rows = round(height / factor)  # Python's round: halves go to the even number
        cols = round(width / factor)
        area = rows * cols * area_per_token  # h_bar * w_bar
        if area > max_pixels:
            beta = sqrt((height * width) / max_pixels)
            rows = max(1, floor(height / beta / factor))
            cols = max(1, floor(width / beta / factor))
        elif area < min_pixels:
            beta = sqrt(min_pixels / (height * width))
            rows = ceil(height * beta / factor)
            cols = ceil(width * beta / factor)
        tokens = rows * cols
        values = tokens * values_per_token
        return new(
            record,
            (width, height, (cols * factor, rows * factor), None, (rows, cols), 1, tokens,
             tokens + rows * row_extra + prompt_extra, values, 4 * values),
        )  # fmt: skip

    return layout
