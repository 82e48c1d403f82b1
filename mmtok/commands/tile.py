"""`tile`: each image's layout under a model preset, as columns over a dataset."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from mmtok.errors import MmtokError
from mmtok.images import DEFAULT_MAX_PIXELS

from .options import DatasetOptions, option
from .plan import Part

TILE_BATCH_ROWS = 8  # rows of pixels are large; keeps memory in flight to tens of MB per worker


class TokenSummary:
    """Totals and percentiles of vision tokens and tiles over the laid-out rows. Mergeable
    (`Observer.summary`): workers fill a part per batch, merged here in input order."""

    columns = ["image_tokens", "prompt_tokens", "num_tiles", "pixel_bytes_uint8"]

    def __init__(self):
        from mmtok.stats import PercentileSample

        self.images = self.image_tokens = self.prompt_tokens = self.tiles = self.pixel_bytes = 0
        self.sample = PercentileSample(integer=True)  # token counts: percentiles that occur

    def empty(self) -> TokenSummary:
        part = TokenSummary()
        part.sample = self.sample.empty()
        return part

    def merge(self, part: TokenSummary) -> None:
        self.images += part.images
        self.image_tokens += part.image_tokens
        self.prompt_tokens += part.prompt_tokens
        self.tiles += part.tiles
        self.pixel_bytes += part.pixel_bytes
        self.sample.merge(part.sample)

    def add(self, table: Any) -> None:
        import pyarrow.compute as pc

        if table.num_rows == 0:
            return
        self.images += table.num_rows
        self.image_tokens += pc.sum(table.column("image_tokens")).as_py()
        self.prompt_tokens += pc.sum(table.column("prompt_tokens")).as_py()
        self.tiles += pc.sum(table.column("num_tiles")).as_py()
        self.pixel_bytes += pc.sum(table.column("pixel_bytes_uint8")).as_py() or 0
        self.sample.add(table.column("image_tokens").to_numpy(zero_copy_only=False))

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "total_image_tokens": self.image_tokens,
            "total_prompt_tokens": self.prompt_tokens,
            "total_tiles": self.tiles,
            "total_pixel_bytes_uint8": self.pixel_bytes,
            "mean_image_tokens": self.image_tokens / self.images if self.images else None,
            "image_tokens_percentiles": self.sample.percentiles((5, 50, 95, 99)),
        }


@dataclass(kw_only=True)
class TileOptions(DatasetOptions):
    preset: str
    emit: Literal["layout", "tiles"] = "layout"
    tile_format: Literal["png", "raw"] = "png"
    preset_file: str | None = None
    exif: bool = True
    max_pixels: int = option(DEFAULT_MAX_PIXELS, ge=1)


def part(opts: TileOptions) -> Part:
    from mmtok.engine.pipeline import Observer
    from mmtok.presets import get_preset, load_preset_file
    from mmtok.presets.pixels import has_pixels
    from mmtok.stages.layout import LayoutStage
    from mmtok.stages.probe import ProbeStage
    from mmtok.stages.tiles import TileStage

    if opts.preset_file:
        load_preset_file(opts.preset_file)
    chosen = get_preset(opts.preset)
    stages = [ProbeStage(max_pixels=opts.max_pixels), LayoutStage(chosen, apply_exif=opts.exif)]
    batch_rows = 256
    if opts.emit == "tiles":
        if not has_pixels(chosen.family):
            raise MmtokError(
                f"{chosen.name} has no published pixel pipeline (an API model)",
                hint="use --emit layout for its token counts",
            )
        if opts.output is None or opts.output == "-":
            raise MmtokError(
                "--emit tiles writes pixels into a dataset folder",
                hint="give -o DIR (tiles are binary; stdout carries JSON lines)",
            )
        tile = TileStage(
            chosen, tile_format=opts.tile_format, apply_exif=opts.exif, max_pixels=opts.max_pixels
        )
        stages.append(tile)
        batch_rows = TILE_BATCH_ROWS
    tokens = TokenSummary()

    def document(manifest: dict[str, Any], out: Any) -> dict[str, Any]:
        return {
            "output": out.path if out else None,
            "preset": chosen.spec(),
            "emit": opts.emit,
            "tile_format": opts.tile_format if opts.emit == "tiles" else None,
            "counts": manifest["counts"],
            "timing": manifest.get("timing"),
            **tokens.to_dict(),
        }

    observer = Observer(TokenSummary.columns, summary=tokens)
    return Part(
        "tile", f"tiling for {chosen.name}", stages, document, [observer], batch_rows=batch_rows
    )
