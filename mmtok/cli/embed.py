"""`mmtok embed`: CLIP/SigLIP image (and caption) embeddings over a dataset.

This module imports no torch: the model is resolved, checked and loaded inside the command.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import pyarrow as pa
import typer
from rich.console import Console
from rich.table import Table

from mmtok.cli import options as o
from mmtok.cli.output import handle_errors
from mmtok.engine.pipeline import Observer, publish_output
from mmtok.errors import MmtokError
from mmtok.images import DEFAULT_MAX_PIXELS
from mmtok.io.layout import SIDE_DIR
from mmtok.stats import PercentileSample

MODEL_PANEL = o.MODEL_PANEL


class Precision(StrEnum):
    AUTO = "auto"  # bf16 autocast on CUDA, fp32 on CPU
    FP32 = "fp32"
    BF16 = "bf16"


class Emit(StrEnum):
    NPY = "npy"  # also clip-retrieval's img_emb/ text_emb/ metadata/ layout


class ScoreSummary:
    """Mean and percentiles of `clip_score` over the embedded rows."""

    columns = ["clip_score"]

    def __init__(self):
        self.sample = PercentileSample()
        self.total = 0.0

    def add(self, table: pa.Table) -> None:
        values = table.column("clip_score").to_numpy(zero_copy_only=False)
        self.sample.add(values)
        self.total += float(sum(v for v in values if v == v))

    def to_dict(self) -> dict[str, Any]:
        n = self.sample.count
        return {
            "scored": n,
            "mean": self.total / n if n else None,
            "percentiles": self.sample.percentiles((5, 50, 95)),
        }


@handle_errors
def embed(
    inputs: o.InputsArg,
    model: o.ModelOpt,
    output: o.OutputOpt = None,
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
    common = o.DatasetOptions.pick(locals())
    if min_clip_score is not None and not text:
        raise MmtokError("--min-clip-score needs --text (the score compares image and caption)")
    if emit is Emit.NPY and (output is None or output == "-"):
        raise MmtokError("--emit npy writes files next to the shards", hint="give -o DIR")
    from mmtok.models.clip import resolve_model
    from mmtok.models.inputs import ModelInputStage
    from mmtok.models.runtime import resolve_device
    from mmtok.stages.embed import EmbedStage

    resolved = resolve_model(
        model, checkpoint=checkpoint, pretrained_tag=pretrained_tag, preprocess=preprocess
    )
    chosen_device = resolve_device(device)
    if gpu_decode and not chosen_device.startswith("cuda"):
        raise MmtokError("--gpu-decode needs a CUDA device", hint="leave it out on CPU")
    if gpu_decode and exif:
        raise MmtokError("--gpu-decode does not rotate by EXIF", hint="leave out --exif")
    stage = EmbedStage(
        resolved,
        text=text,
        device=chosen_device,
        device_decode=gpu_decode,
        batch_size=batch_size,
        precision=precision.value,
        min_clip_score=min_clip_score,
    )
    stage.setup()  # a checkpoint that does not fit fails here, before any data is read
    scores = ScoreSummary()
    observers = [Observer(ScoreSummary.columns, scores.add)] if text else []
    manifest, out, reporter = o.run_dataset(
        common,
        [
            ModelInputStage(
                resolved.preprocess, exif=exif, max_pixels=max_pixels, device_decode=gpu_decode
            ),
            stage,
        ],
        f"embedding with {model}",
        observers,
        batch_rows=stage.rows_per_batch,
        hold=emit is Emit.NPY,  # the export goes into the folder before it is published
    )
    exported = None
    if emit is Emit.NPY:
        from mmtok.models.interchange import EXPORT_DIR, export_clip_retrieval

        publish_output(out, {EXPORT_DIR: export_clip_retrieval})
        exported = str(Path(out.path) / SIDE_DIR / EXPORT_DIR)
    document = {
        "output": out.path if out else None,
        "clip_retrieval": exported,
        "model": resolved.info(),
        "dim": stage.dim,
        "device": stage.device,
        "precision": stage.precision_name,
        "batch_size": stage.rows_per_batch,
        "batch_halvings": stage.halvings,
        "counts": manifest["counts"],
        "timing": manifest.get("timing"),
        "clip_score": scores.to_dict() if text else None,
    }
    reporter.result(document, lambda console: render(console, document))


def render(console: Console, doc: dict[str, Any]) -> None:
    counts, info = doc["counts"], doc["model"]
    table = Table(title="mmtok embed", show_header=False, title_justify="left")
    table.add_row("rows in", f"{counts['in']:,}")
    table.add_row("embedded", f"{counts['out']:,}")
    table.add_row("rejected", f"{counts['rejected']:,}")
    for reason, n in (counts.get("rejected_by_reason") or {}).items():
        table.add_row(f"  {reason}", f"{n:,}")
    if doc["output"]:
        table.add_row("output", str(doc["output"]))
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
