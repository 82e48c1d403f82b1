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

import pyarrow as pa

from mmtok.engine.stage import Stage, StageResult
from mmtok.images.probe import SWAPS_SIDES
from mmtok.io.schema import make_rejects
from mmtok.presets import Preset, Refused
from mmtok.text import TextCounter

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

    def process(self, rows: pa.Table) -> StageResult:
        width = rows.column("width").to_pylist()
        height = rows.column("height").to_pylist()
        orientation = rows.column("exif_orientation").to_pylist()
        file_bytes = rows.column("file_bytes").to_pylist()
        text_tokens = self.text.count(rows.column("caption").to_pylist())
        sizes = [
            (h, w) if self.apply_exif and o in SWAPS_SIDES else (w, h)
            for w, h, o in zip(width, height, orientation, strict=True)
        ]
        out = rows.append_column(
            "rgb_bytes", pa.array([w * h * 3 for w, h in sizes], pa.int64())
        ).append_column("text_tokens", pa.array(text_tokens, pa.int64()))
        for label, preset in self.presets.items():
            cache: dict[tuple[int, int], Any] = {}
            values = []
            for size, nbytes, text in zip(sizes, file_bytes, text_tokens, strict=True):
                layout = cache.get(size)
                if layout is None:
                    layout = cache[size] = preset.layout(*size)
                values.append(self._row(layout, nbytes, text))
            out = out.append_column(pa.field(label, PRESET_TYPE), pa.array(values, PRESET_TYPE))
        return StageResult(out, make_rejects(rows.slice(0, 0), self.name, [], []))

    def _row(self, layout, file_bytes: int, text_tokens: int) -> dict[str, Any]:
        if isinstance(layout, Refused):
            return {"error": layout.error}
        sequence = layout.prompt_tokens + text_tokens
        return {
            "image_tokens": layout.image_tokens,
            "prompt_tokens": layout.prompt_tokens,
            "num_tiles": layout.num_tiles,
            "pixel_bytes_uint8": layout.pixel_bytes_uint8,
            "pixel_bytes_fp32": layout.pixel_bytes_fp32,
            "bytes_per_token": file_bytes / layout.image_tokens if layout.image_tokens else None,
            "sequence_tokens": sequence,
            "overflow": sequence > self.context if self.context else None,
            "error": None,
        }
