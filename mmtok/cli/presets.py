"""`mmtok presets` and `mmtok layout`: the model rules, without touching an image."""

from __future__ import annotations

import json
import re
import sys
from typing import Annotated

import typer

from mmtok.api import layout_record
from mmtok.cli.output import handle_errors
from mmtok.errors import MmtokError
from mmtok.presets import get_preset, list_presets, load_preset_file

PresetFileOpt = Annotated[
    str | None,
    typer.Option(
        "--preset-file",
        metavar="FILE",
        help="TOML file of your own presets, each based on a built-in one.",
    ),
]
_SIZE = re.compile(r"^\s*(\d+)\s*[xX×,]\s*(\d+)\s*$")


@handle_errors
def presets(
    preset_file: PresetFileOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per preset.")] = False,
) -> None:
    """List the model presets: family, parameters and the source each rule follows.

    Override any parameter where a preset is used: [bold]--preset qwen2-vl:max_pixels=1003520[/].
    """
    if preset_file:
        load_preset_file(preset_file)
    items = list_presets()
    if as_json:
        for p in items:
            sys.stdout.write(
                json.dumps(
                    {
                        "name": p.name,
                        "aliases": list(p.aliases),
                        "family": p.family,
                        "params": p.params,
                        "pixels": p.pixel_settings(),
                        "source": p.source,
                    }
                )
                + "\n"
            )
        return
    from rich.console import Console  # only for the table (`layout` never loads rich)
    from rich.table import Table

    table = Table(title="mmtok presets", title_justify="left")
    for column in ("preset", "family", "parameters", "source"):
        table.add_column(column, overflow="fold")
    for p in items:
        name = p.name + "".join(f"\n(= {a})" for a in p.aliases)
        items_shown = {**p.params, **p.pixel_settings()}
        params = "\n".join(f"{k}={v}" for k, v in items_shown.items() if k != "pinpoints")
        table.add_row(name, p.family, params, p.source)
    Console(soft_wrap=False).print(table)


def parse_size(text: str) -> tuple[int, int]:
    match = _SIZE.match(text)
    if not match:
        raise MmtokError(f"not a size: {text!r}", hint="write WIDTHxHEIGHT, e.g. 1920x1080")
    return int(match.group(1)), int(match.group(2))


@handle_errors
def layout(
    preset: Annotated[
        str, typer.Argument(help="Preset name, with optional overrides: name:key=value,key=value.")
    ],
    sizes: Annotated[
        list[str] | None,
        typer.Argument(
            help="Image sizes as WxH. Without any, one size per line on stdin.", show_default=False
        ),
    ] = None,
    preset_file: PresetFileOpt = None,
) -> None:
    """Print what a model does with images of the given sizes: one JSON object per size.

    Fields: preset, width, height, resized \\[w, h], canvas \\[w, h], grid \\[rows, cols],
    num_tiles, image_tokens, prompt_tokens, pixel_bytes_uint8, pixel_bytes_fp32. Sizes the
    model refuses give {width, height, error}. Pure arithmetic: no image is read.

    [bold]Examples[/]

      mmtok layout mllama 1920x1080 561x560
      mmtok layout qwen2-vl:max_pixels=1003520 4032x3024
      mmtok probe photos/ -o - | jq -r '"\\(.width)x\\(.height)"' \\
          | mmtok layout internvl
    """
    if preset_file:
        load_preset_file(preset_file)
    chosen = get_preset(preset)
    lines = sizes if sizes else (line for line in sys.stdin if line.strip())
    out = sys.stdout
    for text in lines:
        width, height = parse_size(text)
        out.write(json.dumps(layout_record(chosen, width, height)) + "\n")
