"""LayoutStage: a model preset's layout for each probed image (runs after ProbeStage)."""

from __future__ import annotations

from typing import Any, ClassVar

import pyarrow as pa

from mmtok.engine.stage import RowStage
from mmtok.images.probe import SWAPS_SIDES
from mmtok.presets import Preset, Refused
from mmtok.reasons import Reason, RowRejected

LAYOUT_FIELDS = [
    pa.field("preset", pa.string()),
    pa.field("resized_width", pa.int32()),
    pa.field("resized_height", pa.int32()),
    pa.field("canvas_width", pa.int32()),
    pa.field("canvas_height", pa.int32()),
    pa.field("grid_rows", pa.int32()),
    pa.field("grid_cols", pa.int32()),
    pa.field("num_tiles", pa.int32()),
    pa.field("image_tokens", pa.int64()),
    pa.field("prompt_tokens", pa.int64()),
    pa.field("pixel_bytes_uint8", pa.int64()),
    pa.field("pixel_bytes_fp32", pa.int64()),
]


class LayoutStage(RowStage):
    """Adds the layout columns of one preset.

    `apply_exif=True` (default) lays out the size a viewer shows, after the EXIF rotation: that
    is what transformers' `load_image` hands every processor (`ImageOps.exif_transpose` in
    `image_utils.load_image`). Pass False for loaders that skip the rotation.
    """

    name: ClassVar[str] = "layout"
    input_columns: ClassVar[tuple[str, ...]] = ("width", "height", "exif_orientation")

    def __init__(self, preset: Preset, *, apply_exif: bool = True):
        self.preset = preset  # the object itself, so presets from a user's TOML reach workers
        self.apply_exif = apply_exif

    def output_fields(self) -> list[pa.Field]:
        return LAYOUT_FIELDS

    def config(self) -> dict[str, Any]:
        return {
            "preset": self.preset.spec(),
            "family": self.preset.family,
            "apply_exif": self.apply_exif,
        }

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        width, height = row["width"], row["height"]
        if self.apply_exif and row["exif_orientation"] in SWAPS_SIDES:
            width, height = height, width
        layout = self.preset.layout(width, height)
        if isinstance(layout, Refused):
            raise RowRejected(Reason.MODEL_REFUSES, f"{self.preset.name}: {layout.error}")
        canvas = layout.canvas or (None, None)
        return {
            "preset": self.preset.name,
            "resized_width": layout.resized[0],
            "resized_height": layout.resized[1],
            "canvas_width": canvas[0],
            "canvas_height": canvas[1],
            "grid_rows": layout.grid[0],
            "grid_cols": layout.grid[1],
            "num_tiles": layout.num_tiles,
            "image_tokens": layout.image_tokens,
            "prompt_tokens": layout.prompt_tokens,
            "pixel_bytes_uint8": layout.pixel_bytes_uint8,
            "pixel_bytes_fp32": layout.pixel_bytes_fp32,
        }
