"""Small real video files whose frames carry their own number in the pixels.

Every file is written with PyAV's encoders (x264, x265, libvpx-vp9, SVT-AV1, mpeg4), so the
tests need no download and no ffmpeg binary. Each frame paints its frame number (its index in
*encoding* order, which is presentation order here) as a 2 x 8 grid of flat black/white cells in
the top 40 % of the picture: 12 bits of number and a 4-bit check, large flat cells that survive
lossy compression (the recipe of shared/design/video.md, section 3.1). The rest of the frame is a
moving pattern plus noise, so the encoders use real prediction (B-frames, open GOPs) and a wrong
frame is never mistaken for the right one.

`make_video(path, kind)` writes one file and returns what a correct decoder must give back
(`VideoFile.numbers[i]` is the number painted in the i-th presented frame); `read_frame_number`
reads the number back (or -1). `VideoCorpus` builds files on demand and keeps them for the session.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import numpy as np

os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its banner on stderr otherwise

_ROWS, _COLS = 2, 8
_CODE_FRACTION = 0.4  # the code fills the top 40 % of the frame
MAX_NUMBER = (1 << 12) - 1


def _check(n: int) -> int:
    return (n ^ (n >> 4) ^ (n >> 8) ^ 0b1010) & 0xF


def _bits(n: int) -> list[int]:
    word = (n << 4) | _check(n)
    return [(word >> (15 - i)) & 1 for i in range(16)]


def _cells(width: int, height: int):
    code_h = int(height * _CODE_FRACTION)
    for r in range(_ROWS):
        for c in range(_COLS):
            y0, y1 = r * code_h // _ROWS, (r + 1) * code_h // _ROWS
            x0, x1 = c * width // _COLS, (c + 1) * width // _COLS
            yield r * _COLS + c, y0, y1, x0, x1


@lru_cache(maxsize=4)
def _texture(width: int, height: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A gradient-and-noise picture that frames pan across, and 4 planes of per-frame noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([(x * 2) % 256, (y * 3) % 256, ((x + y) * 2) % 256], axis=2) // 2 + 64
    base = (base + rng.integers(0, 24, (height, width, 1))).astype(np.uint8)
    return base, rng.integers(0, 12, (4, height, width, 1), dtype=np.uint8)


def paint_frame(n: int, width: int, height: int, seed: int = 0) -> np.ndarray:
    """An RGB uint8 frame showing number `n` (0..4095) in its code cells."""
    if not 0 <= n <= MAX_NUMBER:
        raise ValueError(f"frame number {n} does not fit the 12-bit code")
    base, noise = _texture(width, height, seed)
    rgb = np.roll(base, ((2 * n) % height, (3 * n) % width), axis=(0, 1))  # a slow pan
    rgb += noise[n % 4]  # at most 64 + 127 + 23 + 11 < 256
    for i, y0, y1, x0, x1 in _cells(width, height):
        rgb[y0:y1, x0:x1] = 235 if _bits(n)[i] else 16
    return rgb


def read_frame_number(rgb: np.ndarray) -> int:
    """The number painted in a decoded RGB frame (coded orientation), or -1 if unreadable."""
    h, w = rgb.shape[:2]
    luma = rgb.astype(np.float32).mean(axis=2)
    word = 0
    for _i, y0, y1, x0, x1 in _cells(w, h):
        dy, dx = max((y1 - y0) // 4, 0), max((x1 - x0) // 4, 0)
        word = (word << 1) | int(luma[y0 + dy : y1 - dy, x0 + dx : x1 - dx].mean() > 128)
    n, check = word >> 4, word & 0xF
    return n if _check(n) == check else -1


@dataclass(frozen=True)
class VideoFile:
    """A fixture file and what a correct decoder must return for it."""

    path: Path
    kind: str
    numbers: list[int] = field(default_factory=list)  # painted number of each presented frame
    pts: list[float] = field(default_factory=list)  # its presentation time (s) as encoded
    rotation: int = 0  # clockwise degrees a player turns the picture
    size: tuple[int, int] = (0, 0)  # coded (width, height)
    reason: str | None = None  # the VideoError reason a broken file must give
    codec: str = ""
    container: str = ""


def _encode(
    target,
    times: list[Fraction],
    *,
    width: int,
    height: int,
    codec: str = "libx264",
    fmt: str | None = None,
    rate: int = 30,
    time_base: Fraction | None = None,
    pix_fmt: str = "yuv420p",
    options: dict[str, str] | None = None,
    container_options: dict[str, str] | None = None,
    rotation_cw: int = 0,
    first_number: int = 0,
    audio: bool = False,
) -> None:
    import av

    with av.open(target, "w", format=fmt, options=container_options or {}) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.time_base = time_base or Fraction(1, rate)
        stream.codec_context.time_base = stream.time_base
        opts = {"preset": "veryfast"} if codec == "libx264" else {}
        if codec == "libx265":
            opts = {"preset": "ultrafast", "x265-params": "log-level=error"}
        opts.update(options or {})
        if codec == "libx265" and options and "x265-params" in options:
            opts["x265-params"] = "log-level=error:" + options["x265-params"]
        stream.options = opts
        if rotation_cw:
            stream.set_display_rotation(-rotation_cw)  # PyAV takes counter-clockwise degrees
        for i, t in enumerate(times):
            frame = av.VideoFrame.from_ndarray(
                paint_frame(first_number + i, width, height), format="rgb24"
            )
            frame.pts = round(t / stream.time_base)
            frame.time_base = stream.time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def _audio_only(path: Path) -> None:
    import av

    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=16000)
        samples = 1024
        for i in range(20):
            t = (np.arange(samples) + i * samples) / 16000
            pcm = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
            frame = av.AudioFrame.from_ndarray(pcm, format="fltp", layout="mono")
            frame.sample_rate = 16000
            frame.pts = i * samples
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def _remux_shifted(src: Path, dst: Path, shift_s: float) -> None:
    """Copy the packets with every timestamp moved by `shift_s`: what `ffmpeg -ss ... -c copy`
    trimming leaves, an MP4 edit list that hides the frames before time 0."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w", format="mp4") as out:
        ist = inp.streams.video[0]
        ost = out.add_stream_from_template(ist)
        shift = round(shift_s / ist.time_base)
        for packet in inp.demux(ist):
            if packet.size == 0:
                continue
            packet.pts += shift
            packet.dts += shift
            packet.stream = ost
            out.mux(packet)


