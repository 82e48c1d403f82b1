"""Dynamic resolution by `smart_resize`: Qwen2-VL, Qwen2.5-VL, Qwen3-VL, and Emu3's VQ tokenizer.

Source: transformers v5.23 `qwen2_vl/image_processing_pil_qwen2_vl.py` (`smart_resize`,
`_preprocess`), `qwen2_vl/processing_qwen2_vl.py` (one <|image_pad|> per merged patch between
<|vision_start|> and <|vision_end|>), `emu3/image_processing_emu3.py` (same function, factor 8).
We follow HF, not qwen-vl-utils: they differ only for strips like 200x1 (HF keeps a 28-px floor).
"""

from __future__ import annotations

import math

from mmtok.presets.layout import Layout, Refused, pixel_bytes

MAX_RATIO = 200


def smart_resize(
    height: int, width: int, factor: int, min_pixels: int, max_pixels: int
) -> tuple[int, int]:
    """(height, width) as in transformers; raises ValueError above a 200:1 aspect ratio."""
    if max(height, width) / min(height, width) > MAX_RATIO:
        raise ValueError(
            f"absolute aspect ratio must be smaller than {MAX_RATIO}, "
            f"got {max(height, width) / min(height, width)}"
        )
    h_bar = round(height / factor) * factor  # Python's round: halves go to the even number
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def dynamic_resolution(
    width: int,
    height: int,
    *,
    patch_size: int,
    merge_size: int,
    min_pixels: int,
    max_pixels: int,
    temporal_patch_size: int,
    prompt_extra: int,
    row_end_tokens: bool,
) -> Layout | Refused:
    factor = patch_size * merge_size
    try:
        h, w = smart_resize(height, width, factor, min_pixels, max_pixels)
    except ValueError as e:
        return Refused(width, height, str(e))
    rows, cols = h // factor, w // factor
    tokens = rows * cols
    # Qwen: <|vision_start|> pads <|vision_end|>. Emu3: one end-of-line placeholder per row.
    prompt = tokens + (rows if row_end_tokens else 0) + prompt_extra
    # Qwen duplicates a still image to temporal_patch_size frames inside every patch.
    elements = (
        (h // patch_size) * (w // patch_size) * 3 * temporal_patch_size * patch_size * patch_size
    )
    return Layout(
        width, height, (w, h), None, (rows, cols), 1, tokens, prompt, *pixel_bytes(elements)
    )
