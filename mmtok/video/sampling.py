"""Which frames of a video to keep: pure functions over the presented timestamps.

Every rule works on `pts`, the presentation time (seconds) of every frame the container shows,
in presentation order (after edit lists; `mmtok.video.probe`), never on the header's frame
count or average fps: on variable-frame-rate files those put samples seconds away from their
target (`shared/design/video.md` §0.5). Times given by the user (`--start`, `--end`,
`--timestamps`) and the `requested` times returned here are seconds from the first presented
frame.

Modes (`shared/design/video.md` §1 for the models they reproduce):

* `uniform` (`--num-frames N`): N times evenly spread from the first to the last frame of the
  window, each mapped to a frame with `--rounding`: `round` = the frame nearest in time (Qwen's
  `torch.linspace(...).round()`, Llama 3), `floor` = the frame on screen at that time
  (LLaVA's `np.linspace(..., dtype=int)`). On a constant-rate file the times fall exactly on
  the index rule of the reference code, so the frames are the same.
* `fps` (`--fps F`): Qwen's `smart_nframes` with its limits as parameters: n = duration x F,
  clamped to [min_frames, min(max_frames, frames in the window)], floored to a multiple of
  `frame_multiple`; then `uniform(n)`. The duration is measured from the pts (last - first +
  one frame), which equals qwen-vl-utils' `total_frames / avg_fps` on a constant-rate file.
* `segments` (`--segments K --pick middle|first|random`): InternVL's `get_frame_indices`: the
  window's frames cut into K equal runs (`np.linspace(0, n, K + 1).astype(int)`), one frame
  from each: the middle one (`(a + b) // 2`, InternVL eval), the first (Video-LLaMA), or a
  seeded random one (InternVL train; mmtok draws from the whole run with its own generator).
  With fewer frames than K the last one repeats, as InternVL pads.
* `timestamps` (`--timestamps 0.5,1.0`): the frame at each given time (`--rounding` as above).

`--start/--end` restrict any mode to the frames presented in [start, end] (inclusive, as
qwen-vl-utils' `calculate_video_frame_range`, there computed from the average fps).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import numpy as np

# Float noise (pts are integer ticks x a time base) must not move a frame across a rounding
# boundary: positions and counts are rounded to this many decimals before round/floor, so an
# exact half of the reference's integer arithmetic stays an exact half.
_DECIMALS = 6


class Mode(StrEnum):
    UNIFORM = "uniform"
    FPS = "fps"
    SEGMENTS = "segments"
    TIMESTAMPS = "timestamps"


class Rounding(StrEnum):
    ROUND = "round"  # the frame nearest in time; halves to the even index, as torch/numpy round
    FLOOR = "floor"  # the frame on screen at that time


class Pick(StrEnum):
    MIDDLE = "middle"
    FIRST = "first"
    RANDOM = "random"


class TooShort(Exception):
    """The window has fewer frames than the mode needs and the mode cannot repeat frames."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class SamplingSpec:
    """One sampling rule; `mmtok.video.sampling.VIDEO_PRESETS` holds the models' rules."""

    mode: Mode = Mode.UNIFORM
    num_frames: int = 8
    rounding: Rounding = Rounding.ROUND
    fps: float = 2.0
    min_frames: int = 1
    max_frames: int | None = None
    frame_multiple: int = 1
    segments: int = 8
    pick: Pick = Pick.MIDDLE
    seed: int = 0
    timestamps: tuple[float, ...] = field(default_factory=tuple)
    start: float | None = None
    end: float | None = None

    def __post_init__(self) -> None:
        checks = [
            (self.num_frames >= 1, "num_frames must be at least 1"),
            (self.fps > 0, "fps must be above 0"),
            (self.min_frames >= 1, "min_frames must be at least 1"),
            (self.max_frames is None or self.max_frames >= 1, "max_frames must be at least 1"),
            (self.frame_multiple >= 1, "frame_multiple must be at least 1"),
            (self.segments >= 1, "segments must be at least 1"),
            (self.mode is not Mode.TIMESTAMPS or self.timestamps, "timestamps: none given"),
            (all(t >= 0 for t in self.timestamps), "timestamps must be at least 0"),
            (
                self.start is None or self.end is None or self.start <= self.end,
                "start must not be after end",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def to_dict(self) -> dict[str, Any]:
        """The settings that matter for this mode (for manifests and videos.parquet)."""
        out: dict[str, Any] = {"mode": str(self.mode)}
        if self.mode is Mode.UNIFORM:
            out |= {"num_frames": self.num_frames, "rounding": str(self.rounding)}
        elif self.mode is Mode.FPS:
            out |= {
                "fps": self.fps,
                "min_frames": self.min_frames,
                "max_frames": self.max_frames,
                "frame_multiple": self.frame_multiple,
                "rounding": str(self.rounding),
            }
        elif self.mode is Mode.SEGMENTS:
            out |= {"segments": self.segments, "pick": str(self.pick)}
            if self.pick is Pick.RANDOM:
                out["seed"] = self.seed
        else:
            out |= {"timestamps": list(self.timestamps), "rounding": str(self.rounding)}
        if self.start is not None:
            out["start"] = self.start
        if self.end is not None:
            out["end"] = self.end
        return out


@dataclass(frozen=True)
class Sample:
    """The chosen frames: indices into the presented frames, and the time asked for each
    (seconds from the first presented frame; for segments, the middle of the segment)."""

    indices: tuple[int, ...]
    requested: tuple[float, ...]


def frame_duration(pts: np.ndarray) -> float:
    """How long the last frame shows: the median spacing of the last few frames (the rate at
    the end of a variable-rate file; 0 for a single frame)."""
    return float(np.median(np.diff(pts[-6:]))) if len(pts) > 1 else 0.0


def window(pts: np.ndarray, start: float | None, end: float | None) -> tuple[int, int]:
    """First and last index (inclusive) of the frames presented in [start, end]; (0, -1)
    when none is. Times are seconds from the first frame."""
    rel = np.round(pts - pts[0], _DECIMALS)
    first = 0 if start is None else int(np.searchsorted(rel, start, side="left"))
    last = len(pts) - 1 if end is None else int(np.searchsorted(rel, end, side="right")) - 1
    return (first, last) if first <= last else (0, -1)


def smart_nframes(
    duration: float,
    frames: int,
    fps: float,
    min_frames: int,
    max_frames: int | None,
    multiple: int,
) -> int:
    """qwen-vl-utils' `smart_nframes` (fps branch), from a measured duration.

    Source: QwenLM/Qwen2.5-VL:qwen-vl-utils/src/qwen_vl_utils/vision_process.py@f0af2996
    (same in qwen-vl-utils 0.0.14): min = ceil_by_factor(min_frames), max =
    floor_by_factor(min(max_frames, total)), n = floor_by_factor(clamp(total / fps_src * fps)).
    Returns 0 when no count fits (the reference raises)."""
    low = math.ceil(min_frames / multiple) * multiple
    cap = frames if max_frames is None else min(max_frames, frames)
    high = (cap // multiple) * multiple
    wanted = round(duration * fps, _DECIMALS)
    n = min(min(max(wanted, low), high), frames)
    n = math.floor(n / multiple) * multiple
    return n if multiple <= n <= frames else 0


def _seed(seed: int, key: str) -> np.random.Generator:
    """A generator that depends on the seed and the video, never on the order of the run."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _at_times(pts: np.ndarray, first: int, last: int, times: np.ndarray, rounding: Rounding):
    """Index of the frame at each time (seconds from the first presented frame)."""
    rel = pts[first : last + 1] - pts[0]
    positions = np.interp(times, rel, np.arange(len(rel), dtype=np.float64))
    positions = np.round(positions, _DECIMALS)
    picked = np.floor(positions) if rounding is Rounding.FLOOR else np.rint(positions)
    return first + picked.astype(np.int64)


def _uniform(pts, first, last, n, rounding) -> Sample:
    t0, t1 = pts[first] - pts[0], pts[last] - pts[0]
    times = np.linspace(t0, t1, n)
    indices = _at_times(pts, first, last, times, rounding)
    return Sample(tuple(int(i) for i in indices), tuple(float(t) for t in times))


def _segments(pts, first, last, spec: SamplingSpec, key: str) -> Sample:
    # OpenGVLab/InternVL@2410d1db internvl_chat/internvl/train/dataset.py:get_frame_indices
    count = last - first + 1
    k = min(spec.segments, count)
    edges = np.linspace(0, count, k + 1).astype(int)
    rng = _seed(spec.seed, key) if spec.pick is Pick.RANDOM else None
    picked, requested = [], []
    for a, b in zip(edges[:-1], edges[1:] - 1, strict=True):
        if spec.pick is Pick.MIDDLE:
            index = (a + b) // 2
        elif spec.pick is Pick.FIRST:
            index = a
        else:
            assert rng is not None
            index = int(rng.integers(a, b + 1))
        picked.append(first + int(index))
        middle = (pts[first + a] + pts[first + b]) / 2 - pts[0]
        requested.append(float(middle))
    while len(picked) < spec.segments:  # InternVL pads with the last frame
        picked.append(picked[-1])
        requested.append(requested[-1])
    return Sample(tuple(picked), tuple(requested))


def sample_frames(pts: np.ndarray, spec: SamplingSpec, key: str = "") -> Sample:
    """The frames `spec` keeps from a video whose presented frames show at `pts` (seconds,
    ascending). `key` (the video id) seeds `--pick random`. Raises `TooShort`."""
    pts = np.asarray(pts, dtype=np.float64)
    if len(pts) == 0:
        raise TooShort("the video has no presented frame")
    first, last = window(pts, spec.start, spec.end)
    count = last - first + 1
    if count <= 0:
        raise TooShort(
            f"no frame in the window [{spec.start}, {spec.end}] s; the video shows "
            f"{len(pts)} frames over {pts[-1] - pts[0] + frame_duration(pts):.3f} s"
        )
    if spec.mode is Mode.UNIFORM:
        return _uniform(pts, first, last, spec.num_frames, spec.rounding)
    if spec.mode is Mode.FPS:
        duration = pts[last] - pts[first] + frame_duration(pts)
        n = smart_nframes(
            duration, count, spec.fps, spec.min_frames, spec.max_frames, spec.frame_multiple
        )
        if n == 0:
            raise TooShort(
                f"{count} frames ({duration:.3f} s) at --fps {spec.fps:g}: no frame count fits "
                f"[{spec.min_frames}, {spec.max_frames or count}] in multiples of "
                f"{spec.frame_multiple}"
            )
        return _uniform(pts, first, last, n, spec.rounding)
    if spec.mode is Mode.SEGMENTS:
        return _segments(pts, first, last, spec, key)
    times = np.asarray(spec.timestamps, dtype=np.float64)
    span = pts[last] - pts[0] + frame_duration(pts)
    if (late := times[times >= span]).size:
        raise TooShort(f"timestamp {late[0]:g} s is past the end of the video ({span:.3f} s)")
    clipped = np.clip(times, pts[first] - pts[0], pts[last] - pts[0])
    indices = _at_times(pts, first, last, clipped, spec.rounding)
    return Sample(tuple(int(i) for i in indices), tuple(float(t) for t in times))


# -- the models' rules --------------------------------------------------------------------------

QWEN_FPS = SamplingSpec(
    mode=Mode.FPS, fps=2.0, min_frames=4, max_frames=768, frame_multiple=2, rounding=Rounding.ROUND
)

# name -> sampling rule (tokens per frame: `mmtok.video.tokens`)
VIDEO_PRESETS: dict[str, SamplingSpec] = {
    # qwen-vl-utils FPS=2.0, FPS_MIN_FRAMES=4, FPS_MAX_FRAMES=768, FRAME_FACTOR=2;
    # indices torch.linspace(0, total - 1, n).round() (QwenLM/Qwen2-VL@487a12d6,
    # Qwen2.5-VL@f0af2996, Qwen3-VL@004d5e0a)
    "qwen2-vl": QWEN_FPS,
    "qwen2.5-vl": QWEN_FPS,
    "qwen3-vl": QWEN_FPS,
    # Llama 3 paper (arXiv 2407.21783 §7): "uniformly sample 16 frames from the full video"
    "llama3-336": SamplingSpec(mode=Mode.UNIFORM, num_frames=16, rounding=Rounding.ROUND),
    # LLaVA-VL/LLaVA-NeXT@df179663 llava/utils.py:process_video_with_decord with force_sample:
    # np.linspace(0, n - 1, K, dtype=int); K = frames_upbound 64 (LLaVA-Video 7B training
    # script) and 32 (scripts/train/finetune_ov.sh)
    "llava-video": SamplingSpec(mode=Mode.UNIFORM, num_frames=64, rounding=Rounding.FLOOR),
    "llava-onevision": SamplingSpec(mode=Mode.UNIFORM, num_frames=32, rounding=Rounding.FLOOR),
    # OpenGVLab/InternVL@2410d1db get_frame_indices(sample="middle"); 8 frames as the README's
    # load_video example
    "internvl": SamplingSpec(mode=Mode.SEGMENTS, segments=8, pick=Pick.MIDDLE),
}


def preset_spec(name: str, **overrides: Any) -> SamplingSpec:
    """A model's rule, with the given fields changed (e.g. a window, or K for LLaVA)."""
    if name not in VIDEO_PRESETS:
        raise KeyError(name)
    return replace(VIDEO_PRESETS[name], **overrides)