def _cfr_times(n: int, rate: int, start: float = 0.0) -> list[Fraction]:
    return [Fraction(start).limit_denominator(1000) + Fraction(i, rate) for i in range(n)]


def _vfr_times() -> list[Fraction]:
    """20 frames at 30 fps, 20 at 10 fps, 20 at 60 fps, then 20 irregular (ms precision)."""
    times, t = [], Fraction(0)
    rng = np.random.default_rng(7)
    steps = [Fraction(1, 30)] * 20 + [Fraction(1, 10)] * 20 + [Fraction(1, 60)] * 20
    steps += [Fraction(int(ms), 1000) for ms in rng.integers(15, 150, 20)]
    for step in steps:
        times.append(t)
        t += step
    return times


# kind -> (suffix, description); the keys are the fixture names tests parametrize over.
KINDS: dict[str, str] = {
    "h264": "H.264 MP4 (moov at the end), GOP 30, 90 frames",
    "h264_long_gop": "H.264 MP4, GOP 250, 300 frames",
    "faststart": "H.264 MP4 with the moov first",
    "mkv": "H.264 in Matroska",
    "vfr_mp4": "variable frame rate H.264 MP4 (30, 10, 60 fps, irregular)",
    "vfr_mkv": "the same frames in Matroska (ms time base)",
    "live_webm": "VP9 WebM written live (no duration, no cues), as browsers' MediaRecorder does",
    "odd_size": "H.264 4:4:4 at 129x97 (x264 refuses odd sizes in 4:2:0)",
    "odd_vp9": "VP9 WebM at 129x97",
    "one_frame": "a single-frame H.264 MP4",
    "three_frames": "a three-frame H.264 MP4",
    "start_2s": "H.264 MP4 whose first frame is presented at 2.0 s",
    "hevc": "HEVC MP4, closed GOP",
    "vp9": "VP9 WebM",
    "mpeg4": "MPEG-4 part 2 in MP4",
    "avi": "MPEG-4 part 2 with B-frames in AVI (no timestamps of its own)",
    "fragmented": "fragmented H.264 MP4 (empty moov, one moof per GOP)",
    "av1": "AV1 (SVT-AV1) MP4",
    "open_gop": "H.264 with open GOPs (x264 open-gop=1)",
    "hevc_open_gop": "HEVC with x265's default open GOPs",
    "edit_list": "H.264 MP4 whose edit list hides the first 45 of 135 frames",
    "rotated": "H.264 MP4 with a display matrix that turns it 90 degrees clockwise",
    "rotated_270": "H.264 MP4 turned 270 degrees clockwise",
    "with_audio": "H.264 + AAC MP4",
    "truncated": "faststart H.264 MP4 cut at 60 %",
    "truncated_no_moov": "H.264 MP4 with the moov at the end, cut at 50 %",
    "empty": "0 bytes",
    "garbage": "random bytes",
    "audio_only": "an AAC-only .m4a",
}

