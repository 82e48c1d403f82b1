"""`mmtok sample-frames`: videos in, one image row per sampled frame out."""

from __future__ import annotations

import inspect
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mmtok.cli import options as o
from mmtok.cli.output import handle_errors
from mmtok.commands import build_plan
from mmtok.commands.sample_frames import (
    DEFAULT_RECYCLE_AFTER,
    DEFAULT_TIMEOUT,
    SampleFramesOptions,
)
from mmtok.video.sampling import VIDEO_PRESETS, Pick, Rounding

SAMPLING_PANEL = "Sampling"


class Decoder(StrEnum):
    AUTO = "auto"
    DECORD = "decord"
    PYAV = "pyav"


class FrameFormat(StrEnum):
    JPEG = "jpeg"
    PNG = "png"
    RAW = "raw"


def _preset_name(value: str | None) -> str | None:
    if value is not None and value not in VIDEO_PRESETS:
        raise typer.BadParameter(f"{value!r}; video presets: {', '.join(VIDEO_PRESETS)}")
    return value


VideosArg = Annotated[
    list[str],
    typer.Argument(
        help="Videos: video files, folders of them, .jsonl/.csv/.parquet lists with a video "
        "column (--video-col), WebDataset .tar shards with .mp4/.mkv/.webm/.mov/.avi members.",
        show_default=False,
    ),
]
TimeoutOpt = Annotated[
    float,
    typer.Option(
        "--timeout",
        "--row-timeout",
        min=0.1,
        metavar="SECONDS",
        help="Wall-clock seconds per video: a decoder that hangs is killed and the video "
        "rejected as `timeout` (after one retry with PyAV when decord hung); one that "
        "kills its process is `decoder_crash`. The run goes on.",
        rich_help_panel=o.RUN_PANEL,
    ),
]


