"""InternVL 2/2.5/3 dynamic tiling: closest grid aspect ratio (ties to more tiles when the image is
big enough), squash-resize to the grid, plus a thumbnail when tiled.

Source: transformers v5.23 `got_ocr2/image_processing_pil_got_ocr2.py`
(`get_all_supported_aspect_ratios`, `get_optimal_tiled_canvas`; used for InternVL),
`internvl/processing_internvl.py` (256 tokens per tile between <img> and </img>); same rule as the
model cards' `dynamic_preprocess`.
"""

from __future__ import annotations

import bisect
import functools

from mmtok.presets.layout import Layout, Rule, new_tuple, refuse_empty


@functools.cache
def grids(min_tiles: int, max_tiles: int) -> tuple[tuple[int, int], ...]:
    """(cols, rows) pairs, stably sorted by tile count: the reference's list order."""
    pairs = [
        (c, r)
        for c in range(1, max_tiles + 1)
        for r in range(1, max_tiles + 1)
        if min_tiles <= c * r <= max_tiles
    ]
    return tuple(sorted(pairs, key=lambda p: p[0] * p[1]))


def closest_grid_loop(
    width: int, height: int, tile: int, min_tiles: int, max_tiles: int
) -> tuple[int, int]:
    """The reference's loop as written (`get_optimal_tiled_canvas`), kept to test against."""
    aspect, area = width / height, width * height
    best, best_diff = (1, 1), float("inf")
    for cols, rows in grids(min_tiles, max_tiles):
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and area > 0.5 * tile * tile * cols * rows:
            best = (cols, rows)
    return best


def closest_grid_finder(tile: int, min_tiles: int, max_tiles: int):
    """`closest_grid(width, height)`, equal to the loop above without visiting every grid.

    The loop keeps the first grid at the smallest |aspect - cols/rows|, then any later grid at
    that same distance whose tiles cover less than twice the image. Only the one or two
    distinct ratios next to the aspect (by bisection) can be at the smallest distance: another
    ratio is at least 1/max_tiles^2 farther, far above float rounding. Their grids, merged in
    list order, then get the loop's tie rule.
    """
    order = grids(min_tiles, max_tiles)
    by_ratio: dict[float, list[tuple[int, int, int, float]]] = {}
    for index, (cols, rows) in enumerate(order):
        # the reference's float, 0.5 * tile * tile * cols * rows, computed once
        by_ratio.setdefault(cols / rows, []).append(
            (index, cols, rows, 0.5 * tile * tile * cols * rows)
        )
    ratios = sorted(by_ratio)
    groups = [by_ratio[r] for r in ratios]
    last = len(ratios) - 1

    def closest_grid(width: int, height: int) -> tuple[int, int]:
        aspect = width / height
        i = bisect.bisect_left(ratios, aspect)
        if i == 0:
            nearest = groups[0]
        elif i > last:
            nearest = groups[last]
        else:
            below, above = abs(aspect - ratios[i - 1]), abs(aspect - ratios[i])
            if below < above:
                nearest = groups[i - 1]
            elif above < below:
                nearest = groups[i]
            else:
                nearest = sorted(groups[i - 1] + groups[i])
        _, cols, rows, _ = nearest[0]  # the first grid at the smallest distance
        area = width * height
        for _, c, r, half_cover in nearest[1:]:
            if area > half_cover:
                cols, rows = c, r
        return cols, rows

    return closest_grid


def dynamic_tiles(
    tile_size: int, min_tiles: int, max_tiles: int, tokens_per_tile: int, use_thumbnail: bool
) -> Rule:
    closest_grid = closest_grid_finder(tile_size, min_tiles, max_tiles)
    tile_values = 3 * tile_size * tile_size

    def layout(width: int, height: int) -> Layout:
        if width < 1 or height < 1:
            return refuse_empty(width, height)
        cols, rows = closest_grid(width, height)
        canvas = (cols * tile_size, rows * tile_size)
        tiles = cols * rows + (1 if use_thumbnail and cols * rows > 1 else 0)
        tokens = tiles * tokens_per_tile
        values = tiles * tile_values
        return new_tuple(
            Layout,
            (width, height, canvas, canvas, (rows, cols), tiles, tokens, tokens + 2, values,
             4 * values),
        )  # fmt: skip

    return layout