SUFFIX = {
    "mkv": ".mkv",
    "vfr_mkv": ".mkv",
    "odd_vp9": ".webm",
    "vp9": ".webm",
    "live_webm": ".webm",
}
SUFFIX |= {"audio_only": ".m4a", "garbage": ".mp4", "empty": ".mp4", "avi": ".avi"}

# files the decoders must read; the others are rejects
GOOD_KINDS = [k for k in KINDS if k not in {"empty", "garbage", "audio_only", "truncated_no_moov"}]


def make_video(
    path: str | Path,
    kind: str = "h264",
    *,
    width: int = 128,
    height: int = 96,
    frames: int | None = None,
    rate: int = 30,
    gop: int | None = None,
) -> VideoFile:
    """Write one fixture of `kind` (see KINDS) at `path` and return its expected content."""
    path = Path(path)
    w, h = width, height
    n = frames
    x264 = {"x264-params": f"keyint={gop or 30}:min-keyint={gop or 30}:scenecut=0"}
    cfr = lambda count: _cfr_times(count, rate)  # noqa: E731
    rot = 0
    reason = None
    codec, container = "h264", "mp4"
    if kind in ("h264", "faststart", "fragmented", "mkv", "with_audio", "rotated", "rotated_270"):
        count = n or 90
        times = cfr(count)
        opts = {
            "faststart": {"movflags": "+faststart"},
            "fragmented": {"movflags": "frag_keyframe+empty_moov+default_base_moof"},
        }.get(kind)
        rot = {"rotated": 90, "rotated_270": 270}.get(kind, 0)
        container = "matroska" if kind == "mkv" else "mp4"
        _encode(
            str(path),
            times,
            width=w,
            height=h,
            options=x264,
            container_options=opts,
            rotation_cw=rot,
            rate=rate,
        )
        if kind == "with_audio":
            _add_audio(path)
    elif kind == "h264_long_gop":
        count = n or 300
        times = cfr(count)
        opts = {"x264-params": f"keyint={gop or 250}:min-keyint={gop or 250}:scenecut=0"}
        _encode(str(path), times, width=w, height=h, options=opts, rate=rate)
    elif kind in ("vfr_mp4", "vfr_mkv"):
        times = _vfr_times()
        count = len(times)
        container = "matroska" if kind == "vfr_mkv" else "mp4"
        _encode(str(path), times, width=w, height=h, options=x264, time_base=Fraction(1, 1000))
    elif kind == "odd_size":
        w, h = width + 1, height + 1
        count = n or 60
        times = cfr(count)
        _encode(str(path), times, width=w, height=h, options=x264, pix_fmt="yuv444p")
    elif kind in ("odd_vp9", "vp9", "live_webm"):
        if kind == "odd_vp9":
            w, h = width + 1, height + 1
        count = n or 60
        times = cfr(count)
        codec, container = "vp9", "matroska"
        _encode(
            str(path),
            times,
            width=w,
            height=h,
            fmt="webm",
            container_options={"live": "1"} if kind == "live_webm" else None,
            codec="libvpx-vp9",
            options={
                "g": str(gop or 30),
                "deadline": "realtime",
                "cpu-used": "8",
                "crf": "20",
                "b:v": "0",
            },
        )
    elif kind in ("one_frame", "three_frames"):
        count = 1 if kind == "one_frame" else 3
        times = cfr(count)
        _encode(str(path), times, width=w, height=h, options=x264)
    elif kind == "start_2s":
        count = n or 60
        times = _cfr_times(count, rate, start=2.0)
        _encode(str(path), times, width=w, height=h, options=x264)
    elif kind in ("hevc", "hevc_open_gop"):
        count = n or 90
        times = cfr(count)
        codec = "hevc"
        params = f"keyint={gop or 30}:min-keyint={gop or 30}:scenecut=0"
        params += ":open-gop=1" if kind == "hevc_open_gop" else ":open-gop=0"
        _encode(
            str(path), times, width=w, height=h, codec="libx265", options={"x265-params": params}
        )
    elif kind in ("mpeg4", "avi"):
        count = n or 60
        times = cfr(count)
        codec = "mpeg4"
        container = "avi" if kind == "avi" else "mp4"
        _encode(
            str(path),
            times,
            width=w,
            height=h,
            codec="mpeg4",
            options={"g": str(gop or 30), "qscale": "3", "bf": "2"},
        )
    elif kind == "av1":
        count = n or 45
        times = cfr(count)
        codec = "av1"
        _encode(
            str(path),
            times,
            width=w,
            height=h,
            codec="libsvtav1",
            options={"crf": "10", "preset": "10", "g": str(gop or 30)},
        )
    elif kind == "open_gop":
        count = n or 120
        times = cfr(count)
        _encode(
            str(path),
            times,
            width=w,
            height=h,
            options={
                "x264-params": f"open-gop=1:keyint={gop or 30}:min-keyint={gop or 30}"
                ":scenecut=0:bframes=3:b-adapt=0:b-pyramid=none"
            },
        )
    elif kind == "edit_list":
        total, hidden = n or 135, 45
        src = path.with_suffix(".src.mp4")
        _encode(str(src), cfr(total), width=w, height=h, options=x264)
        _remux_shifted(src, path, -hidden / rate)
        src.unlink()
        numbers = list(range(hidden, total))
        return VideoFile(
            path,
            kind,
            numbers,
            [i / rate for i in range(total - hidden)],
            0,
            (w, h),
            None,
            codec,
            container,
        )
    elif kind in ("truncated", "truncated_no_moov"):
        count = n or 120
        opts = {"movflags": "+faststart"} if kind == "truncated" else None
        whole = path.with_suffix(".whole.mp4")
        _encode(str(whole), cfr(count), width=w, height=h, options=x264, container_options=opts)
        data = whole.read_bytes()
        whole.unlink()
        cut = int(len(data) * (0.6 if kind == "truncated" else 0.5))
        path.write_bytes(data[:cut])
        if kind == "truncated_no_moov":
            return VideoFile(path, kind, reason="truncated")
        # the frames before the cut; which ones exactly depends on the cut, the test reads them
        times = cfr(count)
        return VideoFile(
            path,
            kind,
            list(range(count)),
            [float(t) for t in times],
            0,
            (w, h),
            "truncated",
            codec,
            container,
        )
    elif kind == "empty":
        path.write_bytes(b"")
        return VideoFile(path, kind, reason="empty_file")
    elif kind == "garbage":
        path.write_bytes(np.random.default_rng(3).integers(0, 256, 20_000, np.uint8).tobytes())
        return VideoFile(path, kind, reason="not_video")
    elif kind == "audio_only":
        _audio_only(path)
        return VideoFile(path, kind, reason="no_video_stream")
    else:
        raise ValueError(f"unknown fixture kind {kind!r}; known: {', '.join(KINDS)}")
    return VideoFile(
        path,
        kind,
        list(range(count)),
        [float(t) for t in times],
        rot,
        (w, h),
        reason,
        codec,
        container,
    )


