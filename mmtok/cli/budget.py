"""`mmtok estimate-budget`: vision tokens and bytes per token for a dataset, per model preset."""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated, Any

import numpy as np
import pyarrow as pa
import typer

from mmtok import budget as b
from mmtok.budget_report import render
from mmtok.cli import options as o
from mmtok.cli.output import handle_errors
from mmtok.cli.presets import PresetFileOpt
from mmtok.engine.pipeline import Observer, publish_output
from mmtok.errors import MmtokError
from mmtok.images import DEFAULT_MAX_PIXELS
from mmtok.images.probe import SWAPS_SIDES
from mmtok.io.layout import BUDGET_FILE
from mmtok.io.sample import SampledInputs
from mmtok.presets import get_preset, load_preset_file
from mmtok.stages.budget import BudgetStage, MediaBudgetStage, VideoBudgetStage
from mmtok.stages.probe import ProbeStage
from mmtok.stats import RowSample
from mmtok.text import TextCounter

PROJECTION = "Projection"


class ShardBudget:
    """Per-shard sums per preset, for each shard's Parquet key-value metadata."""

    def __init__(self, labels: list[str], context: int | None):
        self.labels, self.context = labels, context
        self.tallies: dict[str, b.Sums] = {}

    def add(self, kept: pa.Table) -> None:
        for label in self.labels:
            arrays, _ = b.row_arrays(kept, label, self.context)
            if arrays is not None:
                self.tallies[label] = self.tallies.get(label, b.Sums()) + b.Sums.of(arrays)

    def take(self) -> dict[str, str]:
        doc = {label: dataclasses.asdict(s) for label, s in self.tallies.items()}
        self.tallies = {}
        return {"mmtok_budget": json.dumps(doc)}


