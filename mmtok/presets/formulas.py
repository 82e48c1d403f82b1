"""Rules known only as formulas: OpenAI GPT-4o (`detail: high`) and Kimi-VL's MoonViT.

GPT-4o: OpenAI's vision guide, "Calculating costs": fit in 2048x2048, scale the shortest side
down to 768, then 170 tokens per 512-px tile plus 85. Images are never up-scaled (the common
reading; both examples in the guide agree).
Kimi-VL: `moonshotai/Kimi-VL-A3B-Instruct` `image_processing_kimi_vl.py`, read through vLLM's
`kimi_vl.py` port: cap at `in_token_limit` 14-px patches, pad to multiples of 28, 2x2 merge.
"""

from __future__ import annotations

import math

from mmtok.presets.layout import Layout, Refused, pixel_bytes


def openai_tiles(
    width: int,
    height: int,
    *,
    fit_size: int,
    short_side: int,
    tile_size: int,
    base_tokens: int,
    tile_tokens: int,
) -> Layout:
    s1 = min(1.0, fit_size / max(width, height))
    w1, h1 = width * s1, height * s1
    s2 = min(1.0, short_side / min(w1, h1))
    w2, h2 = w1 * s2, h1 * s2
    rows, cols = math.ceil(h2 / tile_size), math.ceil(w2 / tile_size)
    tokens = base_tokens + tile_tokens * rows * cols
    resized = (max(round(w2), 1), max(round(h2), 1))
    return Layout(
        width, height, resized, None, (rows, cols), rows * cols, tokens, tokens, None, None
    )


def moonvit(
    width: int,
    height: int,
    *,
    patch_size: int,
    merge_size: int,
    in_token_limit: int,
    max_patches_per_side: int,
) -> Layout | Refused:
    w, h = width, height
    patches = (w // patch_size) * (h // patch_size)
    if patches > in_token_limit:
        scale = math.sqrt(in_token_limit / patches)
        w, h = int(w * scale), int(h * scale)
    unit = patch_size * merge_size
    pad_w, pad_h = math.ceil(w / unit) * unit, math.ceil(h / unit) * unit
    if pad_w // patch_size >= max_patches_per_side or pad_h // patch_size >= max_patches_per_side:
        return Refused(
            width,
            height,
            f"Exceed pos emb: {pad_w // patch_size}x{pad_h // patch_size} patches "
            f"(limit {max_patches_per_side} per side)",
        )
    rows, cols = pad_h // unit, pad_w // unit
    tokens = rows * cols
    return Layout(
        width,
        height,
        (w, h),
        (pad_w, pad_h),
        (rows, cols),
        1,
        tokens,
        tokens,
        *pixel_bytes(3 * pad_w * pad_h),
    )
