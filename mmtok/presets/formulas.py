"""Rules known only as formulas: OpenAI GPT-4o (`detail: high`) and Kimi-VL's MoonViT.

GPT-4o: OpenAI's vision guide, "Calculating costs": fit in 2048x2048, scale the shortest side
down to 768, then 170 tokens per 512-px tile plus 85. Images are never up-scaled (the common
reading; both examples in the guide agree).
Kimi-VL: `moonshotai/Kimi-VL-A3B-Instruct` `image_processing_kimi_vl.py`, read through vLLM's
`kimi_vl.py` port: cap at `in_token_limit` 14-px patches, pad to multiples of 28, 2x2 merge.
"""

from __future__ import annotations

import math

from mmtok.presets.layout import Layout, Refused, Rule, new_tuple, refuse_empty


def openai_tiles(
    fit_size: int, short_side: int, tile_size: int, base_tokens: int, tile_tokens: int
) -> Rule:
    ceil = math.ceil

    def layout(width: int, height: int) -> Layout:
        if width < 1 or height < 1:
            return refuse_empty(width, height)
        s1 = min(1.0, fit_size / max(width, height))
        w1, h1 = width * s1, height * s1
        s2 = min(1.0, short_side / min(w1, h1))
        w2, h2 = w1 * s2, h1 * s2
        rows, cols = ceil(h2 / tile_size), ceil(w2 / tile_size)
        tokens = base_tokens + tile_tokens * rows * cols
        resized = (max(round(w2), 1), max(round(h2), 1))
        return new_tuple(
            Layout,
            (width, height, resized, None, (rows, cols), rows * cols, tokens, tokens, None, None),
        )

    return layout


def moonvit(
    patch_size: int, merge_size: int, in_token_limit: int, max_patches_per_side: int
) -> Rule:
    unit = patch_size * merge_size
    sqrt, ceil = math.sqrt, math.ceil

    def layout(width: int, height: int) -> Layout | Refused:
        if width < 1 or height < 1:
            return refuse_empty(width, height)
        w, h = width, height
        patches = (w // patch_size) * (h // patch_size)
        if patches > in_token_limit:
            scale = sqrt(in_token_limit / patches)
            w, h = int(w * scale), int(h * scale)
        pad_w, pad_h = ceil(w / unit) * unit, ceil(h / unit) * unit
        side = max_patches_per_side
        if pad_w // patch_size >= side or pad_h // patch_size >= side:
            return Refused(
                width,
                height,
                f"Exceed pos emb: {pad_w // patch_size}x{pad_h // patch_size} patches "
                f"(limit {max_patches_per_side} per side)",
            )
        rows, cols = pad_h // unit, pad_w // unit
        tokens = rows * cols
        values = 3 * pad_w * pad_h
        return new_tuple(
            Layout,
            (width, height, (w, h), (pad_w, pad_h), (rows, cols), 1, tokens, tokens, values,
             4 * values),
        )  # fmt: skip

    return layout
