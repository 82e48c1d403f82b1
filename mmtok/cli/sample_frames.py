"""`mmtok sample-frames`: videos in, one image row per sampled frame out."""

from __future__ import annotations

import shutil
import tempfile
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mmtok.cli import options as o
from mmtok.cli.output import handle_errors
from mmtok.engine.pipeline import Observer, publish_output
from mmtok.errors import MmtokError
from mmtok.io.layout import SIDE_DIR, VIDEOS_FILE
from mmtok.video.sampling import (
    VIDEO_PRESETS,
    Mode,
    Pick,
    Rounding,
    SamplingSpec,
    preset_spec,
)

SAMPLING_PANEL = "Sampling"
DEFAULT_TIMEOUT = 60.0  # seconds per video; a 60 s 720p file takes ~1-5 s (video.md 3.3)
DEFAULT_RECYCLE_AFTER = 100  # videos per worker process (a fresh one costs ~0.5 s)
VIDEO_BATCH_ROWS = 4  # videos per unit of work: frames are large, and a hang retries the batch


class Decoder(StrEnum):
    AUTO = "auto"
    DECORD = "decord"
    PYAV = "pyav"


class FrameFormat(StrEnum):
    JPEG = "jpeg"
    PNG = "png"
    RAW = "raw"


def parse_times(text: str | None) -> tuple[float, ...]:
    if text is None:
        return ()
    try:
        times = tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise MmtokError(
            f"--timestamps {text!r}: not a list of seconds", hint="e.g. --timestamps 0.5,1,2.25"
        ) from None
    if not times or any(t < 0 for t in times):
        raise MmtokError(f"--timestamps {text!r}: give seconds >= 0, comma-separated")
    return times


def build_spec(
    *,
    preset: str | None,
    num_frames: int | None,
    fps: float | None,
    segments: int | None,
    timestamps: str | None,
    rounding: Rounding | None,
    min_frames: int | None,
    max_frames: int | None,
    frame_multiple: int | None,
    pick: Pick,
    seed: int,
    start: float | None,
    end: float | None,
) -> SamplingSpec:
    """The sampling rule from the flags: a preset's, or one mode (a mode flag given with
    --preset replaces the preset's count, e.g. `--preset llava-video --num-frames 32`)."""
    modes = {
        Mode.UNIFORM: num_frames is not None,
        Mode.FPS: fps is not None,
        Mode.SEGMENTS: segments is not None,
        Mode.TIMESTAMPS: timestamps is not None,
    }
    chosen = [m for m, given in modes.items() if given]
    if len(chosen) > 1:
        raise MmtokError(
            "give one of --num-frames, --fps, --segments, --timestamps",
            hint=f"got {', '.join('--' + str(m).replace('uniform', 'num-frames') for m in chosen)}",
        )
    base = preset_spec(preset) if preset else SamplingSpec()
    changes: dict[str, Any] = {"start": start, "end": end}
    if chosen:
        changes["mode"] = chosen[0]
    if num_frames is not None:
        changes["num_frames"] = num_frames
    if fps is not None:
        changes |= {"fps": fps, "min_frames": 1, "max_frames": None, "frame_multiple": 1}
    if segments is not None:
        changes["segments"] = segments
    if timestamps is not None:
        changes["timestamps"] = parse_times(timestamps)
    for name, value in (
        ("min_frames", min_frames),
        ("max_frames", max_frames),
        ("frame_multiple", frame_multiple),
        ("rounding", rounding),
    ):
        if value is not None:
            changes[name] = value
    if base.mode is Mode.SEGMENTS or segments is not None:
        changes |= {"pick": pick, "seed": seed}
    try:
        return SamplingSpec(**{**base.__dict__, **changes})
    except ValueError as e:
        raise MmtokError(f"bad sampling options: {e}") from None


def _preset_name(value: str | None) -> str | None:
    if value is not None and value not in VIDEO_PRESETS:
        raise typer.BadParameter(f"{value!r}; video presets: {', '.join(VIDEO_PRESETS)}")
    return value


@handle_errors
def sample_frames(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Videos: video files, folders of them, .jsonl/.csv/.parquet lists with a video "
            "column (--video-col), WebDataset .tar shards with .mp4/.mkv/.webm/.mov/.avi members.",
            show_default=False,
        ),
    ],
    output: o.OutputOpt = None,
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
    text_col: o.TextColOpt = "caption",
    id_col: o.IdColOpt = None,
    overwrite: o.OverwriteOpt = False,
    resume: o.ResumeOpt = False,
    shard_rows: o.ShardRowsOpt = 50_000,
    shard_bytes: o.ShardBytesOpt = "512MB",
    rejects: o.RejectsOpt = None,
    workers: o.WorkersOpt = None,
    row_timeout: Annotated[
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
    ] = DEFAULT_TIMEOUT,
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
    quiet: o.QuietOpt = False,
    as_json: o.JsonOpt = False,
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
    from mmtok.stages.frames import FrameOptions, SampleFramesStage, VideoTable

    spec = build_spec(
        preset=preset,
        num_frames=num_frames,
        fps=fps,
        segments=segments,
        timestamps=timestamps,
        rounding=rounding,
        min_frames=min_frames,
        max_frames=max_frames,
        frame_multiple=frame_multiple,
        pick=pick,
        seed=seed,
        start=start,
        end=end,
    )
    o.require_module("av", "video", "sample-frames")
    if decoder is Decoder.DECORD:
        o.require_module("decord", "video", "--decoder decord")
    if frame_format is FrameFormat.RAW and output in (None, "-"):
        raise MmtokError(
            "--frame-format raw writes pixels into a dataset folder",
            hint="give -o DIR, or use jpeg/png with -o -",
        )
    common = o.DatasetOptions(
        inputs=inputs,
        output=output,
        image_col=video_col,
        text_col=text_col,
        id_col=id_col,
        overwrite=overwrite,
        resume=resume,
        shard_rows=shard_rows,
        shard_bytes=shard_bytes,
        image_bytes=False,
        rejects=rejects,
        workers=workers,
        quiet=quiet,
        as_json=as_json,
        row_timeout=row_timeout,
    )
    attempts = tempfile.mkdtemp(prefix="mmtok-decord-attempts-")
    try:
        stage = SampleFramesStage(
            spec,
            decoder=decoder.value,
            frames=FrameOptions(frame_format=frame_format.value, max_side=max_side),
            preset=preset,
            attempts_dir=attempts,
            recycle_after=recycle_after,
        )
        videos = VideoTable()
        manifest, out, reporter = o.run_dataset(
            common,
            [stage],
            "sampling frames",
            [Observer(VideoTable.columns, videos.add)],
            batch_rows=VIDEO_BATCH_ROWS,
            hold=True,
            videos=True,
        )
        publish_output(out, {VIDEOS_FILE: videos.table()})
    finally:
        shutil.rmtree(attempts, ignore_errors=True)  # a folder this run made
    counts = manifest["counts"]
    document = {
        "output": out.path if out else None,
        "videos_table": str(Path(out.path, SIDE_DIR, VIDEOS_FILE))
        if out and not out.to_stdout
        else None,
        "sampling": spec.to_dict(),
        "preset": preset,
        "counts": {
            "videos_in": counts["in"],
            "videos_kept": counts.get("in_kept", counts["in"] - counts["rejected"]),
            "videos_rejected": counts["rejected"],
            "frames_out": counts["out"],
            "rejected_by_reason": counts["rejected_by_reason"],
        },
        **videos.summary(),
        "timing": manifest.get("timing"),
    }
    reporter.result(document, lambda console: render(console, document))


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
