"""What a video file holds, from a PyAV demux pass only (no pixel is decoded).

The probe is the preflight of shared/design/video.md (section 5.2): it lists the presented
timestamp of every frame (after the container's edit list), so sampling never has to trust the
header's average frame rate, and it finds the files on which decord 0.6.0 returns wrong frames
without an error (open GOP, packets an edit list discards, a header frame count that disagrees
with the packets) so that `choose_decoder` can route them to PyAV.
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from mmtok.io.encoding import path_text

REASONS = (
    "missing_file",
    "read_error",
    "empty_file",
    "not_video",
    "no_video_stream",
    "unsupported_codec",
    "truncated",
    "decode_error",
    "too_short",
    "timeout",
    "decoder_crash",
)

# FFmpeg demuxers that open still images or text, which are not videos for mmtok
_NOT_VIDEO_FORMATS = {"image2", "tty", "txt", "ico", "apng", "webp"}


class VideoError(Exception):
    """A bad video file (a reject reason, not a crash): `reason` is one of REASONS."""

    def __init__(self, reason: str, message: str):
        if reason not in REASONS:
            raise ValueError(f"unknown video reject reason {reason!r}")
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __reduce__(self):  # picklable across worker processes
        return (VideoError, (self.reason, self.message))


Source = str | bytes | os.PathLike


@dataclass(frozen=True)
class VideoMeta:
    """Container facts of one video; every time is in seconds on the container's clock."""

    container: str  # FFmpeg demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm"
    codec: str  # canonical codec name: h264, hevc, vp9, av1, mpeg4, ...
    duration: float  # presented span: last pts - first pts + the last frame's duration
    header_fps: float  # the stream header's average rate (0.0 when absent)
    measured_fps: float  # (frames - 1) / (last pts - first pts)
    vfr: bool  # frame durations differ by more than 10 %
    pts: np.ndarray  # float64 seconds of every presented frame, in presentation order
    frame_count: int  # presented frames (len(pts))
    coded_size: tuple[int, int]  # (width, height) as decoded
    display_size: tuple[int, int]  # (width, height) after rotation
    rotation: int  # clockwise degrees a player turns the picture: 0, 90, 180, 270
    start_time: float  # pts of the first presented frame
    open_gop: bool  # a frame after a keyframe (decode order) is shown before it
    edit_list: bool  # the edit list made the demuxer discard packets
    warnings: list[str]
    file_size: int
    header_frames: int = 0  # frame count in the header (0 when the container has none)
    packets: int = 0  # video packets demuxed (discarded ones included)
    discarded: int = 0  # packets flagged discard by the edit list
    keyframes: int = 0
    header_duration: float = 0.0
    sample_aspect_ratio: float = 1.0
    time_base: tuple[int, int] = (1, 1)  # the stream's, as (num, den)
    pts_ticks: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    # demux facts the PyAV decoder plans its seeks with (one per presented frame):
    # the decode-order position of the keyframe a decoder must start from to output it
    start_keyframe: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    # the pts to seek to for each frame: its start keyframe's pts (FFmpeg's MP4 and Matroska
    # seeks compare pts; the keyframe's dts lands a GOP early, measured)
    keyframe_ticks: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)

    @property
    def count_mismatch(self) -> bool:
        """The header counts a different number of frames than the packets give."""
        return bool(self.header_frames) and self.header_frames != self.packets

    def to_row(self) -> dict[str, Any]:
        """The per-video facts as plain values (one row of videos.parquet)."""
        return {
            "container": self.container,
            "codec": self.codec,
            "duration": self.duration,
            "header_fps": self.header_fps,
            "measured_fps": self.measured_fps,
            "vfr": self.vfr,
            "frame_count": self.frame_count,
            "header_frames": self.header_frames,
            "width": self.display_size[0],
            "height": self.display_size[1],
            "coded_width": self.coded_size[0],
            "coded_height": self.coded_size[1],
            "rotation": self.rotation,
            "start_time": self.start_time,
            "open_gop": self.open_gop,
            "edit_list": self.edit_list,
            "discarded_packets": self.discarded,
            "packets": self.packets,
            "keyframes": self.keyframes,
            "header_duration": self.header_duration,
            "sample_aspect_ratio": self.sample_aspect_ratio,
            "file_size": self.file_size,
            "warnings": list(self.warnings),
        }


