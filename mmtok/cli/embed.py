"""`mmtok embed`: CLIP/SigLIP image (and caption) embeddings over a dataset.

This module imports no torch: the model is resolved, checked and loaded by the plan.
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
from mmtok.commands.embed import EmbedOptions
from mmtok.images import DEFAULT_MAX_PIXELS

MODEL_PANEL = o.MODEL_PANEL


class Precision(StrEnum):
    AUTO = "auto"  # bf16 autocast on CUDA, fp32 on CPU
    FP32 = "fp32"
    BF16 = "bf16"


class Emit(StrEnum):
    NPY = "npy"  # also clip-retrieval's img_emb/ text_emb/ metadata/ layout


@handle_errors
@o.dataset_command(output_after="model")
def embed(
    model: o.ModelOpt,
    checkpoint: o.CheckpointOpt = None,
    pretrained_tag: o.PretrainedTagOpt = None,
    preprocess: o.PreprocessOpt = None,
    text: Annotated[
        bool,
        typer.Option(
            "--text", help="Also embed captions, and add clip_score.", rich_help_panel=MODEL_PANEL
        ),
    ] = False,
    min_clip_score: Annotated[
        float | None,
        typer.Option(
            help="With --text: reject rows whose clip_score is below this (`low_clip_score`; "
            "rows without a caption go as `no_caption`). DataComp used 0.28 / 0.3 with "
            "OpenAI ViT-L-14 / ViT-B-32.",
            rich_help_panel=MODEL_PANEL,
        ),
    ] = None,
    emit: Annotated[
        Emit | None,
        typer.Option(
            help="`npy`: also write clip-retrieval's layout (img_emb/, text_emb/, metadata/; "
            "float16 .npy per shard, same row order) under OUT/__mmtok__/clip_retrieval/, "
            "for autofaiss.",
            rich_help_panel=o.IO_PANEL,
        ),
    ] = None,
    device: o.DeviceOpt = "auto",
    batch_size: o.BatchSizeOpt = None,
    gpu_decode: Annotated[
        bool,
        typer.Option(
            "--gpu-decode",
            help="CUDA only: decode baseline JPEGs in batches on the GPU (nvJPEG) and resize "
            "them there (antialiased, within 1-2 levels of Pillow); other images on the CPU. "
            "Adds a decode_path column. For models the CPU cannot feed (ViT-B/32).",
            rich_help_panel=o.RUN_PANEL,
        ),
    ] = False,
    precision: Annotated[
        Precision,
        typer.Option(
            help="`auto` (bf16 autocast on CUDA, fp32 on CPU), `fp32` (also turns TF32 off) "
            "or `bf16`.",
            rich_help_panel=o.RUN_PANEL,
        ),
    ] = Precision.AUTO,
    exif: Annotated[
        bool,
        typer.Option(
            "--exif/--no-exif",
            help="Rotate by the EXIF orientation first (open_clip does not).",
        ),
    ] = False,
    max_pixels: o.MaxPixelsOpt = DEFAULT_MAX_PIXELS,
    **shared: Any,
) -> None:
    """Embed images (and with [bold]--text[/] captions) with a CLIP-family model.

    Adds `image_embedding` (l2-normalised, float16[D]); with --text also `text_embedding` and
    `clip_score` (their cosine). The model's name, tag, checkpoint sha256, precision and
    preprocessing go into the manifest and each shard's metadata. Weights come from local files
    only: mmtok never downloads. Unreadable images go to rejects with their reason.

    [bold]Examples[/]

      mmtok embed data.jsonl -o emb/ --model local-dir:models/ViT-B-32 --text
      mmtok embed data.jsonl -o emb/ --model ViT-B-32 \\
          --checkpoint b32.safetensors --pretrained-tag laion2b_s34b_b79k
      mmtok embed 'shards/*.tar' -o emb/ --model ViT-L-14-quickgelu \\
          --pretrained-tag openai
    """
    opts = EmbedOptions.from_arguments({**locals(), **shared})
    o.run_dataset(opts, build_plan, render, shared)


def render(console: Console, doc: dict[str, Any]) -> None:
    info = doc["model"]
    table = Table(title="mmtok embed", show_header=False, title_justify="left")
    count_rows(table, doc, "embedded")
    table.add_row(
        "model", info["model"] + (f" / {info['pretrained_tag']}" if info["pretrained_tag"] else "")
    )
    table.add_row("checkpoint", f"{info['checkpoint']} (sha256 {info['checkpoint_sha256'][:12]})")
    p = info["preprocess"]
    table.add_row(
        "preprocess",
        f"{p['size'][0]}x{p['size'][1]} {p['resize_mode']} {p['interpolation']}, "
        f"mean {tuple(round(m, 4) for m in p['mean'])} ({info['preprocess_source']})",
    )
    table.add_row("device", f"{doc['device']}, {doc['precision']}, batch {doc['batch_size']}")
    timing = doc.get("timing") or {}
    if timing.get("rows_per_second"):
        table.add_row("speed", f"{timing['rows_per_second']:,.1f} rows/s")
    score = doc.get("clip_score")
    if score and score["scored"]:
        q = score["percentiles"]
        table.add_row(
            "clip_score",
            f"mean {score['mean']:.4f}; p5 {q['p5']:.4f}, p50 {q['p50']:.4f}, p95 {q['p95']:.4f}",
        )
    console.print(table)
