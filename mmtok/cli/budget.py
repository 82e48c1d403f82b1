"""`mmtok estimate-budget`: vision tokens and bytes per token for a dataset, per model preset."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from mmtok.cli import options as o
from mmtok.cli.output import handle_errors
from mmtok.cli.presets import PresetFileOpt
from mmtok.commands import build_plan
from mmtok.commands.budget import BudgetOptions
from mmtok.images import DEFAULT_MAX_PIXELS

PROJECTION = "Projection"


@handle_errors
@o.dataset_command(output_after="preset")
def estimate_budget(
    preset: Annotated[
        list[str],
        typer.Option(
            "--preset", "-p", help="Model preset (repeat to compare): name or name:key=value."
        ),
    ],
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
    **shared: Any,
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
    opts = BudgetOptions.from_arguments({**locals(), **shared})
    o.run_dataset(opts, build_plan, render, shared)


def render(console: Any, doc: dict[str, Any]) -> None:
    from mmtok.budget_report import render as render_report  # rich: only to print tables

    render_report(console, doc)
    render_videos(console, doc)


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
