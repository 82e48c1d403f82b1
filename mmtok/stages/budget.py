"""BudgetStage: per row, under each preset, the tokens and bytes of `../shared/design/budget.md`.

Runs after ProbeStage, from the header only. Adds `rgb_bytes` (w*h*3), `text_tokens` (caption)
and one struct column per preset, named by the preset as given (`qwen2-vl:max_pixels=1003520`),
holding image_tokens, prompt_tokens, num_tiles, pixel_bytes_uint8/fp32, bytes_per_token
(file bytes / image tokens), sequence_tokens (prompt + text: what must fit the context),
overflow (sequence tokens > --context) and error (the size this preset refuses; the other
fields are then null). A size one preset refuses is not a reject: the others still count it.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

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
        # once per worker. Bounded, so memory does not grow with the rows.
        self._layouts = {
            label: functools.lru_cache(maxsize=LAYOUT_CACHE)(preset.layout)
            for label, preset in self.presets.items()
        }

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
        for label, layout in self._layouts.items():
            column = self._column([layout(*size) for size in sizes], file_bytes, text_tokens)
            out = out.append_column(pa.field(label, PRESET_TYPE), column)
        return StageResult(out, make_rejects(rows.slice(0, 0), self.name, [], []))

    def _column(self, layouts: list, file_bytes: list[int], text_tokens: list[int]) -> pa.Array:
        """One preset's struct column, built field by field (no per-row dicts)."""
        ok = [not isinstance(x, Refused) for x in layouts]
        good = [x if k else None for x, k in zip(layouts, ok, strict=True)]
        image = [x.image_tokens if x else None for x in good]
        prompt = [x.prompt_tokens if x else None for x in good]
        sequence = [
            p + t if p is not None else None for p, t in zip(prompt, text_tokens, strict=True)
        ]
        fields = {
            "image_tokens": image,
            "prompt_tokens": prompt,
            "num_tiles": [x.num_tiles if x else None for x in good],
            "pixel_bytes_uint8": [x.pixel_bytes_uint8 if x else None for x in good],
            "pixel_bytes_fp32": [x.pixel_bytes_fp32 if x else None for x in good],
            "bytes_per_token": [
                n / i if i else None for n, i in zip(file_bytes, image, strict=True)
            ],
            "sequence_tokens": sequence,
            "overflow": [
                q > self.context if q is not None and self.context else None for q in sequence
            ],
            "error": [None if k else x.error for x, k in zip(layouts, ok, strict=True)],
        }
        arrays = [pa.array(fields[f.name], f.type) for f in PRESET_TYPE]
        return pa.StructArray.from_arrays(arrays, fields=list(PRESET_TYPE))
