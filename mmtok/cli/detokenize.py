"""`mmtok detokenize`: VQ ids back to images, to see what a tokenizer keeps.

This module imports no torch: the tokenizer is resolved, checked and loaded inside the command.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from rich.console import Console
from rich.table import Table

from mmtok.cli import options as o
from mmtok.cli.output import handle_errors
from mmtok.cli.tokenize_images import (
    BatchOpt,
    CheckpointOpt,
    ConfigOpt,
    DeviceOpt,
    ExifOpt,
    MaxPixelsOpt,
    Precision,
    PrecisionOpt,
    TokenizerOpt,
    resolve_config,
)
from mmtok.engine.pipeline import Observer
from mmtok.images import DEFAULT_MAX_PIXELS
from mmtok.stats import PercentileSample


class PsnrSummary:
    """Mean and percentiles of `psnr` over the rows that still had their source image."""

    columns = ["psnr"]

    def __init__(self):
        self.sample = PercentileSample()
        self.total = 0.0
        self.identical = 0

    def add(self, table: pa.Table) -> None:
        values = table.column("psnr").to_numpy(zero_copy_only=False).astype(np.float64)
        values = values[~np.isnan(values)]
        finite = values[np.isfinite(values)]
        self.identical += len(values) - len(finite)  # inf: the decoded image is the source
        self.sample.add(finite)
        self.total += float(finite.sum())

    def to_dict(self) -> dict[str, Any]:
        n = self.sample.count
        return {
            "rows": n + self.identical,
            "identical": self.identical,
            "mean_db": self.total / n if n else None,
            "percentiles_db": self.sample.percentiles((5, 50, 95)),
        }


@handle_errors
def detokenize(
    inputs: o.InputsArg,
    checkpoint: CheckpointOpt,
    output: o.OutputOpt = None,
    tokenizer: TokenizerOpt = None,
    config: ConfigOpt = None,
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
    common = o.DatasetOptions.pick(locals())
    from mmtok.models.runtime import resolve_device
    from mmtok.stages.vq import DetokenizeInputStage, DetokenizeStage, check_checkpoint_file

    check_checkpoint_file(checkpoint)
    vq = resolve_config(tokenizer, config)
    stage = DetokenizeStage(
        vq,
        checkpoint,
        device=resolve_device(device),
        batch_size=batch_size,
        precision=precision.value,
    )
    stage.setup()  # a checkpoint without the decoder fails here, before any data is read
    summary = PsnrSummary()
    manifest, out, reporter = o.run_dataset(
        common,
        [DetokenizeInputStage(vq, exif=exif, max_pixels=max_pixels), stage],
        f"decoding with {vq.name}",
        [Observer(PsnrSummary.columns, summary.add)],
        batch_rows=stage.rows_per_batch,
    )
    document = {
        "output": out.path if out else None,
        "tokenizer": vq.to_dict(),
        "checkpoint": checkpoint,
        "checkpoint_sha256": stage.checkpoint_sha256,
        "resolution": vq.resolution,
        "device": stage.device,
        "precision": stage.precision_name,
        "counts": manifest["counts"],
        "timing": manifest.get("timing"),
        "psnr": summary.to_dict(),
    }
    reporter.result(document, lambda console: render(console, document))


def render(console: Console, doc: dict[str, Any]) -> None:
    counts, p = doc["counts"], doc["psnr"]
    table = Table(title="mmtok detokenize", show_header=False, title_justify="left")
    table.add_row("rows in", f"{counts['in']:,}")
    table.add_row("decoded", f"{counts['out']:,}")
    table.add_row("rejected", f"{counts['rejected']:,}")
    for reason, n in (counts.get("rejected_by_reason") or {}).items():
        table.add_row(f"  {reason}", f"{n:,}")
    if doc["output"]:
        table.add_row("output", str(doc["output"]))
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
