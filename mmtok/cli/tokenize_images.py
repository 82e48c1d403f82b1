"""`mmtok tokenize-images`: discrete VQ image tokens (Chameleon, taming VQGAN, LlamaGen / Janus).

This module imports no torch: the tokenizer is resolved, checked and loaded by the plan.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from mmtok.cli import options as o
from mmtok.cli.output import count_rows, handle_errors
from mmtok.commands import build_plan
from mmtok.commands.tokenize_images import TokenizeImagesOptions
from mmtok.images import DEFAULT_MAX_PIXELS

MODEL_PANEL = "Tokenizer"


class Precision(StrEnum):
    FP32 = "fp32"  # the reference: TF32 off, codebook distances in fp32
    TF32 = "tf32"
    BF16 = "bf16"


class Emit(StrEnum):
    BIN = "bin"  # also the flat training stream under OUT/__mmtok__/vq_stream/


TokenizerOpt = Annotated[
    str | None,
    typer.Option(
        "--tokenizer",
        "-t",
        help="Built-in tokenizer: chameleon (also Anole, Lumina-mGPT), taming-f16-1024, "
        "taming-f16-16384, llamagen-vq16 (Janus).",
        rich_help_panel=MODEL_PANEL,
    ),
]
ConfigOpt = Annotated[
    str | None,
    typer.Option(
        "--config",
        metavar="FILE",
        help="Tokenizer config as JSON (channels, multipliers, codebook, ...), for a VQGAN that "
        "is not built in; takes the place of --tokenizer.",
        rich_help_panel=MODEL_PANEL,
    ),
]
CheckpointOpt = Annotated[
    str,
    typer.Option(
        "--checkpoint",
        metavar="FILE",
        help="The tokenizer's weights: taming / Chameleon vqgan.ckpt (Lightning state_dict), "
        "LlamaGen .pt (model / ema), .safetensors, or a Hugging Face conversion.",
        rich_help_panel=MODEL_PANEL,
        show_default=False,
    ),
]
BatchOpt = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Images per model batch. Default: automatic (64 on CUDA, halved on "
        "out-of-memory; 16 on CPU).",
        rich_help_panel=o.RUN_PANEL,
    ),
]
PrecisionOpt = Annotated[
    Precision,
    typer.Option(
        help="`fp32`: the bit-exact reference (TF32 off). `tf32` and `bf16` (autocast; the "
        "codebook distances stay fp32) are faster on CUDA and change a few ids (on CPU, tf32 "
        "is fp32 and bf16 is slower).",
        rich_help_panel=o.RUN_PANEL,
    ),
]
ExifOpt = Annotated[
    bool,
    typer.Option(
        "--exif/--no-exif",
        help="Rotate by the EXIF orientation first (the reference tokenizers do not).",
    ),
]


@handle_errors
@o.dataset_command(output_after="checkpoint")
def tokenize_images(
    checkpoint: CheckpointOpt,
    tokenizer: TokenizerOpt = None,
    config: ConfigOpt = None,
    emit: Annotated[
        Emit | None,
        typer.Option(
            help="`bin`: also write every image's ids as one flat little-endian uint16 file "
            "(uint32 for codebooks over 65,536) plus an offsets index, under "
            "OUT/__mmtok__/vq_stream/ (see the README for a 5-line reader).",
            rich_help_panel=o.IO_PANEL,
        ),
    ] = None,
    boi: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="With --emit bin: put this begin-of-image id before each image's ids.",
            rich_help_panel=o.IO_PANEL,
        ),
    ] = None,
    eoi: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="With --emit bin: put this end-of-image id after each image's ids.",
            rich_help_panel=o.IO_PANEL,
        ),
    ] = None,
    device: o.DeviceOpt = "auto",
    batch_size: BatchOpt = None,
    precision: PrecisionOpt = Precision.FP32,
    exif: ExifOpt = False,
    max_pixels: o.MaxPixelsOpt = DEFAULT_MAX_PIXELS,
    **shared: Any,
) -> None:
    """Turn images into discrete VQ token ids, as early-fusion models see them.

    Adds `vq_ids` (list<uint16>, row-major over the latent grid), `vq_grid_h`, `vq_grid_w` and
    `vq_codebook_size`. Each family's exact preprocessing runs in the CPU workers (Chameleon:
    alpha on white, LANCZOS short side, centre crop); the model runs on --device. The tokenizer
    config and the checkpoint's sha256 go into the manifest and each shard's metadata. Weights
    come from local files only. Unreadable images go to rejects with their reason.

    [bold]Examples[/]

      mmtok tokenize-images data.jsonl -o tok/ --tokenizer chameleon \\
          --checkpoint tokenizer/vqgan.ckpt
      mmtok tokenize-images 'shards/*.tar' -o tok/ -t chameleon \\
          --checkpoint vqgan.ckpt --emit bin --boi 8192 --eoi 8193 \\
          --device cuda --precision bf16
    """
    opts = TokenizeImagesOptions.from_arguments({**locals(), **shared})
    o.run_dataset(opts, build_plan, render, shared)


def render(console: Console, doc: dict[str, Any]) -> None:
    table = Table(title="mmtok tokenize-images", show_header=False, title_justify="left")
    count_rows(table, doc, "tokenized")
    g = doc["grid"]
    table.add_row(
        "tokenizer",
        f"{doc['tokenizer']['name']}: {g[0]}x{g[1]} = {doc['tokens_per_image']:,} ids per image, "
        f"codebook {doc['codebook_size']:,}",
    )
    table.add_row("checkpoint", f"{doc['checkpoint']} (sha256 {doc['checkpoint_sha256'][:12]})")
    table.add_row("tokens", f"{doc['tokens']:,}")
    stream = doc.get("stream")
    if stream:
        table.add_row(
            "stream",
            f"{stream['path']}: {stream['tokens']:,} tokens x {stream['bytes_per_token']} bytes",
        )
    table.add_row("device", f"{doc['device']}, {doc['precision']}, batch {doc['batch_size']}")
    timing = doc.get("timing") or {}
    if timing.get("rows_per_second"):
        table.add_row("speed", f"{timing['rows_per_second']:,.1f} images/s")
    console.print(table)
