"""`mmtok tile`: each image's layout under a model preset, as columns over a dataset."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import pyarrow as pa
import pyarrow.compute as pc
import typer
from rich.console import Console
from rich.table import Table

from mmtok.cli import options as o
from mmtok.cli.output import handle_errors
from mmtok.cli.presets import PresetFileOpt
from mmtok.cli.probe import render_summary
from mmtok.engine.pipeline import Observer
from mmtok.errors import MmtokError
from mmtok.images import DEFAULT_MAX_PIXELS
from mmtok.presets import get_preset, load_preset_file
from mmtok.presets.pixels import has_pixels
from mmtok.stages.layout import LayoutStage
from mmtok.stages.probe import ProbeStage
from mmtok.stages.tiles import TileStage
from mmtok.stats import PercentileSample


class Emit(StrEnum):
    LAYOUT = "layout"
    TILES = "tiles"


class TileFormat(StrEnum):
    PNG = "png"
    RAW = "raw"


TILE_BATCH_ROWS = 8  # rows of pixels are large; keeps memory in flight to tens of MB per worker


class TokenSummary:
    """Totals and percentiles of vision tokens and tiles over the laid-out rows."""

    columns = ["image_tokens", "prompt_tokens", "num_tiles", "pixel_bytes_uint8"]

    def __init__(self):
        self.images = self.image_tokens = self.prompt_tokens = self.tiles = self.pixel_bytes = 0
        self.sample = PercentileSample(integer=True)  # token counts: percentiles that occur

    def add(self, table: pa.Table) -> None:
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


@handle_errors
def tile(
    inputs: o.InputsArg,
    preset: Annotated[
        str,
        typer.Option(
            "--preset", "-p", help="Model preset, with optional overrides: name:key=value."
        ),
    ],
    output: o.OutputOpt = None,
    emit: Annotated[
        Emit,
        typer.Option(
            help="`layout`: the layout columns only (header, no decode). `tiles`: also a "
            "`tiles` column with the pixels the model sees (decodes every image).",
        ),
    ] = Emit.LAYOUT,
    tile_format: Annotated[
        TileFormat,
        typer.Option(
            help="Bytes of each tile: `png`, or `raw` row-major RGB uint8 (height*width*3).",
        ),
    ] = TileFormat.PNG,
    preset_file: PresetFileOpt = None,
    exif: Annotated[
        bool,
        typer.Option(
            "--exif/--no-exif",
            help="Lay out the EXIF-rotated size, as transformers' load_image does.",
        ),
    ] = True,
    max_pixels: Annotated[
        int, typer.Option(min=1, help="Pixel limit: larger images are rejected as `bomb`.")
    ] = DEFAULT_MAX_PIXELS,
    image_col: o.ImageColOpt = "image",
    text_col: o.TextColOpt = "caption",
    id_col: o.IdColOpt = None,
    overwrite: o.OverwriteOpt = False,
    resume: o.ResumeOpt = False,
    shard_rows: o.ShardRowsOpt = 50_000,
    shard_bytes: o.ShardBytesOpt = "512MB",
    image_bytes: o.ImageBytesOpt = False,
    rejects: o.RejectsOpt = None,
    workers: o.WorkersOpt = None,
    row_timeout: o.RowTimeoutOpt = o.DEFAULT_ROW_TIMEOUT,
    quiet: o.QuietOpt = False,
    as_json: o.JsonOpt = False,
) -> None:
    """Add each image's layout under a model preset: tiles, vision tokens, pixel bytes.

    Columns: resized size, canvas, tile grid, tiles, vision tokens, prompt tokens and pixel
    bytes, computed from the image header alone (no pixel decode). Sizes the model refuses go
    to rejects as `model_refuses`; unreadable images get their probe reason.

    With [bold]--emit tiles[/] each row also gets the pixels the model's processor makes: every
    tile, global tile, thumbnail or crop, resized with the reference filter, rounding, padding
    and crop, in the processor's order, before rescaling and normalisation.

    [bold]Examples[/]

      mmtok tile captions.jsonl --preset mllama -o tiled/
      mmtok tile 'shards/*.tar' --preset qwen2-vl:max_pixels=1003520 --json
      mmtok tile captions.jsonl --preset internvl --emit tiles --tile-format raw \\
          -o tiles/
    """
    common = o.DatasetOptions.pick(locals())
    if preset_file:
        load_preset_file(preset_file)
    chosen = get_preset(preset)
    stages = [ProbeStage(max_pixels=max_pixels), LayoutStage(chosen, apply_exif=exif)]
    batch_rows = 256
    if emit is Emit.TILES:
        if not has_pixels(chosen.family):
            raise MmtokError(
                f"{chosen.name} has no published pixel pipeline (an API model)",
                hint="use --emit layout for its token counts",
            )
        if output is None or output == "-":
            raise MmtokError(
                "--emit tiles writes pixels into a dataset folder",
                hint="give -o DIR (tiles are binary; stdout carries JSON lines)",
            )
        stages.append(
            TileStage(chosen, tile_format=tile_format.value, apply_exif=exif, max_pixels=max_pixels)
        )
        batch_rows = TILE_BATCH_ROWS
    tokens = TokenSummary()
    observer = Observer(TokenSummary.columns, tokens.add)
    manifest, out, reporter = o.run_dataset(
        common,
        stages,
        f"tiling for {chosen.name}",
        [observer],
        batch_rows=batch_rows,
    )
    document = {
        "output": out.path if out else None,
        "preset": chosen.spec(),
        "emit": emit.value,
        "tile_format": tile_format.value if emit is Emit.TILES else None,
        "counts": manifest["counts"],
        "timing": manifest.get("timing"),
        **tokens.to_dict(),
    }
    reporter.result(document, lambda console: render(console, document))


def render(console: Console, doc: dict[str, Any]) -> None:
    render_summary(console, {**doc, "formats": {}})
    table = Table(
        title=f"layout: {doc['preset'].split(':')[0]}", show_header=False, title_justify="left"
    )
    table.add_row("images laid out", f"{doc['images']:,}")
    table.add_row("vision tokens", f"{doc['total_image_tokens']:,}")
    table.add_row("prompt tokens", f"{doc['total_prompt_tokens']:,}")
    table.add_row("tiles", f"{doc['total_tiles']:,}")
    if doc["images"]:
        p = doc["image_tokens_percentiles"]
        table.add_row(
            "tokens per image",
            f"mean {doc['mean_image_tokens']:,.1f}; p5 {p['p5']:,.0f}, "
            f"p50 {p['p50']:,.0f}, p95 {p['p95']:,.0f}, p99 {p['p99']:,.0f}",
        )
    console.print(table)
