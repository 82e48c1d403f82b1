"""LLaVA-NeXT (1.6) and LLaVA-OneVision "anyres": best pinpoint canvas, tiles plus a base image,
unpadded feature map with one newline token per row.

Sources: transformers v5.23 `image_processing_utils.py` (`select_best_resolution`,
`get_patch_output_size`), `llava_next/processing_llava_next.py` (`_get_number_of_features`,
`_get_unpadded_features`), `llava_onevision/processing_llava_onevision.py` (anyres_max_9 shrink).
Pinpoints are (height, width), as HF lists them.
"""

from __future__ import annotations

import math

from mmtok.presets.layout import Layout, pixel_bytes


def select_best_resolution(width: int, height: int, pinpoints: tuple) -> tuple[int, int]:
    """(height, width) of the pinpoint that keeps the most pixels, then wastes the least."""
    best, best_effective, best_wasted = None, -1, math.inf
    area = width * height
    for pin_h, pin_w in pinpoints:
        scale_w, scale_h = pin_w / width, pin_h / height
        scale = scale_w if scale_w < scale_h else scale_h
        effective = int(width * scale) * int(height * scale)
        if effective > area:
            effective = area
        wasted = pin_h * pin_w - effective
        if effective > best_effective or (effective == best_effective and wasted < best_wasted):
            best, best_effective, best_wasted = (pin_h, pin_w), effective, wasted
    return best


def patch_output_size(width: int, height: int, target_w: int, target_h: int) -> tuple[int, int]:
    """(width, height) of the aspect-kept resize into the target (get_patch_output_size)."""
    scale_w, scale_h = target_w / width, target_h / height
    if scale_w < scale_h:
        return target_w, min(math.ceil(height * scale_w), target_h)
    return min(math.ceil(width * scale_h), target_w), target_h


def anyres(
    width: int,
    height: int,
    *,
    tile_size: int,
    patch_size: int,
    pinpoints: tuple,
    base_tokens: int,
    max_tiles_shrink: int,
) -> Layout:
    pin_h, pin_w = select_best_resolution(width, height, pinpoints)
    rows, cols = pin_h // tile_size, pin_w // tile_size
    side = tile_size // patch_size  # features per tile side
    feat_h, feat_w = side * rows, side * cols
    if width / height > feat_w / feat_h:
        new_h = int(round(height * (feat_w / width), 7))
        feat_h -= 2 * ((feat_h - new_h) // 2)
    else:
        new_w = int(round(width * (feat_h / height), 7))
        feat_w -= 2 * ((feat_w - new_w) // 2)
    features, newlines = feat_h * feat_w, feat_h
    if max_tiles_shrink:
        ratio = math.sqrt(feat_h * feat_w / (max_tiles_shrink * side * side))
        if ratio > 1.1:
            features = int(feat_h // ratio) * int(feat_w // ratio)
            newlines = int(feat_h // ratio)
    tokens = base_tokens + features + newlines
    tiles = rows * cols + 1  # plus the base image (the whole image squashed to one tile)
    resized = patch_output_size(width, height, pin_w, pin_h)
    return Layout(
        width,
        height,
        resized,
        (pin_w, pin_h),
        (rows, cols),
        tiles,
        tokens,
        tokens,
        *pixel_bytes(tiles * 3 * tile_size * tile_size),
    )
