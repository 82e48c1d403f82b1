"""Fit-to-canvas tiling: Llama 3.2 Vision (Mllama), the Llama 3 paper's 336-px variant, Llama 4.

Sources: transformers v5.23 `mllama/image_processing_pil_mllama.py`
(`get_all_supported_aspect_ratios`,
`get_optimal_tiled_canvas`, `get_image_size_fit_to_canvas`), Meta's
`llama-models:models/llama3/multimodal/image_transform.py` (same rule), and
`llama4/image_processing_llama4.py` / `processing_llama4.py` (global tile, 144 tokens per chunk).
"""

from __future__ import annotations

import functools
import math

from mmtok.presets.layout import Layout, Rule, new_tuple, refuse_empty


@functools.cache
def arrangements(max_tiles: int) -> tuple[tuple[int, int], ...]:
    """All (rows, cols) with rows * cols <= max_tiles, in the reference's order."""
    return tuple(
        (a, b)
        for a in range(1, max_tiles + 1)
        for b in range(1, max_tiles + 1)
        if a * b <= max_tiles
    )


def optimal_canvas_loop(width: int, height: int, tile: int, max_tiles: int) -> tuple[int, int]:
    """(rows, cols): least up-scaling if any arrangement fits without shrinking, else least
    down-scaling; ties go to the smallest area, then to the first in list order. The
    reference's rule over every arrangement, kept to test `canvas_finder` against."""
    up_scale, up_area, up = math.inf, 0, None
    down_scale, down_area, down = -1.0, 0, None
    for rows, cols in arrangements(max_tiles):
        scale_h, scale_w = rows * tile / height, cols * tile / width  # the reference's divisions
        scale = scale_h if scale_w > scale_h else scale_w
        area = rows * cols
        if scale >= 1:
            if scale < up_scale or (scale == up_scale and area < up_area):
                up_scale, up_area, up = scale, area, (rows, cols)
        elif scale > down_scale or (scale == down_scale and area < down_area):
            down_scale, down_area, down = scale, area, (rows, cols)
    return up or down


def canvas_finder(tile: int, max_tiles: int):
    """`optimal_canvas(width, height)`, equal to the loop above with one candidate per row.

    Up-scaling is possible only on canvases at least ceil(H/T) x ceil(W/T) tiles; that one has
    the least scale and the least area, so it wins when allowed. Otherwise, in each row count r
    the scale grows with the columns until the width stops limiting it: the row's best is the
    fewest columns c with c*T/W >= r*T/H, that is c = ceil(r*W/H) in integers (the float
    divisions keep that order: two such scales differ by at least T/(W*H), far above rounding),
    or every column allowed when that is too many. The rows' best compete as in the loop.
    """
    rows_range = range(1, max_tiles + 1)

    def optimal_canvas(width: int, height: int) -> tuple[int, int]:
        up_rows, up_cols = -(-height // tile), -(-width // tile)
        if up_rows * up_cols <= max_tiles:
            return up_rows, up_cols
        best_scale, best_area, best = -1.0, 0, (1, 1)
        for rows in rows_range:
            most = max_tiles // rows
            cols = -(-rows * width // height)
            if cols <= most:
                scale = rows * tile / height
            else:
                cols = most
                scale = most * tile / width
            if scale > best_scale or (scale == best_scale and rows * cols < best_area):
                best_scale, best_area, best = scale, rows * cols, (rows, cols)
        return best

    return optimal_canvas


def fit_size(width: int, height: int, canvas_w: int, canvas_h: int, tile: int) -> tuple[int, int]:
    """Aspect-preserving size inside the canvas; a side grows at most until it reaches one tile."""
    target_w = min(max(width, tile), canvas_w)
    target_h = min(max(height, tile), canvas_h)
    scale_w, scale_h = target_w / width, target_h / height
    if scale_w < scale_h:
        return target_w, min(math.floor(height * scale_w) or 1, target_h)
    return min(math.floor(width * scale_h) or 1, target_w), target_h


def fit_to_canvas(
    tile_size: int,
    max_tiles: int,
    tokens_per_tile: int,
    global_tile: bool,
    cross_attention: bool,
    pad_to_max_tiles: bool,
) -> Rule:
    optimal_canvas = canvas_finder(tile_size, max_tiles)
    tile_values = 3 * tile_size * tile_size

    def layout(width: int, height: int) -> Layout:
        if width < 1 or height < 1:
            return refuse_empty(width, height)
        rows, cols = optimal_canvas(width, height)
        canvas = (cols * tile_size, rows * tile_size)
        resized = fit_size(width, height, canvas[0], canvas[1], tile_size)
        tiles = rows * cols
        if global_tile and tiles > 1:
            tiles += 1
        image_tokens = tiles * tokens_per_tile
        if cross_attention:
            prompt = 1  # one <|image|> token; the image enters through cross-attention
        elif tiles == 1:
            prompt = 3 + tokens_per_tile  # <|image_start|> <|image|> patches <|image_end|>
        else:  # x separators between columns, y after rows (processing_llama4._prompt_split_image)
            prompt = 3 + image_tokens + rows * (cols - 1) + rows
        values = (max_tiles if pad_to_max_tiles else tiles) * tile_values
        return new_tuple(
            Layout,
            (width, height, resized, canvas, (rows, cols), tiles, image_tokens, prompt, values,
             4 * values),
        )  # fmt: skip

    return layout
