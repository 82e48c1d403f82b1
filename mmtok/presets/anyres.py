"""LLaVA-NeXT (1.6) and LLaVA-OneVision "anyres": best pinpoint canvas, tiles plus a base image,
unpadded feature map with one newline token per row.

Sources: transformers v5.23 `image_processing_utils.py` (`select_best_resolution`,
`get_patch_output_size`), `llava_next/processing_llava_next.py` (`_get_number_of_features`,
`_get_unpadded_features`), `llava_onevision/processing_llava_onevision.py` (anyres_max_9 shrink).
Pinpoints are (height, width), as HF lists them.
"""

from __future__ import annotations

import math

from mmtok.presets.layout import Layout, Rule, new_tuple, refuse_empty


def select_best_resolution(width: int, height: int, pinpoints: tuple) -> tuple[int, int]:
    """(height, width) of the pinpoint that keeps the most pixels, then wastes the least
    (the reference's loop as written, kept to test the finder below against)."""
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


def best_resolution_finder(pinpoints: tuple):
    """`best(width, height)`, equal to `select_best_resolution` without visiting every pinpoint.

    A pinpoint the image fits in keeps all its pixels, and one it does not fit in keeps fewer
    (its scale is below 1), so when some fit the smallest of them wins (the first listed on a
    tie). Otherwise no pinpoint keeps more pixels than its own area: visiting them largest
    first, the walk stops at the first one smaller than the best kept so far. Ties on kept and
    wasted pixels go to the first listed, as in the reference's loop.
    """
    by_area = sorted(
        ((h * w, i, h, w) for i, (h, w) in enumerate(pinpoints)), key=lambda p: (p[0], p[1])
    )
    largest_first = sorted(by_area, key=lambda p: (-p[0], p[1]))
    widest, tallest = max(w for _, w in pinpoints), max(h for h, _ in pinpoints)

    def best(width: int, height: int) -> tuple[int, int]:
        if width <= widest and height <= tallest:
            for _, _, pin_h, pin_w in by_area:
                if pin_w >= width and pin_h >= height:
                    return pin_h, pin_w
        best_pin, best_effective, best_wasted, best_index = None, -1, 0, 0
        for pin_area, index, pin_h, pin_w in largest_first:
            if pin_area < best_effective:
                break
            scale_w, scale_h = pin_w / width, pin_h / height
            scale = scale_w if scale_w < scale_h else scale_h
            effective = int(width * scale) * int(height * scale)  # below the image's area
            wasted = pin_area - effective
            if effective > best_effective or (
                effective == best_effective
                and (wasted < best_wasted or (wasted == best_wasted and index < best_index))
            ):
                best_pin, best_effective, best_wasted, best_index = (
                    (pin_h, pin_w), effective, wasted, index
                )  # fmt: skip
        return best_pin

    return best


def anyres(
    tile_size: int, patch_size: int, pinpoints: tuple, base_tokens: int, max_tiles_shrink: int
) -> Rule:
    best_resolution = best_resolution_finder(pinpoints)
    side = tile_size // patch_size  # features per tile side
    tile_values = 3 * tile_size * tile_size
    sqrt, ceil = math.sqrt, math.ceil

    def layout(width: int, height: int) -> Layout:
        if width < 1 or height < 1:
            return refuse_empty(width, height)
        pin_h, pin_w = best_resolution(width, height)
        rows, cols = pin_h // tile_size, pin_w // tile_size
        feat_h, feat_w = side * rows, side * cols
        if width / height > feat_w / feat_h:
            new_h = int(round(height * (feat_w / width), 7))
            feat_h -= 2 * ((feat_h - new_h) // 2)
        else:
            new_w = int(round(width * (feat_h / height), 7))
            feat_w -= 2 * ((feat_w - new_w) // 2)
        features, newlines = feat_h * feat_w, feat_h
        if max_tiles_shrink:
            ratio = sqrt(feat_h * feat_w / (max_tiles_shrink * side * side))
            if ratio > 1.1:
                features = int(feat_h // ratio) * int(feat_w // ratio)
                newlines = int(feat_h // ratio)
        tokens = base_tokens + features + newlines
        tiles = rows * cols + 1  # plus the base image (the whole image squashed to one tile)
        # the aspect-kept resize into the pinpoint (get_patch_output_size)
        scale_w, scale_h = pin_w / width, pin_h / height
        if scale_w < scale_h:
            resized = (pin_w, min(ceil(height * scale_w), pin_h))
        else:
            resized = (min(ceil(width * scale_h), pin_w), pin_h)
        values = tiles * tile_values
        return new_tuple(
            Layout,
            (width, height, resized, (pin_w, pin_h), (rows, cols), tiles, tokens, tokens, values,
             4 * values),
        )  # fmt: skip

    return layout