def _open_input(source: Source) -> tuple[Any, int, str]:
    """A path or a BytesIO PyAV can open, the file size and a name for messages."""
    if isinstance(source, bytes | bytearray | memoryview):
        return io.BytesIO(bytes(source)), len(source), "<bytes>"
    path = os.fspath(source)
    name = path_text(path)  # a path of non-UTF-8 bytes is named by its file: URI
    try:
        size = os.path.getsize(path)
    except FileNotFoundError as e:
        raise VideoError("missing_file", f"{name}: no such file") from e
    except (OSError, ValueError) as e:  # ValueError: a NUL byte, which no file name holds
        raise VideoError("read_error", f"{name}: {getattr(e, 'strerror', None) or e}") from e
    if not os.path.isfile(path):
        raise VideoError("read_error", f"{name}: not a regular file")
    return path, size, name


def _head(target: Any, n: int = 64) -> bytes:
    if isinstance(target, io.BytesIO):
        return target.getvalue()[:n]
    with open(target, "rb") as f:
        return f.read(n)


def _is_bmff(head: bytes) -> bool:
    return len(head) >= 8 and head[4:8] in (b"ftyp", b"mdat", b"moov", b"wide", b"free", b"skip")


def probe_video(source: Source) -> VideoMeta:
    """Demux `source` (a path or the file's bytes) and describe it; raises VideoError."""
    import av

    target, size, name = _open_input(source)
    if size == 0:
        raise VideoError("empty_file", f"{name}: 0 bytes")
    try:
        container = av.open(target, metadata_errors="ignore")
    except av.error.FFmpegError as e:
        # an MP4 cut before its index (moov at the end) opens as nothing at all
        if _is_bmff(_head(target)):
            raise VideoError("truncated", f"{name}: MP4 without a readable index ({e})") from e
        raise VideoError("not_video", f"{name}: {e}") from e
    with container:
        fmt = container.format.name
        if fmt in _NOT_VIDEO_FORMATS or fmt.endswith("_pipe"):
            raise VideoError("not_video", f"{name}: a still image or text ({fmt}), not a video")
        attached = av.stream.Disposition.attached_pic
        streams = [s for s in container.streams.video if not (s.disposition & attached)]
        if not streams:
            raise VideoError("no_video_stream", f"{name}: no video stream ({fmt})")
        stream = streams[0]
        ctx = stream.codec_context
        if ctx is None or ctx.codec is None:
            raise VideoError("unsupported_codec", f"{name}: no decoder for this video codec")
        # read every header value before close: after it PyAV returns garbage (video.md 3.2)
        codec = ctx.codec.canonical_name
        time_base = stream.time_base or Fraction(1, 90000)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        header_fps = float(rate) if rate else 0.0
        header_frames = int(stream.frames or 0)
        coded = (int(ctx.width), int(ctx.height))
        sar = float(stream.sample_aspect_ratio or 1) or 1.0
        if stream.duration:
            header_duration = float(stream.duration * time_base)
        else:
            header_duration = (container.duration or 0) / 1e6
        warnings: list[str] = []
        rows = _demux(container, stream, warnings, name)
    return _describe(
        rows,
        fmt=fmt,
        codec=codec,
        time_base=Fraction(time_base),
        header_fps=header_fps,
        header_frames=header_frames,
        coded=coded,
        sar=sar,
        header_duration=header_duration,
        rotation=_rotation(target, fmt),
        warnings=warnings,
        size=size,
        name=name,
    )