@handle_errors
def estimate_budget(
    inputs: o.InputsArg,
    preset: Annotated[
        list[str],
        typer.Option(
            "--preset", "-p", help="Model preset (repeat to compare): name or name:key=value."
        ),
    ],
    output: o.OutputOpt = None,
    preset_file: PresetFileOpt = None,
    tokenizer: Annotated[
        str | None,
        typer.Option(help="tokenizer.json or tiktoken BPE file for exact caption tokens."),
    ] = None,
    decode: Annotated[
        bool, typer.Option("--decode", help="Fully decode every image to verify it (slower).")
    ] = False,
    sample: Annotated[
        int | None,
        typer.Option(min=1, help="Estimate from N random rows (seeded) with 95% intervals."),
    ] = None,
    seed: Annotated[int, typer.Option(min=0, help="Seed of --sample and the bootstrap.")] = 0,
    context: Annotated[
        int | None, typer.Option(min=1, help="Context length: overflow rows, packing.")
    ] = None,
    target_tokens: Annotated[
        float | None,
        typer.Option(
            callback=o.positive,
            help="Compute tokens to train on (e.g. 1e12).",
            rich_help_panel=PROJECTION,
        ),
    ] = None,
    samples: Annotated[
        float | None,
        typer.Option(
            callback=o.positive,
            help="Samples to train on, instead of --target-tokens.",
            rich_help_panel=PROJECTION,
        ),
    ] = None,
    gpus: Annotated[
        int | None,
        typer.Option(min=1, help="GPUs that train together.", rich_help_panel=PROJECTION),
    ] = None,
    tokens_per_gpu_second: Annotated[
        float | None,
        typer.Option(
            callback=o.positive,
            help="Training throughput per GPU, in tokens per second.",
            rich_help_panel=PROJECTION,
        ),
    ] = None,
    read_gbps: Annotated[
        float | None,
        typer.Option(
            callback=o.positive,
            help="Storage read rate in GB/s (bytes) for epoch read time.",
            rich_help_panel=PROJECTION,
        ),
    ] = None,
    embed_dim: Annotated[
        int | None,
        typer.Option(min=1, help="Also price precomputed fp16 embeddings of this width."),
    ] = None,
    image_embed_dim: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Also price one fp16 embedding of this width per image, as mmtok embed stores "
            "it (512: ViT-B-32, 768: ViT-L-14).",
        ),
    ] = None,
    suggest: Annotated[
        bool,
        typer.Option("--suggest", help="Search each preset's size parameter to fit --context."),
    ] = False,
    fit_share: Annotated[
        float,
        typer.Option(callback=o.share, help="Share of rows --suggest fits: above 0, at most 1."),
    ] = 0.99,
    max_image_tokens: Annotated[
        int | None, typer.Option(min=1, help="--suggest: cap on image tokens.")
    ] = None,
    images_per_sample: Annotated[
        int, typer.Option(min=1, help="--suggest: images per sample.")
    ] = 1,
    plot: Annotated[str | None, typer.Option(help="Write histograms and bars to this PNG.")] = None,
    exif: Annotated[
        bool, typer.Option("--exif/--no-exif", help="Lay out EXIF-rotated sizes.")
    ] = True,
    max_pixels: Annotated[
        int, typer.Option(min=1, help="Larger images are rejected as `bomb`.")
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
    """Vision tokens, text tokens and bytes per token for a dataset under each preset.

    From image headers only (add --decode to verify every image). Prints, per preset side by
    side: tokens (total, mean, percentiles), bytes per vision token and how predictable it is
    (CV), bytes to read per epoch in each storage form, the vision share of tokens; with
    --context the rows that overflow; with a target and a fleet the bytes and bandwidth the
    loader must sustain. `--json` prints one document (schema in the README).

    [bold]Examples[/]

      mmtok estimate-budget data.jsonl -p llama3-336 -p qwen2-vl -p kimi-vl
      mmtok estimate-budget 'shards/*.tar' -p qwen2-vl --sample 10000 \\
          --context 8192 --suggest
      mmtok estimate-budget data.jsonl -p mllama --target-tokens 1e12 \\
          --gpus 1024 --tokens-per-gpu-second 3000 --read-gbps 20 --json
    """
    common = o.DatasetOptions.pick(locals())
    if preset_file:
        load_preset_file(preset_file)
    presets = {spec: get_preset(spec) for spec in dict.fromkeys(preset)}
    if suggest and not context:
        raise MmtokError("--suggest needs --context")
    if target_tokens and samples:
        raise MmtokError("give --target-tokens or --samples, not both")
    if bool(gpus) != bool(tokens_per_gpu_second):
        raise MmtokError("--gpus and --tokens-per-gpu-second go together")
    if plot:
        o.require_module("matplotlib", "plot", "--plot")
        o.writable_file(plot, "--plot", output)
    text = TextCounter(tokenizer).setup()
    opts = b.Options(
        context=context,
        target_tokens=target_tokens,
        samples=samples,
        gpus=gpus,
        tokens_per_gpu_second=tokens_per_gpu_second,
        read_gbps=read_gbps,
        embed_dim=embed_dim,
        image_embed_dim=image_embed_dim,
        text_bytes_per_token=text.bytes_per_id,
    )
    tallies = {
        label: b.PresetTally(p, arrays=[] if sample else None) for label, p in presets.items()
    }
    rows = RowSample(3, seed=seed)
    columns = ["file_bytes", "rgb_bytes", "text_tokens", "width", "height", "exif_orientation"]

    def observe(table: pa.Table) -> None:
        for label, tally in tallies.items():
            tally.add(table, label, context)
        if suggest and table.num_rows:
            w = table.column("width").to_numpy(zero_copy_only=False)
            h = table.column("height").to_numpy(zero_copy_only=False)
            o_ = table.column("exif_orientation").to_pylist()
            swap = np.array([exif and v in SWAPS_SIDES for v in o_], dtype=bool)
            t = table.column("text_tokens").to_numpy(zero_copy_only=False)
            rows.add(np.stack([np.where(swap, h, w), np.where(swap, w, h), t], axis=1))

    sampled: list[SampledInputs] = []

    def wrap(inputs):
        sampled.append(SampledInputs(inputs, sample, seed))
        return sampled[0]

    budget_stage = BudgetStage(presets, text, context=context, apply_exif=exif)
    stages = [
        # videos among the images: their costs from the container alone (stages/budget.py)
        MediaBudgetStage(
            [ProbeStage(max_pixels=max_pixels, decode_check=decode), budget_stage],
            VideoBudgetStage(budget_stage),
        )
    ]
    videos = VideoSummary(list(presets))
    manifest, out, reporter = o.run_dataset(
        common,
        stages,
        "estimating the budget",
        [Observer(columns + list(presets), observe), Observer(videos.columns, videos.add)],
        wrap_inputs=wrap if sample else None,
        shard_stats=ShardBudget(list(presets), context),
        hold=True,  # budget.json goes into the folder before it is published
        videos=True,
    )
    counts = manifest["counts"]
    total_rows = sampled[0].total_rows if sampled else counts["in"]
    scale = total_rows / counts["in"] if counts["in"] else 1.0
    doc: dict[str, Any] = {
        "output": out.path if out else None,
        "input": {
            "rows": total_rows,
            "rows_read": counts["in"],
            "sampled": bool(sample),
            "seed": seed if sample else None,
            "rejected": counts["rejected"],
            "rejected_by_reason": counts.get("rejected_by_reason", {}),
        },
        "text_tokens": {
            "method": text.label,
            "exact": text.exact,
            "bytes_per_id": text.bytes_per_id,
        },
        "options": {k: v for k, v in dataclasses.asdict(opts).items() if v is not None},
        "presets": {},
        "counts": counts,
        "timing": manifest.get("timing"),
    }
    for label, tally in tallies.items():
        entry = {
            "preset": tally.preset.spec(),
            "rejected": counts["rejected"] + tally.refused,
            "refused": tally.refused,
            **b.figures(tally.sums, scale, tally.preset, opts),
            **(b.distribution(tally) if tally.sums.rows else {}),
        }
        if sample:
            entry["ci95"] = b.bootstrap(tally.arrays, scale, tally.preset, opts, seed=seed)
        if suggest:
            entry["suggest"] = b.suggest(
                tally.preset,
                rows,
                context=context,
                share=fit_share,
                max_image_tokens=max_image_tokens,
                images_per_sample=images_per_sample,
            )
        doc["presets"][label] = entry
    doc["comparison"] = b.comparison(doc["presets"])
    if videos.videos:
        doc["videos"] = videos.to_dict()
    if plot:
        doc["plot"] = {"path": plot, "panels": _plot(plot, tallies, doc)}
    publish_output(out, {BUDGET_FILE: doc})
    reporter.result(doc, lambda console: (render(console, doc), render_videos(console, doc)))


def _plot(path, tallies, doc) -> int:
    from mmtok.plot import plot_budget

    return plot_budget(path, tallies, doc)


class VideoSummary:
    """The video rows of a mixed dataset: per preset, frames sampled and vision tokens."""

    def __init__(self, labels: list[str]):
        self.labels = labels
        self.columns = ["media", "video_duration", "file_bytes", *labels]
        self.videos = 0
        self.seconds = 0.0
        self.file_bytes = 0
        self.per_preset = {
            label: {"videos": 0, "refused": 0, "seconds": 0.0, "frames": 0, "vision_tokens": 0,
                    "pixel_bytes_uint8": 0, "file_bytes": 0}
            for label in labels
        }  # fmt: skip

    def add(self, table: pa.Table) -> None:
        if table.num_rows == 0 or "media" not in table.column_names:
            return
        rows = table.filter(pa.compute.equal(table.column("media"), "video"))
        if rows.num_rows == 0:
            return
        self.videos += rows.num_rows
        seconds = [d or 0.0 for d in rows.column("video_duration").to_pylist()]
        self.seconds += sum(seconds)
        sizes = rows.column("file_bytes").to_pylist()
        self.file_bytes += sum(sizes)
        for label in self.labels:
            tally = self.per_preset[label]
            costs = rows.column(label).to_pylist()
            for size, second, cost in zip(sizes, seconds, costs, strict=True):
                if cost is None or cost["error"] is not None:
                    tally["refused"] += 1
                    continue
                tally["videos"] += 1
                tally["seconds"] += second
                tally["frames"] += cost["num_tiles"]
                tally["vision_tokens"] += cost["image_tokens"]
                tally["pixel_bytes_uint8"] += cost["pixel_bytes_uint8"]
                tally["file_bytes"] += size

    def to_dict(self) -> dict[str, Any]:
        presets = {}
        for label, t in self.per_preset.items():
            n, tokens = t["videos"], t["vision_tokens"]
            presets[label] = {
                **t,
                "mean_frames": t["frames"] / n if n else None,
                "mean_vision_tokens": tokens / n if n else None,
                "vision_tokens_per_second": tokens / t["seconds"] if t["seconds"] else None,
                "file_bytes_per_token": t["file_bytes"] / tokens if tokens else None,
                "frame_bytes_per_token": t["pixel_bytes_uint8"] / tokens if tokens else None,
            }
        return {
            "videos": self.videos,
            "seconds": round(self.seconds, 3),
            "file_bytes": self.file_bytes,
            "presets": presets,
        }


def render_videos(console: Any, doc: dict[str, Any]) -> None:
    """The video rows' figures, after the report (which counts them among the rows)."""
    from rich.table import Table

    videos = doc.get("videos")
    if not videos:
        return
    table = Table(
        title=f"Videos among the rows: {videos['videos']:,} ({videos['seconds']:,.1f} s), "
        "from container metadata",
        title_justify="left",
    )
    table.add_column("")
    for label in videos["presets"]:
        table.add_column(label, justify="right")
    p = videos["presets"].values()

    def row(name: str, key: str, fmt: str) -> None:
        table.add_row(name, *("-" if v[key] is None else format(v[key], fmt) for v in p))

    row("videos counted", "videos", ",")
    row("refused (no video rule, too short)", "refused", ",")
    row("frames sampled, mean", "mean_frames", ",.1f")
    row("vision tokens, total", "vision_tokens", ",")
    row("vision tokens per video, mean", "mean_vision_tokens", ",.0f")
    row("vision tokens per second of video", "vision_tokens_per_second", ",.1f")
    row("file bytes per token", "file_bytes_per_token", ",.1f")
    row("frame bytes (uint8, as fed) per token", "frame_bytes_per_token", ",.1f")
    console.print(table)
