"""`mmtok detokenize`: VQ ids back to images, to see what a tokenizer keeps.

This module imports no torch: the tokenizer is resolved, checked and loaded by the plan.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from mmtok.cli import options as o
from mmtok.cli.output import count_rows, handle_errors
from mmtok.cli.tokenize_images import (
    BatchOpt,
    CheckpointOpt,
    ConfigOpt,
    ExifOpt,
    Precision,
    PrecisionOpt,
    TokenizerOpt,
)
from mmtok.commands import build_plan
from mmtok.commands.detokenize import DetokenizeOptions
from mmtok.images import DEFAULT_MAX_PIXELS


@handle_errors
@o.dataset_command(output_after="checkpoint")
def detokenize(
    checkpoint: CheckpointOpt,
    tokenizer: TokenizerOpt = None,
    config: ConfigOpt = None,
    device: o.DeviceOpt = "auto",
    batch_size: BatchOpt = None,
    precision: PrecisionOpt = Precision.FP32,
    exif: ExifOpt = False,
    max_pixels: o.MaxPixelsOpt = DEFAULT_MAX_PIXELS,
    **shared: Any,
) -> None:
    """Decode VQ ids (an `mmtok tokenize-images` output) back into images.

    Each row's `image` becomes the decoded picture (PNG), readable by every mmtok command and
    by `datasets`; the original moves to `source_image`. Where the source image is still
    readable, `psnr` (dB) compares the picture with the source after the tokenizer's own
    preprocessing, and the summary gives its mean and percentiles. The checkpoint must hold
    the decoder. Rows whose ids do not fit the tokenizer are rejected as `bad_tokens`.

    [bold]Examples[/]

      mmtok detokenize tok/ -o seen/ --tokenizer chameleon \\
          --checkpoint tokenizer/vqgan.ckpt
    """
    opts = DetokenizeOptions.from_arguments({**locals(), **shared})
    o.run_dataset(opts, build_plan, render, shared)


def render(console: Console, doc: dict[str, Any]) -> None:
    p = doc["psnr"]
    table = Table(title="mmtok detokenize", show_header=False, title_justify="left")
    count_rows(table, doc, "decoded")
    r = doc["resolution"]
    table.add_row("tokenizer", f"{doc['tokenizer']['name']}, {r}x{r} PNG")
    if p["mean_db"] is not None:
        q = p["percentiles_db"]
        table.add_row(
            "PSNR",
            f"mean {p['mean_db']:.2f} dB over {p['rows']:,} rows with a source; "
            f"p5 {q['p5']:.2f}, p50 {q['p50']:.2f}, p95 {q['p95']:.2f}",
        )
    else:
        table.add_row("PSNR", "no row still has its source image")
    table.add_row("device", f"{doc['device']}, {doc['precision']}")
    console.print(table)
