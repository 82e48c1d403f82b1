"""`sample-frames`: videos in, one image row per sampled frame out."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mmtok.errors import MmtokError

from .options import DatasetOptions, option, require_module
from .plan import Part

DEFAULT_TIMEOUT = 60.0  # seconds per video; a 60 s 720p file takes ~1-5 s (video.md 3.3)
DEFAULT_RECYCLE_AFTER = 100  # videos per worker process (a fresh one costs ~0.5 s)
VIDEO_BATCH_ROWS = 4  # videos per unit of work: frames are large, and a hang retries the batch


@dataclass(kw_only=True)
class SampleFramesOptions(DatasetOptions):
    # seconds per video, not per row of images: a video takes longer
    row_timeout: float = option(DEFAULT_TIMEOUT, ge=0.1)
    preset: str | None = None
    num_frames: int | None = option(None, ge=1)
    fps: float | None = option(None, gt=0)
    min_frames: int | None = option(None, ge=1)
    max_frames: int | None = option(None, ge=1)
    frame_multiple: int | None = option(None, ge=1)
    segments: int | None = option(None, ge=1)
    pick: Literal["middle", "first", "random"] = "middle"
    seed: int = 0
    timestamps: str | list[float] | None = None  # "0.5,1,2.25" or [0.5, 1, 2.25]
    rounding: Literal["round", "floor"] | None = None
    start: float | None = option(None, ge=0)
    end: float | None = option(None, ge=0)
    decoder: Literal["auto", "decord", "pyav"] = "auto"
    frame_format: Literal["jpeg", "png", "raw"] = "jpeg"
    max_side: int | None = option(None, ge=1)
    video_col: str = "video"  # the column with the video (the frames go to `image`)
    recycle_after: int = option(DEFAULT_RECYCLE_AFTER, ge=1)


def parse_times(text: str | list[float] | None) -> tuple[float, ...]:
    if text is None:
        return ()
    try:
        if isinstance(text, str):
            times = tuple(float(t) for t in text.split(",") if t.strip())
        else:
            times = tuple(float(t) for t in text)
    except ValueError:
        raise MmtokError(
            f"--timestamps {text!r}: not a list of seconds", hint="e.g. --timestamps 0.5,1,2.25"
        ) from None
    if not times or any(t < 0 for t in times):
        raise MmtokError(f"--timestamps {text!r}: give seconds >= 0, comma-separated")
    return times


def build_spec(opts: SampleFramesOptions) -> Any:
    """The sampling rule from the options: a preset's, or one mode (a mode given with a preset
    replaces the preset's count, e.g. `--preset llava-video --num-frames 32`)."""
    from mmtok.video.sampling import VIDEO_PRESETS, Mode, Pick, Rounding, SamplingSpec, preset_spec

    if opts.preset is not None and opts.preset not in VIDEO_PRESETS:
        raise MmtokError(
            f"--preset {opts.preset!r} is not a video preset",
            hint="video presets: " + ", ".join(VIDEO_PRESETS),
        )
    modes = {
        Mode.UNIFORM: opts.num_frames is not None,
        Mode.FPS: opts.fps is not None,
        Mode.SEGMENTS: opts.segments is not None,
        Mode.TIMESTAMPS: opts.timestamps is not None,
    }
    chosen = [m for m, given in modes.items() if given]
    if len(chosen) > 1:
        raise MmtokError(
            "give one of --num-frames, --fps, --segments, --timestamps",
            hint=f"got {', '.join('--' + str(m).replace('uniform', 'num-frames') for m in chosen)}",
        )
    base = preset_spec(opts.preset) if opts.preset else SamplingSpec()
    changes: dict[str, Any] = {"start": opts.start, "end": opts.end}
    if chosen:
        changes["mode"] = chosen[0]
    if opts.num_frames is not None:
        changes["num_frames"] = opts.num_frames
    if opts.fps is not None:
        changes |= {"fps": opts.fps, "min_frames": 1, "max_frames": None, "frame_multiple": 1}
    if opts.segments is not None:
        changes["segments"] = opts.segments
    if opts.timestamps is not None:
        changes["timestamps"] = parse_times(opts.timestamps)
    for name in ("min_frames", "max_frames", "frame_multiple"):
        if getattr(opts, name) is not None:
            changes[name] = getattr(opts, name)
    if opts.rounding is not None:
        changes["rounding"] = Rounding(opts.rounding)
    if base.mode is Mode.SEGMENTS or opts.segments is not None:
        changes |= {"pick": Pick(opts.pick), "seed": opts.seed}
    try:
        return SamplingSpec(**{**base.__dict__, **changes})
    except ValueError as e:
        raise MmtokError(f"bad sampling options: {e}") from None


def part(opts: SampleFramesOptions) -> Part:
    from mmtok.engine.pipeline import Observer
    from mmtok.io.layout import SIDE_DIR, VIDEOS_FILE
    from mmtok.stages.frames import FrameOptions, SampleFramesStage, VideoTable

    spec = build_spec(opts)
    require_module("av", "video", "sample-frames")
    if opts.decoder == "decord":
        require_module("decord", "video", "--decoder decord")
    if opts.frame_format == "raw" and opts.output in (None, "-"):
        raise MmtokError(
            "--frame-format raw writes pixels into a dataset folder",
            hint="give -o DIR, or use jpeg/png with -o -",
        )
    videos = VideoTable()

    def document(manifest: dict[str, Any], out: Any) -> dict[str, Any]:
        counts = manifest["counts"]
        return {
            "output": out.path if out else None,
            "videos_table": str(Path(out.path, SIDE_DIR, VIDEOS_FILE))
            if out and not out.to_stdout
            else None,
            "sampling": spec.to_dict(),
            "preset": opts.preset,
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

    # markers of decord attempts, shared by the workers (see mmtok.stages.frames)
    attempts = SharedFolder("mmtok-decord-attempts-")
    stage = SampleFramesStage(
        spec,
        decoder=opts.decoder,
        frames=FrameOptions(frame_format=opts.frame_format, max_side=opts.max_side),
        preset=opts.preset,
        attempts_dir=attempts.path,
        recycle_after=opts.recycle_after,
    )
    return Part(
        "sample-frames",
        "sampling frames",
        [stage],
        document,
        [Observer(VideoTable.columns, videos.add)],
        batch_rows=VIDEO_BATCH_ROWS,
        side_outputs=lambda doc: {VIDEOS_FILE: videos.table()},
        videos=True,
        image_col=opts.video_col,
        setup=attempts.make,
        cleanup=attempts.remove,
    )


class SharedFolder:
    """A temporary folder the workers of one run share: named when the plan is built, made
    when it runs (`Part.setup`), removed when it ends, however it ends (`Part.cleanup`). A plan
    built but never run leaves nothing behind."""

    def __init__(self, prefix: str):
        # a name no one can guess, in the folder tempfile.mkdtemp would use
        self.path = os.path.join(tempfile.gettempdir(), prefix + secrets.token_hex(8))
        self.made = False

    def make(self) -> None:
        os.mkdir(self.path, 0o700)  # raises if it is there: never adopt a folder mmtok did not make
        self.made = True

    def remove(self) -> None:
        if self.made:
            shutil.rmtree(self.path, ignore_errors=True)
            self.made = False
