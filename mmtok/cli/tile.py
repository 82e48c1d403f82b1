"""`mmtok tile`: each image's layout under a model preset, as columns over a dataset."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from mmtok.cli import options as o
from mmtok.cli.output import handle_errors
from mmtok.cli.presets import PresetFileOpt
from mmtok.cli.probe import render_summary
from mmtok.commands import build_plan
from mmtok.commands.tile import TileOptions
from mmtok.images import DEFAULT_MAX_PIXELS


class Emit(StrEnum):
    LAYOUT = "layout"
    TILES = "tiles"


class TileFormat(StrEnum):
    PNG = "png"
    RAW = "raw"


@handle_errors
@o.dataset_command(output_after="preset")
def tile(
    preset: Annotated[
        str,
        typer.Option(
            "--preset", "-p", help="Model preset, with optional overrides: name:key=value."
        ),
    ],
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
    max_pixels: o.MaxPixelsOpt = DEFAULT_MAX_PIXELS,
    **shared: Any,
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
    opts = TileOptions.from_arguments({**locals(), **shared})
    o.run_dataset(opts, build_plan, render, shared)


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