@handle_errors
@o.dataset_command(
    shared={
        "inputs": (VideosArg, inspect.Parameter.empty),
        "image_col": None,  # --video-col
        "image_bytes": None,  # frames are always bytes
        "row_timeout": (TimeoutOpt, DEFAULT_TIMEOUT),
    }
)
def sample_frames(
    preset: Annotated[
        str | None,
        typer.Option(
            "--preset",
            "-p",
            callback=_preset_name,
            help="A model's video rule: " + ", ".join(VIDEO_PRESETS) + ". Also counts the "
            "vision tokens of each video in videos.parquet.",
            rich_help_panel=SAMPLING_PANEL,
        ),
    ] = None,
    num_frames: Annotated[
        int | None,
        typer.Option(min=1, help="N frames evenly spread in time.", rich_help_panel=SAMPLING_PANEL),
    ] = None,
    fps: Annotated[
        float | None,
        typer.Option(
            callback=o.positive,
            help="Frames per second of video (Qwen's rule: duration x F frames, within "
            "--min-frames/--max-frames, a multiple of --frame-multiple, evenly spread).",
            rich_help_panel=SAMPLING_PANEL,
        ),
    ] = None,
    min_frames: Annotated[
        int | None, typer.Option(min=1, help="With --fps.", rich_help_panel=SAMPLING_PANEL)
    ] = None,
    max_frames: Annotated[
        int | None, typer.Option(min=1, help="With --fps.", rich_help_panel=SAMPLING_PANEL)
    ] = None,
    frame_multiple: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="With --fps: the count is a multiple of this.",
            rich_help_panel=SAMPLING_PANEL,
        ),
    ] = None,
    segments: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="K equal segments, one frame from each (--pick).",
            rich_help_panel=SAMPLING_PANEL,
        ),
    ] = None,
    pick: Annotated[
        Pick,
        typer.Option(
            help="With --segments: `middle` frame (InternVL), `first` (Video-LLaMA) or a "
            "seeded `random` one.",
            rich_help_panel=SAMPLING_PANEL,
        ),
    ] = Pick.MIDDLE,
    seed: Annotated[
        int, typer.Option(help="With --pick random.", rich_help_panel=SAMPLING_PANEL)
    ] = 0,
    timestamps: Annotated[
        str | None,
        typer.Option(
            metavar="T1,T2,...",
            help="The frames at these times (seconds from the first frame).",
            rich_help_panel=SAMPLING_PANEL,
        ),
    ] = None,
    rounding: Annotated[
        Rounding | None,
        typer.Option(
            help="How a time picks a frame: `round` = the nearest frame (Qwen, Llama), `floor` "
            "= the frame on screen then (LLaVA). Default: the preset's, else round.",
            rich_help_panel=SAMPLING_PANEL,
        ),
    ] = None,
    start: Annotated[
        float | None,
        typer.Option(
            min=0.0, help="Sample only from this second on.", rich_help_panel=SAMPLING_PANEL
        ),
    ] = None,
    end: Annotated[
        float | None,
        typer.Option(
            min=0.0, help="Sample only up to this second.", rich_help_panel=SAMPLING_PANEL
        ),
    ] = None,
    decoder: Annotated[
        Decoder,
        typer.Option(
            help="`auto`: `decord` where it is exact, `pyav` for AV1, open GOP, edit lists "
            "and miscounted files.",
        ),
    ] = Decoder.AUTO,
    frame_format: Annotated[
        FrameFormat,
        typer.Option(
            help="`jpeg` (quality 95, 4:4:4), `png`, or `raw` RGB bytes in a `pixels` column "
            "(no `image`: for model pipelines, not for other mmtok commands).",
        ),
    ] = FrameFormat.JPEG,
    max_side: Annotated[
        int | None,
        typer.Option(min=1, help="Shrink frames whose longer side is above this (bicubic)."),
    ] = None,
    video_col: Annotated[
        str,
        typer.Option(
            metavar="NAME", help="Column with the video path or bytes.", rich_help_panel=o.IO_PANEL
        ),
    ] = "video",
    recycle_after: Annotated[
        int,
        typer.Option(
            min=1,
            metavar="N",
            help="Replace each worker process after N videos, so that what a decoder leaks "
            "cannot pile up.",
            rich_help_panel=o.RUN_PANEL,
        ),
    ] = DEFAULT_RECYCLE_AFTER,
    **shared: Any,
) -> None:
    """Sample frames from videos: one image row per frame, by presented timestamp.

    Frames are chosen from the time each frame is shown (never from the header's average frame
    rate, which is wrong on variable-rate files) and decoded exactly: decord where it is exact,
    PyAV for the files decord gets wrong (AV1, open GOP, edit lists). Each frame row is an image
    row every mmtok command reads (tile, estimate-budget, filter, dedup), with video_id,
    frame_index, pts_s, time_s, requested_s and decoder. One row per video (probe facts,
    decoder and why, warnings, vision tokens under --preset) goes to __mmtok__/videos.parquet.
    Bad files are rejects: empty_file, not_video, no_video_stream, unsupported_codec,
    truncated, too_short, timeout, decoder_crash.

    [bold]Examples[/]

      mmtok sample-frames clips/ --num-frames 16 -o frames/
      mmtok sample-frames clips/ --preset qwen2-vl -o frames/
      mmtok tile frames/ --preset qwen2-vl
      mmtok sample-frames list.jsonl --video-col path --segments 8 -o frames/
    """
    opts = SampleFramesOptions.from_arguments({**locals(), **shared})
    o.run_dataset(opts, build_plan, render, shared)


def render(console: Console, doc: dict[str, Any]) -> None:
    counts = doc["counts"]
    head = Table(title="mmtok sample-frames", show_header=False, title_justify="left")
    head.add_row("videos in", f"{counts['videos_in']:,}")
    head.add_row("videos sampled", f"{counts['videos_kept']:,}")
    rejected = ", ".join(f"{k} {v:,}" for k, v in counts["rejected_by_reason"].items())
    head.add_row(
        "videos rejected", f"{counts['videos_rejected']:,}" + (f" ({rejected})" if rejected else "")
    )
    head.add_row("frames written", f"{counts['frames_out']:,}")
    head.add_row("sampling", ", ".join(f"{k}={v}" for k, v in doc["sampling"].items()))
    if doc["decoders"]:
        head.add_row("decoders", ", ".join(f"{k} {v:,}" for k, v in doc["decoders"].items()))
    if doc["total_vision_tokens"] is not None:
        head.add_row(
            f"vision tokens ({doc['preset']})",
            f"{doc['total_vision_tokens']:,} (mean {doc['mean_vision_tokens']:,.0f} per video)",
        )
    if doc["output"]:
        head.add_row("output", Text(str(doc["output"])))
    if doc["videos_table"]:
        head.add_row("videos table", Text(doc["videos_table"]))
    timing = doc.get("timing") or {}
    if timing.get("rows_per_second"):
        head.add_row("speed", f"{timing['rows_per_second']:,.1f} videos/s")
    console.print(head)