def _demux(container, stream, warnings: list[str], name: str) -> np.ndarray:
    """(pts, dts, keyframe, discard, duration, corrupt) of every video packet, in decode order."""
    import av

    rows: list[tuple[int, int, int, int, int, int]] = []
    last = 0
    try:
        for packet in container.demux(stream):
            if packet.size == 0:  # the flush packet PyAV yields at the end
                continue
            # Matroska leaves some dts unset; the pts stands in
            pts = packet.pts
            dts = packet.dts if packet.dts is not None else pts
            if pts is None:
                pts = dts = dts if dts is not None else last
            last = dts
            rows.append(
                (
                    pts,
                    dts,
                    int(packet.is_keyframe),
                    int(packet.is_discard),
                    packet.duration or 0,
                    int(packet.is_corrupt),
                )
            )
    except av.error.FFmpegError as e:
        warnings.append(f"truncated: demuxing stopped after {len(rows)} packets ({e})")
    if not rows:
        raise VideoError("truncated", f"{name}: no video packet could be read")
    return np.array(rows, dtype=np.int64)


def _describe(
    rows: np.ndarray,
    *,
    fmt,
    codec,
    time_base: Fraction,
    header_fps,
    header_frames,
    coded,
    sar,
    header_duration,
    rotation,
    warnings,
    size,
    name,
) -> VideoMeta:
    pts_col, key, discard, dur = rows[:, 0], rows[:, 2] == 1, rows[:, 3] == 1, rows[:, 4]
    corrupt = rows[:, 5] == 1  # e.g. the last packet of a cut file, shorter than its index says
    if corrupt.any():
        warnings.append(f"truncated: {int(corrupt.sum())} incomplete packets left out")
    shown = ~discard & ~corrupt
    if not shown.any():
        raise VideoError("truncated", f"{name}: every packet is discarded by the edit list")
    ticks, first_pos = np.unique(pts_col[shown], return_index=True)
    if len(ticks) < int(shown.sum()):
        warnings.append(f"{int(shown.sum()) - len(ticks)} packets repeat a timestamp; kept one")
    tb = float(time_base)
    pts = ticks.astype(np.float64) * tb
    positions = np.flatnonzero(shown)[first_pos]  # decode-order position of each shown frame
    # open GOP: a packet that follows a keyframe in decode order but is shown before it needs
    # pictures from the previous GOP (x265's CRA, x264 open-gop, MPEG-4 B-frames before an I)
    open_gop = False
    key_pts = np.where(key, pts_col, np.iinfo(np.int64).min)
    last_key_pts = np.maximum.accumulate(key_pts)
    last_key_pos = np.maximum.accumulate(np.where(key, np.arange(len(rows)), -1))
    leading = (pts_col < last_key_pts) & ~key
    open_gop = bool(leading.any())
    # where decoding must start to output each shown frame: its GOP's keyframe, or the one
    # before when it is a leading picture of an open GOP (it references the previous GOP)
    start = last_key_pos[positions]
    keys = np.flatnonzero(key)
    if len(keys) == 0 or (start < 0).any():
        warnings.append("frames before the first keyframe")
        start = np.where(start < 0, 0, start)
    lead = leading[positions]
    if lead.any():
        idx = np.searchsorted(keys, start[lead])  # index of that keyframe among keyframes
        start[lead] = np.where(idx > 0, keys[np.maximum(idx - 1, 0)], 0)
    n = len(pts)
    span = float(pts[-1] - pts[0]) if n > 1 else 0.0
    measured_fps = (n - 1) / span if span > 0 else header_fps
    diffs = np.diff(pts)
    vfr = bool(n > 2 and np.ptp(diffs) > 0.1 * float(np.median(diffs)) + 2 * tb)
    last_dur = float(dur[positions[-1]]) * tb if dur[positions[-1]] > 0 else 0.0
    if last_dur <= 0:
        last_dur = float(np.median(diffs)) if n > 1 else (1 / header_fps if header_fps else 0.0)
    packets, discarded = len(rows), int(discard.sum())
    covered = span + last_dur
    # Matroska and WebM have no frame count; there the header duration tells a cut file (or
    # an audio track that outlasts the video: the container's duration covers both)
    short = header_duration > covered * 1.05 + 2 * last_dur
    if header_frames and header_frames > packets and short:
        warnings.append(
            f"truncated: the header counts {header_frames} frames, {packets} packets can be read"
        )
    elif header_frames and header_frames != packets:
        # e.g. an edit list: FFmpeg drops the hidden packets no shown frame depends on
        warnings.append(f"the header counts {header_frames} frames, the file has {packets}")
    elif short:
        warnings.append(
            f"shorter than its header: {header_duration:.2f} s in the header, the video frames "
            f"cover {covered:.2f} s (a cut file, or a longer audio track)"
        )
    w, h = coded
    display = (h, w) if rotation in (90, 270) else (w, h)
    return VideoMeta(
        container=fmt,
        codec=codec,
        duration=span + last_dur,
        header_fps=header_fps,
        measured_fps=float(measured_fps),
        vfr=vfr,
        pts=pts,
        frame_count=n,
        coded_size=coded,
        display_size=display,
        rotation=rotation,
        start_time=float(pts[0]),
        open_gop=open_gop,
        edit_list=discarded > 0,
        warnings=warnings,
        file_size=size,
        header_frames=header_frames,
        packets=packets,
        discarded=discarded,
        keyframes=int(key.sum()),
        header_duration=float(header_duration),
        sample_aspect_ratio=sar,
        time_base=(time_base.numerator, time_base.denominator),
        pts_ticks=ticks,
        start_keyframe=start.astype(np.int64),
        keyframe_ticks=rows[start, 0].astype(np.int64),
    )


