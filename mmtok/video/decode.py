"""Decode chosen frames of a video, exactly, by presented timestamp.

Two backends (shared/design/video.md, sections 0 and 5):
- decord (the fast default): one reader opened here, one `get_batch`, then dropped. Never
  `vr[i]` or `next()` on a live reader (it keeps decoding ahead and RSS grows to GBs) and never a
  reader inherited across fork. Before trusting it, its frame count and the timestamps of the
  requested frames are checked against the probe; a disagreement falls back to PyAV.
- PyAV (frame-exact): for each requested frame, seek to the keyframe it depends on (from the
  probe's demux index), decode forward and pick frames by pts; frames of the same GOP share one
  seek, and on the way H.264/HEVC pictures nothing refers to are not decoded. This is the
  reference sampler of video.md 3.1.

`choose_decoder(meta, "auto")` sends to PyAV the files on which decord 0.6.0 was measured to
return wrong frames without an error (video.md 3.2). Every frame comes back in display
orientation (the container's rotation applied as a player does).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mmtok.errors import MmtokError
from mmtok.video.probe import Source, VideoError, VideoMeta

DECODERS = ("auto", "decord", "pyav")

# codecs and containers on which decord 0.6.0 was measured exact (video.md 3.2); VP8 returns an
# early frame for every index (dmlc/decord#91), AVI and ASF have their own reports (#195, #310),
# AV1 does not open at all (decord bundles FFmpeg 4.1 without an AV1 decoder)
DECORD_CODECS = frozenset({"h264", "hevc", "vp9", "mpeg4"})
DECORD_CONTAINERS = frozenset({"mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm"})


@dataclass
class DecodedFrames:
    """The frames of one decode call; `frames[k]` is presented frame `indices[k]`."""

    frames: list[np.ndarray]  # uint8 [H, W, 3] RGB in display orientation
    pts: list[float]  # seconds, the container's clock (meta.pts of each index)
    indices: list[int]  # the requested indices that were decoded (all of them unless damaged)
    decoder: str  # the backend that produced the frames
    why: str = ""  # why that backend
    warnings: list[str] = field(default_factory=list)
    decoded_frames: int = 0  # PyAV only: frames decoded to get these (seek cost; 0 for decord)


def decord_available() -> bool:
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True


def decord_problems(meta: VideoMeta) -> list[str]:
    """Why decord 0.6.0 would return wrong frames for this file (empty: it is exact)."""
    problems = []
    if meta.codec not in DECORD_CODECS:
        problems.append(
            f"codec {meta.codec} (decord is exact only on {', '.join(sorted(DECORD_CODECS))})"
        )
    if meta.container not in DECORD_CONTAINERS:
        problems.append(f"container {meta.container}")
    if meta.container == "matroska,webm" and meta.header_duration <= 0:
        # a live-written WebM (browsers' MediaRecorder): decord refuses it ("broken metadata")
        problems.append("no duration in the header (decord cannot open it)")
    if meta.open_gop:
        problems.append("open GOP (decord returns a neighbouring frame)")
    if meta.edit_list:
        problems.append(f"edit list discards {meta.discarded} packets (decord shows hidden frames)")
    if meta.count_mismatch:
        problems.append(f"header counts {meta.header_frames} frames, packets {meta.packets}")
    return problems


def choose_decoder(meta: VideoMeta, requested: str = "auto") -> tuple[str, str]:
    """The backend to decode `meta`'s file with, and why (recorded per video)."""
    if requested not in DECODERS:
        raise MmtokError(f"unknown decoder {requested!r}", hint=f"use one of {', '.join(DECODERS)}")
    if requested == "decord" and not decord_available():
        raise MmtokError("decord is not installed", hint="pip install 'mmtok[video]'")
    if requested != "auto":
        return requested, "requested"
    problems = decord_problems(meta)
    if problems:
        return "pyav", "; ".join(problems)
    if not decord_available():
        return "pyav", "decord is not installed"
    return "decord", "decord is exact on this file"


