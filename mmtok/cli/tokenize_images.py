"""`mmtok tokenize-images`: discrete VQ image tokens (Chameleon, taming VQGAN, LlamaGen / Janus).

This module imports no torch: the tokenizer is resolved, checked and loaded inside the command.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from mmtok.cli import options as o
from mmtok.cli.output import handle_errors
from mmtok.engine.pipeline import publish_output
from mmtok.errors import MmtokError
from mmtok.images import DEFAULT_MAX_PIXELS
from mmtok.io.layout import SIDE_DIR

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
DeviceOpt = Annotated[
    str, typer.Option(help="auto, cpu, cuda or cuda:N.", rich_help_panel=o.RUN_PANEL)
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
MaxPixelsOpt = Annotated[
    int, typer.Option(min=1, help="Pixel limit: larger images are rejected as `bomb`.")
]


def resolve_config(tokenizer: str | None, config: str | None) -> Any:
    """The tokenizer's `VQConfig` from --config FILE or --tokenizer NAME."""
    from mmtok.models.vq import load_config

    if config is None and tokenizer is None:
        raise MmtokError(
            "no tokenizer given", hint="pass --tokenizer chameleon (or another), or --config FILE"
        )
    return load_config(config if config is not None else tokenizer)


@handle_errors
def tokenize_images(
    inputs: o.InputsArg,
    checkpoint: CheckpointOpt,
    output: o.OutputOpt = None,
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
    device: DeviceOpt = "auto",
    batch_size: BatchOpt = None,
    precision: PrecisionOpt = Precision.FP32,
    exif: ExifOpt = False,
    max_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
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
    common = o.DatasetOptions.pick(locals())
    if (boi is not None or eoi is not None) and emit is not Emit.BIN:
        raise MmtokError("--boi and --eoi wrap the ids of --emit bin", hint="add --emit bin")
    if emit is Emit.BIN and (output is None or output == "-"):
        raise MmtokError("--emit bin writes files into the output folder", hint="give -o DIR")
    from mmtok.models.runtime import resolve_device
    from mmtok.stages.vq import VQInputStage, VQTokenizeStage, check_checkpoint_file
    from mmtok.vq_stream import STREAM_DIR, check_markers, write_stream

    check_checkpoint_file(checkpoint)
    vq = resolve_config(tokenizer, config)
    check_markers(vq.codebook_size, boi, eoi)
    stage = VQTokenizeStage(
        vq,
        checkpoint,
        device=resolve_device(device),
        batch_size=batch_size,
        precision=precision.value,
    )
    stage.setup()  # a checkpoint that does not fit fails here, before any data is read
    manifest, out, reporter = o.run_dataset(
        common,
        [VQInputStage(vq, exif=exif, max_pixels=max_pixels), stage],
        f"tokenizing with {vq.name}",
        [],
        batch_rows=stage.rows_per_batch,
        hold=emit is Emit.BIN,  # the stream goes into the folder before it is published
    )
    stream = None
    if emit is Emit.BIN:
        written: dict[str, Any] = {}

        def write(folder: Path) -> None:
            written.update(write_stream(folder, codebook_size=vq.codebook_size, boi=boi, eoi=eoi))

        publish_output(out, {STREAM_DIR: write})
        stream = {"path": str(Path(out.path) / SIDE_DIR / STREAM_DIR), **written}
    document = {
        "output": out.path if out else None,
        "tokenizer": vq.to_dict(),
        "checkpoint": checkpoint,
        "checkpoint_sha256": stage.checkpoint_sha256,
        "tokens_per_image": vq.tokens,
        "grid": [vq.grid, vq.grid],
        "codebook_size": vq.codebook_size,
        "device": stage.device,
        "precision": stage.precision_name,
        "batch_size": stage.rows_per_batch,
        "batch_halvings": stage.halvings,
        "counts": manifest["counts"],
        "tokens": manifest["counts"]["out"] * vq.tokens,
        "timing": manifest.get("timing"),
        "stream": stream,
    }
    reporter.result(document, lambda console: render(console, document))


def render(console: Console, doc: dict[str, Any]) -> None:
    counts = doc["counts"]
    table = Table(title="mmtok tokenize-images", show_header=False, title_justify="left")
    table.add_row("rows in", f"{counts['in']:,}")
    table.add_row("tokenized", f"{counts['out']:,}")
    table.add_row("rejected", f"{counts['rejected']:,}")
    for reason, n in (counts.get("rejected_by_reason") or {}).items():
        table.add_row(f"  {reason}", f"{n:,}")
    if doc["output"]:
        table.add_row("output", str(doc["output"]))
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