# --- rotation -------------------------------------------------------------------------------
# FFmpeg 8 keeps the display matrix in the stream's coded side data, which PyAV 18 does not
# expose without decoding a frame; for MP4/MOV (where phone videos carry it) the matrix is read
# from the video track's `tkhd` box (ISO/IEC 14496-12 8.3.2). FFmpeg takes the same nine numbers
# (libavformat/mov.c mov_read_tkhd); av_display_rotation_get() returns the counter-clockwise
# angle -atan2(b, a), so a player turns the picture clockwise by atan2(b, a).


def _rotation(target: Any, fmt: str) -> int:
    if not fmt.startswith("mov,"):
        return 0
    try:
        moov = _read_moov(target)
    except (OSError, struct.error):
        return 0
    if moov is None:
        return 0
    for trak in _boxes(moov, b"trak"):
        if _handler(trak) != b"vide":
            continue
        tkhd = next(_boxes(trak, b"tkhd"), None)
        if tkhd is None or len(tkhd) < 84:
            continue
        offset = 4 + (32 if tkhd[0] == 1 else 20) + 8 + 2 + 2 + 2 + 2  # version/flags .. reserved
        a, b = struct.unpack(">ii", tkhd[offset : offset + 8])
        if a == 0 and b == 0:
            return 0
        return int(round(np.degrees(np.arctan2(b, a)) / 90.0)) * 90 % 360
    return 0


def _boxes(data: bytes, kind: bytes):
    """Payloads of the child boxes of type `kind` in `data` (one level)."""
    pos = 0
    while pos + 8 <= len(data):
        size, typ = struct.unpack(">I4s", data[pos : pos + 8])
        header = 8
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8 : pos + 16])[0]
            header = 16
        elif size == 0:
            size = len(data) - pos
        if size < header:
            return
        if typ == kind:
            yield data[pos + header : pos + size]
        pos += size


def _handler(trak: bytes) -> bytes | None:
    mdia = next(_boxes(trak, b"mdia"), None)
    hdlr = next(_boxes(mdia, b"hdlr"), None) if mdia is not None else None
    return hdlr[8:12] if hdlr is not None and len(hdlr) >= 12 else None


def _read_moov(target: Any) -> bytes | None:
    if isinstance(target, io.BytesIO):
        return _find_moov(io.BytesIO(target.getvalue()))
    with open(target, "rb") as f:
        return _find_moov(f)


def _find_moov(f) -> bytes | None:
    """The payload of the top-level `moov` box (it may follow the media data)."""
    while True:
        header = f.read(8)
        if len(header) < 8:
            return None
        size, typ = struct.unpack(">I4s", header)
        skip = size - 8
        if size == 1:
            skip = struct.unpack(">Q", f.read(8))[0] - 16
        elif size == 0:
            skip = -1
        if typ == b"moov":
            return f.read(skip)
        if skip < 0:
            return None
        f.seek(skip, io.SEEK_CUR)