def decode_frames(
    source: Source,
    meta: VideoMeta,
    indices: list[int],
    decoder: str = "auto",
    *,
    threads: int = 0,
) -> DecodedFrames:
    """Decode presented frames `indices` (positions in `meta.pts`) of `source`.

    `threads` is the decoder's thread count (0: the library's choice; 1 suits a pool of worker
    processes). A damaged file returns the frames before the damage with a warning; when none
    decodes it raises VideoError("truncated") (or "decode_error" for an intact but undecodable
    stream).
    """
    indices = [int(i) for i in indices]
    bad = [i for i in indices if not 0 <= i < meta.frame_count]
    if bad:
        raise IndexError(f"frame indices {bad[:5]} outside 0..{meta.frame_count - 1}")
    why = "requested"
    if decoder == "auto":
        decoder, why = choose_decoder(meta, "auto")
    elif decoder not in DECODERS:
        raise MmtokError(f"unknown decoder {decoder!r}", hint=f"use one of {', '.join(DECODERS)}")
    warnings: list[str] = []
    if not indices:
        return DecodedFrames([], [], [], decoder, why, warnings)
    wanted = sorted(set(indices))
    got: dict[int, np.ndarray] | None = None
    decoded = [0]  # frames the PyAV decoder produced (its cost)
    if decoder == "decord":
        known = decord_problems(meta) if why == "requested" else []
        if known:  # the user asked for decord (e.g. to match a reference loader): say so
            warnings.append("decord may return wrong frames here: " + "; ".join(known))
        got, problem = _decode_decord(source, meta, wanted, threads)
        if got is None:
            warnings.append(f"decord fell back to PyAV: {problem}")
            decoder, why = "pyav", f"decord disagreed: {problem}"
    if got is None:
        got = _decode_pyav(source, meta, wanted, threads, warnings, False, decoded)
        missing = [i for i in wanted if i not in got]
        if missing:
            # careful pass: frame threads silently drop the frames in flight around a decode
            # error, slice threads lose only the damaged ones (measured on a cut file: 67 vs
            # 69 of 69); and every picture is decoded
            got.update(_decode_pyav(source, meta, missing, threads, [], True, decoded))
    if not got:
        cut = any(w.startswith(("truncated", "shorter than")) for w in meta.warnings)
        reason = "truncated" if cut else "decode_error"
        raise VideoError(reason, "no requested frame could be decoded: " + "; ".join(warnings))
    missing = [i for i in wanted if i not in got]
    if missing:
        warnings.append(
            f"truncated: {len(missing)} of {len(wanted)} frames could not be decoded "
            f"(first {missing[0]}, pts {meta.pts[missing[0]]:.3f} s)"
        )
    kept = [i for i in indices if i in got]
    return DecodedFrames(
        frames=[got[i] for i in kept],
        pts=[float(meta.pts[i]) for i in kept],
        indices=kept,
        decoder=decoder,
        why=why,
        warnings=warnings,
        decoded_frames=decoded[0] if decoder == "pyav" else 0,
    )


def _target(source: Source) -> Any:
    if isinstance(source, bytes | bytearray | memoryview):
        return io.BytesIO(bytes(source))
    return os.fspath(source)


