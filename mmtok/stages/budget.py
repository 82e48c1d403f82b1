"""BudgetStage: per row, under each preset, the tokens and bytes of `../shared/design/budget.md`.

Runs after ProbeStage, from the header only. Adds `rgb_bytes` (w*h*3), `text_tokens` (caption)
and one struct column per preset, named by the preset as given (`qwen2-vl:max_pixels=1003520`),
holding image_tokens, prompt_tokens, num_tiles, pixel_bytes_uint8/fp32, bytes_per_token
(file bytes / image tokens), sequence_tokens (prompt + text: what must fit the context),
overflow (sequence tokens > --context) and error (the size this preset refuses; the other
fields are then null). A size one preset refuses is not a reject: the others still count it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from mmtok.engine.stage import Stage, StageResult
from mmtok.images.probe import SWAPS_SIDES
from mmtok.io.schema import make_rejects
from mmtok.presets import Preset, Refused
from mmtok.text import TextCounter

LAYOUT_CACHE = 8192  # distinct sizes per preset per worker

PRESET_TYPE = pa.struct(
    [
        pa.field("image_tokens", pa.int64()),
        pa.field("prompt_tokens", pa.int64()),
        pa.field("num_tiles", pa.int32()),
        pa.field("pixel_bytes_uint8", pa.int64()),
        pa.field("pixel_bytes_fp32", pa.int64()),
        pa.field("bytes_per_token", pa.float64()),
        pa.field("sequence_tokens", pa.int64()),
        pa.field("overflow", pa.bool_()),
        pa.field("error", pa.string()),
    ]
)


class BudgetStage(Stage):
    name: ClassVar[str] = "budget"

    def __init__(
        self,
        presets: dict[str, Preset],
        text: TextCounter,
        *,
        context: int | None = None,
        apply_exif: bool = True,
    ):
        self.presets = presets  # label -> preset (objects, so TOML presets reach workers)
        self.text = text
        self.context = context
        self.apply_exif = apply_exif

    def output_fields(self) -> list[pa.Field]:
        return [
            pa.field("rgb_bytes", pa.int64()),
            pa.field("text_tokens", pa.int64()),
            *(pa.field(label, PRESET_TYPE) for label in self.presets),
        ]

    def config(self) -> dict[str, Any]:
        return {
            "presets": {label: p.spec() for label, p in self.presets.items()},
            "text_tokens": self.text.label,
            "context": self.context,
            "apply_exif": self.apply_exif,
        }

    def setup(self) -> None:
        self.text.setup()
        # Sizes repeat across a dataset (cameras, thumbnails, crawled sizes): lay each one out
        # once per worker and keep its numbers. Bounded, so memory does not grow with the rows.
        self._known: dict[str, dict[int, tuple[int, ...]]] = {label: {} for label in self.presets}
        self._errors: dict[str, dict[int, str]] = {label: {} for label in self.presets}

    def process(self, rows: pa.Table) -> StageResult:
        """Columnar: each distinct (width, height) is laid out once per preset and worker, and
        the per-row columns are gathered from those numbers with numpy."""
        width = _ints(rows.column("width"))
        height = _ints(rows.column("height"))
        if self.apply_exif:
            swap = np.isin(_ints(rows.column("exif_orientation")), list(SWAPS_SIDES))
            width, height = np.where(swap, height, width), np.where(swap, width, height)
        file_bytes = _ints(rows.column("file_bytes"))
        text_tokens = np.asarray(self.text.count(rows.column("caption").to_pylist()), np.int64)
        keys, inverse = np.unique((width << 32) | height, return_inverse=True)
        out = rows.append_column("rgb_bytes", pa.array(width * height * 3, pa.int64()))
        out = out.append_column("text_tokens", pa.array(text_tokens, pa.int64()))
        for label in self.presets:
            numbers, errors = self._numbers(label, keys.tolist())
            column = self._column(numbers[inverse], errors, inverse, file_bytes, text_tokens)
            out = out.append_column(pa.field(label, PRESET_TYPE), column)
        return StageResult(out, make_rejects(rows.slice(0, 0), self.name, [], []))

    def _numbers(self, label: str, keys: list[int]) -> tuple[np.ndarray, list[str | None]]:
        """Per distinct size: (refused, image, prompt, tiles, uint8 bytes, fp32 bytes, no
        pixels) as an int64 array, and the refusal messages."""
        known, refusals, layout = (
            self._known[label],
            self._errors[label],
            self.presets[label].layout,
        )
        numbers = []
        for key in keys:
            row = known.get(key)
            if row is None:
                x = layout(key >> 32, key & 0xFFFFFFFF)
                if isinstance(x, Refused):
                    row = (1, 0, 0, 0, 0, 0, 1)
                    refusals[key] = x.error
                else:
                    u8, fp32 = x.pixel_bytes_uint8, x.pixel_bytes_fp32
                    row = (0, x.image_tokens, x.prompt_tokens, x.num_tiles, u8 or 0, fp32 or 0,
                           int(u8 is None))  # fmt: skip
                if len(known) < LAYOUT_CACHE:
                    known[key] = row
            numbers.append(row)
        errors = [refusals.get(key) for key in keys] if refusals else [None] * len(keys)
        return np.array(numbers, np.int64).reshape(-1, 7), errors

    def _column(
        self,
        numbers: np.ndarray,
        errors: list[str | None],
        inverse: np.ndarray,
        file_bytes: np.ndarray,
        text_tokens: np.ndarray,
    ) -> pa.Array:
        """One preset's struct column from the rows' numbers (null where refused)."""
        null, image, prompt = numbers[:, 0] == 1, numbers[:, 1], numbers[:, 2]
        no_pixels = numbers[:, 6] == 1
        sequence = prompt + text_tokens
        with np.errstate(divide="ignore", invalid="ignore"):
            per_token = file_bytes / image
        if self.context:
            overflow, overflow_null = sequence > self.context, null
        else:
            overflow, overflow_null = np.zeros(len(null), bool), np.ones(len(null), bool)
        arrays = [
            pa.array(image, pa.int64(), mask=null),
            pa.array(prompt, pa.int64(), mask=null),
            pa.array(numbers[:, 3], pa.int32(), mask=null),
            pa.array(numbers[:, 4], pa.int64(), mask=no_pixels),
            pa.array(numbers[:, 5], pa.int64(), mask=no_pixels),
            pa.array(per_token, pa.float64(), mask=null | (image == 0)),
            pa.array(sequence, pa.int64(), mask=null),
            pa.array(overflow, pa.bool_(), mask=overflow_null),
            pa.array(errors, pa.string()).take(pa.array(inverse)),
        ]
        return pa.StructArray.from_arrays(arrays, fields=list(PRESET_TYPE))


def _ints(column: pa.ChunkedArray) -> np.ndarray:
    """An integer column as int64, nulls as 0 (exif_orientation is null when absent)."""
    return column.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
