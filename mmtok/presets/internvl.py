"""InternVL 2/2.5/3 dynamic tiling: closest grid aspect ratio (ties to more tiles when the image is
big enough), squash-resize to the grid, plus a thumbnail when tiled.

Source: transformers v5.23 `got_ocr2/image_processing_pil_got_ocr2.py`
(`get_all_supported_aspect_ratios`, `get_optimal_tiled_canvas`; used for InternVL),
`internvl/processing_internvl.py` (256 tokens per tile between <img> and </img>); same rule as the
model cards' `dynamic_preprocess`.
"""

from __future__ import annotations

import functools

from mmtok.presets.layout import Layout, pixel_bytes


@functools.cache
def grids(min_tiles: int, max_tiles: int) -> tuple[tuple[int, int], ...]:
    """(cols, rows) pairs, stably sorted by tile count."""
    pairs = [
        (c, r)
        for c in range(1, max_tiles + 1)
        for r in range(1, max_tiles + 1)
        if min_tiles <= c * r <= max_tiles
    ]
    return tuple(sorted(pairs, key=lambda p: p[0] * p[1]))


def closest_grid(
    width: int, height: int, tile: int, min_tiles: int, max_tiles: int
) -> tuple[int, int]:
    aspect, area = width / height, width * height
    best, best_diff = (1, 1), float("inf")
    for cols, rows in grids(min_tiles, max_tiles):
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and area > 0.5 * tile * tile * cols * rows:
            best = (cols, rows)
    return best


def dynamic_tiles(
    width: int,
    height: int,
    *,
    tile_size: int,
    min_tiles: int,
    max_tiles: int,
    tokens_per_tile: int,
    use_thumbnail: bool,
) -> Layout:
    cols, rows = closest_grid(width, height, tile_size, min_tiles, max_tiles)
    canvas = (cols * tile_size, rows * tile_size)
    tiles = cols * rows + (1 if use_thumbnail and cols * rows > 1 else 0)
    tokens = tiles * tokens_per_tile
    return Layout(
        width,
        height,
        canvas,
        canvas,
        (rows, cols),
        tiles,
        tokens,
        tokens + 2,
        *pixel_bytes(tiles * 3 * tile_size * tile_size),
    )
