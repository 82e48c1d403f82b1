"""Pixtral-12B and Mistral-Small-3.1: cap the longest edge, then one token per `patch x merge`
cell (rounded up), with an [IMG_BREAK] after each row and [IMG_END] last.

Follows mistral-common 1.13.1 `mistral_common/tokens/tokenizers/image.py`
(`ImageEncoder._image_to_num_tokens`): the capped size is rounded (banker's) with a 1-px floor.
transformers' `pixtral/image_processing_pil_pixtral.py` floors instead, which differs on a few
sizes (1120x736, 81x1030) and crashes when a side floors to 0 (1x5000).
"""

from __future__ import annotations

from mmtok.presets.layout import Layout, Rule, new_tuple, refuse_empty


def patch_grid(patch_size: int, merge_size: int, longest_edge: int) -> Rule:
    unit = patch_size * merge_size

    def layout(width: int, height: int) -> Layout:
        if width < 1 or height < 1:
            return refuse_empty(width, height)
        ratio = max(height / longest_edge, width / longest_edge)
        w, h = width, height
        if ratio > 1:
            w, h = max(round(width / ratio), 1), max(round(height / ratio), 1)
        rows, cols = (h - 1) // unit + 1, (w - 1) // unit + 1
        resized = (cols * unit, rows * unit)  # resized (not padded) to whole cells
        tokens = rows * cols
        values = 3 * resized[0] * resized[1]
        return new_tuple(
            Layout,
            (width, height, resized, None, (rows, cols), 1, tokens, rows * (cols + 1), values,
             4 * values),
        )  # fmt: skip

    return layout
