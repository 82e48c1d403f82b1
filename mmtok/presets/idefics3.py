"""Idefics3 / SmolVLM: resize the long side to `longest_edge`, snap to tiles of
`max_image_size`, split into tiles plus one global image.

Source: transformers v5.23 `idefics3/image_processing_pil_idefics3.py`
(`_resize_output_size_rescale_to_max_len`, `_resize_output_size_scale_below_upper_bound`,
`resize_for_vision_encoder`, `get_number_of_image_patches`), `smolvlm/` (identical helpers),
`smolvlm/processing_smolvlm.py` (`_prompt_split_image`).
"""

from __future__ import annotations

import math

from mmtok.presets.layout import Layout, pixel_bytes

MAX_IMAGE_SIZE = 4096


def rescale_to_max_len(width: int, height: int, max_len: int) -> tuple[int, int]:
    aspect = width / height
    if width >= height:
        width = max_len
        height = int(width / aspect)
        height += height % 2
    else:
        height = max_len
        width = int(height * aspect)
        width += width % 2
    width, height = max(width, 1), max(height, 1)
    if max(width, height) > MAX_IMAGE_SIZE:  # never for the published configs (L <= 4096)
        aspect = width / height
        if width >= height:
            width, height = MAX_IMAGE_SIZE, int(MAX_IMAGE_SIZE / aspect)
        else:
            height, width = MAX_IMAGE_SIZE, int(MAX_IMAGE_SIZE * aspect)
    return max(width, 1), max(height, 1)


def snap_to_tiles(width: int, height: int, tile: int) -> tuple[int, int]:
    aspect = width / height
    if width >= height:
        width = math.ceil(width / tile) * tile
        height = math.ceil(int(width / aspect) / tile) * tile
    else:
        height = math.ceil(height / tile) * tile
        width = math.ceil(int(height * aspect) / tile) * tile
    return width, height


def split_image(
    width: int,
    height: int,
    *,
    longest_edge: int,
    max_image_size: int,
    image_seq_len: int,
    do_image_splitting: bool,
) -> Layout:
    resized = rescale_to_max_len(width, height, longest_edge)
    if not do_image_splitting:
        tile = max_image_size
        return Layout(
            width,
            height,
            (tile, tile),
            None,
            (1, 1),
            1,
            image_seq_len,
            image_seq_len + 3,
            *pixel_bytes(3 * tile * tile),
        )
    canvas = snap_to_tiles(*resized, max_image_size)
    cols, rows = canvas[0] // max_image_size, canvas[1] // max_image_size
    if rows * cols == 1:
        # <fake_token_around_image><global-img> tokens <fake_token_around_image>
        tiles, prompt = 1, image_seq_len + 3
    else:
        tiles = rows * cols + 1
        # per tile: <fake_token_around_image><row_r_col_c> + tokens; "\n" per row;
        # then "\n<fake_token_around_image><global-img>" + tokens + "<fake_token_around_image>"
        prompt = rows * cols * (image_seq_len + 2) + rows + 4 + image_seq_len
    return Layout(
        width,
        height,
        canvas,
        canvas,
        (rows, cols),
        tiles,
        tiles * image_seq_len,
        prompt,
        *pixel_bytes(tiles * 3 * max_image_size * max_image_size),
    )