def _rotate(rgb: np.ndarray, rotation_cw: int) -> np.ndarray:
    if rotation_cw % 360 == 0:
        return rgb
    return np.ascontiguousarray(np.rot90(rgb, k=-(rotation_cw // 90)))  # rot90 turns anticlockwise


# --- decord ---------------------------------------------------------------------------------


def _decode_decord(
    source: Source, meta: VideoMeta, wanted: list[int], threads: int
) -> tuple[dict[int, np.ndarray] | None, str]:
    """Frames from decord, or (None, why) when decord cannot open the file or disagrees with
    the probe about which frame an index is."""
    from decord import DECORDError, VideoReader, cpu

    try:
        reader = VideoReader(_target(source), ctx=cpu(0), num_threads=threads)
    except (DECORDError, RuntimeError) as e:
        return None, f"cannot open: {str(e).splitlines()[0][:200]}"
    try:
        if len(reader) != meta.frame_count:
            return None, f"{len(reader)} frames, the demux shows {meta.frame_count}"
        # decord rebases timestamps to the first frame (measured); compare relative times
        stamps = reader.get_frame_timestamp([0, *wanted])[:, 0].astype(np.float64)
        ours = meta.pts[[0, *wanted]] - meta.pts[0]
        step = float(np.min(np.diff(meta.pts))) if meta.frame_count > 1 else 1.0
        err = float(np.max(np.abs((stamps - stamps[0]) - ours)))
        if err > max(step / 2, 1e-3):
            return None, f"its timestamps differ from the demux by up to {err:.3f} s"
        batch = reader.get_batch(wanted).asnumpy()
    except (DECORDError, RuntimeError) as e:
        return None, str(e).splitlines()[0][:200]
    finally:
        del reader  # the reader decodes ahead while it lives (video.md 0.3)
    frames = {}
    for i, rgb in zip(wanted, batch, strict=True):
        # decord turns MP4 rotations itself (90, 180, 270: measured); turn only what it did not
        if meta.rotation in (90, 270) and rgb.shape[:2] == meta.coded_size[::-1]:
            rgb = _rotate(rgb, meta.rotation)
        frames[i] = np.ascontiguousarray(rgb)
    return frames, ""


# --- PyAV -----------------------------------------------------------------------------------


def _decode_pyav(
    source: Source,
    meta: VideoMeta,
    wanted: list[int],
    threads: int,
    warnings: list[str],
    careful: bool,
    counter: list[int] | None = None,
) -> dict[int, np.ndarray]:
    """Frames by pts: one seek per keyframe the requested frames depend on (frames of one GOP
    share it), decode forward, keep the frames whose pts is requested."""
    import av

    run = _Run(meta, warnings, skip_nonref=not careful)
    groups: dict[int, list[int]] = {}
    for i in wanted:
        groups.setdefault(int(meta.start_keyframe[i]), []).append(i)
    try:
        container = av.open(_target(source), metadata_errors="ignore")
    except av.error.FFmpegError as e:
        warnings.append(f"damaged: PyAV cannot open the file ({e})")
        return run.got
    with container:
        stream = _video_stream(container)
        stream.thread_type = "SLICE" if careful else "AUTO"
        stream.codec_context.thread_count = threads
        for _start, members in sorted(groups.items()):
            run.decode(container, stream, int(meta.keyframe_ticks[members[0]]), members)
        missed = [i for i in wanted if i not in run.got]
        cut = meta.header_frames > meta.packets  # a truncated file: the rest is missing
        if missed and not cut and not any(w.startswith("damaged") for w in warnings):
            # a seek landed after the keyframe (an inexact index): decode from the first one
            warnings.append(f"{len(missed)} frames missed after seeking; decoded from the start")
            run.decode(container, stream, int(meta.keyframe_ticks.min()), missed)
    if counter is not None:
        counter[0] += run.decoded
    return run.got


def _video_stream(container):
    import av

    attached = av.stream.Disposition.attached_pic
    return next(s for s in container.streams.video if not (s.disposition & attached))


class _Run:
    """The frames found so far by one PyAV decode, and how many frames it decoded."""

    def __init__(self, meta: VideoMeta, warnings: list[str], skip_nonref: bool):
        self.meta, self.warnings = meta, warnings
        self.rotation = meta.rotation
        self.got: dict[int, np.ndarray] = {}
        self.decoded = 0
        # FFmpeg's own H.264/HEVC decoders read skip_frame per packet, frame threads included
        # (the setting is copied at submit); dav1d (AV1) applies it later and lost frames
        self.skip_nonref = skip_nonref and meta.codec in ("h264", "hevc")

    def decode(self, container, stream, seek_to: int, members: list[int]) -> None:
        """Seek backward to a keyframe at or before `seek_to` and decode forward until every
        member's pts is passed."""
        import av

        targets = {int(self.meta.pts_ticks[i]): i for i in members}
        last = max(targets)
        try:
            container.seek(seek_to, backward=True, any_frame=False, stream=stream)
            stream.codec_context.flush_buffers()
        except av.error.FFmpegError as e:
            self.warnings.append(f"damaged: seek failed ({e})")
            return
        try:
            ctx = stream.codec_context
            for packet in container.demux(stream):
                if self.skip_nonref:
                    # a picture nothing refers to and nobody asked for need not be decoded
                    asked = packet.pts is None or packet.pts in targets
                    ctx.skip_frame = "DEFAULT" if asked else "NONREF"
                try:
                    frames = packet.decode()
                except av.error.InvalidDataError as e:
                    self.warnings.append(f"damaged: packet at dts {packet.dts} ({e})")
                    continue
                for frame in frames:
                    self.decoded += 1
                    t = frame.pts if frame.pts is not None else frame.dts
                    if t in targets and targets[t] not in self.got:
                        self.got[targets[t]] = self._rgb(frame)
                    if t is not None and t >= last:
                        return
        except av.error.FFmpegError as e:
            self.warnings.append(f"damaged: demuxing stopped ({e})")

    def _rgb(self, frame) -> np.ndarray:
        turn = (-frame.rotation) % 360  # FFmpeg's display matrix, as the frame carries it
        if turn and turn != self.rotation:
            self.warnings.append(
                f"the frames carry a {turn} degree rotation the probe did not see; applied it"
            )
            self.rotation = turn
        return _rotate(frame.to_ndarray(format="rgb24"), self.rotation)
