"""Idefics3 / SmolVLM: resize the long side to `longest_edge`, snap to tiles of
`max_image_size`, split into tiles plus one global image.

Source: transformers v5.23 `idefics3/image_processing_pil_idefics3.py`
(`_resize_output_size_rescale_to_max_len`, `_resize_output_size_scale_below_upper_bound`,
`resize_for_vision_encoder`, `get_number_of_image_patches`), `smolvlm/` (identical helpers),
`smolvlm/processing_smolvlm.py` (`_prompt_split_image`).
"""

from __future__ import annotations

import math

from mmtok.presets.layout import Layout, Rule, new_tuple, refuse_empty

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


def split_image(
    longest_edge: int, max_image_size: int, image_seq_len: int, do_image_splitting: bool
) -> Rule:
    tile = max_image_size
    tile_values = 3 * tile * tile
    ceil = math.ceil

    def layout(width: int, height: int) -> Layout:
        if width < 1 or height < 1:
            return refuse_empty(width, height)
        if not do_image_splitting:
            return new_tuple(
                Layout,
                (width, height, (tile, tile), None, (1, 1), 1, image_seq_len, image_seq_len + 3,
                 tile_values, 4 * tile_values),
            )  # fmt: skip
        w, h = rescale_to_max_len(width, height, longest_edge)
        # snap to whole tiles (resize_for_vision_encoder)
        aspect = w / h
        if w >= h:
            w = ceil(w / tile) * tile
            h = ceil(int(w / aspect) / tile) * tile
        else:
            h = ceil(h / tile) * tile
            w = ceil(int(h * aspect) / tile) * tile
        cols, rows = w // tile, h // tile
        if rows * cols == 1:
            # <fake_token_around_image><global-img> tokens <fake_token_around_image>
            tiles, prompt = 1, image_seq_len + 3
        else:
            tiles = rows * cols + 1
            # per tile: <fake_token_around_image><row_r_col_c> + tokens; "\n" per row;
            # then "\n<fake_token_around_image><global-img>" + tokens + "<fake_token_around_image>"
            prompt = rows * cols * (image_seq_len + 2) + rows + 4 + image_seq_len
        values = tiles * tile_values
        return new_tuple(
            Layout,
            (width, height, (w, h), (w, h), (rows, cols), tiles, tiles * image_seq_len, prompt,
             values, 4 * values),
        )  # fmt: skip

    return layout