def _add_audio(path: Path) -> None:
    """Remux `path` with an AAC track next to its video (copying the video packets)."""
    import av

    tmp = path.with_suffix(".va.mp4")
    with av.open(str(path)) as inp, av.open(str(tmp), "w", format="mp4") as out:
        ist = inp.streams.video[0]
        ost = out.add_stream_from_template(ist)
        ast = out.add_stream("aac", rate=16000)
        for packet in inp.demux(ist):
            if packet.size:
                packet.stream = ost
                out.mux(packet)
        for i in range(45):
            pcm = np.zeros((1, 1024), np.float32)
            frame = av.AudioFrame.from_ndarray(pcm, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            out.mux(ast.encode(frame))
        out.mux(ast.encode(None))
    tmp.replace(path)


class VideoCorpus:
    """Fixture files built on first use into one folder and reused for the whole session."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._files: dict[str, VideoFile] = {}

    def __getitem__(self, kind: str) -> VideoFile:
        if kind not in self._files:
            path = self.root / f"{kind}{SUFFIX.get(kind, '.mp4')}"
            self._files[kind] = make_video(path, kind)
        return self._files[kind]


_CORPORA: dict[str, VideoCorpus] = {}


def session_corpus(tmp_path_factory) -> VideoCorpus:
    """One corpus per test session (pass pytest's `tmp_path_factory`)."""
    key = str(tmp_path_factory.getbasetemp())
    if key not in _CORPORA:
        _CORPORA[key] = VideoCorpus(tmp_path_factory.mktemp("videos"))
    return _CORPORA[key]
