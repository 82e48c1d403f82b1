"""SampleFramesStage: one video row in, one image row per sampled frame out.

Per video: demux (`probe_video`, no decode), choose the frames by presented timestamp
(`mmtok.video.sampling`), choose the decoder (`choose_decoder`: decord where it is exact, PyAV
where decord is known to be wrong), decode exactly those frames, encode each as JPEG or PNG.
A bad file becomes a reject with its reason (`VideoError.reason`, `too_short`, ...).

Isolation is the executor's (`Stage.isolate`): a video that hangs its decoder is killed after
`--timeout` seconds and becomes a `timeout` reject, one that kills its process a
`decoder_crash` reject. Before handing a video to decord the stage leaves a marker file in
`attempts_dir`; a marker that is still there when the executor retries the video alone (in a
fresh worker) means decord hung or crashed on it, and the retry uses PyAV (the one retry with
PyAV of shared/design/video.md §5.4).

Each frame row carries `video_info`, the video's facts as JSON (probe, decoder and why,
warnings, vision tokens under the preset), from which the command writes `videos.parquet`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from mmtok.engine import stage as stage_module
from mmtok.engine.stage import Stage, StageResult
from mmtok.images.probe import BadImage, image_input
from mmtok.io.encoding import path_text
from mmtok.io.schema import IMAGE_TYPE, make_rejects
from mmtok.presets.layout import Refused
from mmtok.reasons import Reason
from mmtok.video.sampling import SamplingSpec, TooShort, sample_frames
from mmtok.video.tokens import video_tokens

FRAME_FORMATS = ("jpeg", "png", "raw")
JPEG_QUALITY = 95  # "high quality": 4:4:4 chroma, so thin detail and text survive

FRAME_FIELDS = [
    pa.field("image", IMAGE_TYPE),  # the frame, encoded (null with --frame-format raw)
    pa.field("video_id", pa.string()),  # the id of the video row the frame came from
    pa.field("video_path", pa.string()),  # null when the video came as bytes
    pa.field("sample_index", pa.int32()),  # position in the sample (0 .. n-1)
    pa.field("frame_index", pa.int32()),  # the frame's index in presentation order
    pa.field("pts_s", pa.float64()),  # presentation time on the container's clock
    pa.field("time_s", pa.float64()),  # seconds from the first presented frame
    pa.field("requested_s", pa.float64()),  # the time the sampling rule asked for
    pa.field("width", pa.int32()),  # of the stored frame
    pa.field("height", pa.int32()),
    pa.field("decoder", pa.string()),
    pa.field("pixels", pa.large_binary()),  # --frame-format raw: RGB uint8, row-major
    pa.field("video_info", pa.string()),  # JSON: the video's row of videos.parquet
]


@dataclass(frozen=True)
class FrameOptions:
    frame_format: str = "jpeg"
    max_side: int | None = None
    jpeg_quality: int = JPEG_QUALITY

    def __post_init__(self) -> None:
        if self.frame_format not in FRAME_FORMATS:
            raise ValueError(f"frame format {self.frame_format!r}; one of {FRAME_FORMATS}")


def encode_frame(rgb: np.ndarray, options: FrameOptions) -> tuple[bytes, int, int]:
    """(bytes, width, height) of one frame, shrunk to `max_side` if larger."""
    from PIL import Image

    height, width = rgb.shape[:2]
    image = None
    if options.max_side and max(width, height) > options.max_side:
        scale = options.max_side / max(width, height)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = Image.fromarray(rgb).resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
        width, height = image.size
    if options.frame_format == "raw":
        data = np.asarray(image) if image is not None else rgb
        return np.ascontiguousarray(data, dtype=np.uint8).tobytes(), width, height
    image = image or Image.fromarray(rgb)
    out = io.BytesIO()
    if options.frame_format == "png":
        image.save(out, format="PNG", compress_level=1)
    else:
        image.save(out, format="JPEG", quality=options.jpeg_quality, subsampling=0)
    return out.getvalue(), width, height


def video_source(row: dict[str, Any]) -> str | bytes:
    """The path or bytes of a row's video; raises VideoRejected (no value, missing file)."""
    try:
        source = image_input(row["image"])
    except BadImage as e:
        raise VideoRejected(e.reason, e.message) from None
    if isinstance(source, bytes) and row["image"].get("bytes") is None:
        source = os.fsdecode(source)  # a file: URI of a name that is not UTF-8
    if isinstance(source, str):
        name = path_text(source)  # a path of non-UTF-8 bytes is named by its file: URI
        if not os.path.lexists(source):  # (False for a name holding a NUL byte)
            raise VideoRejected(Reason.MISSING_FILE, f"no such file: {name}")
        if not os.path.isfile(source) or not os.access(source, os.R_OK):
            raise VideoRejected(Reason.READ_ERROR, f"not a readable regular file: {name}")
    return source


class VideoRejected(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason, self.message = str(reason), message


class SampleFramesStage(Stage):
    """Videos in (`image` holds the video's path or bytes), frames out."""

    name: ClassVar[str] = "sample_frames"
    isolate: ClassVar[bool] = True
    expands_rows: ClassVar[bool] = True
    row_retries: ClassVar[int] = 1  # the retry with PyAV of a video decord hung or crashed on

    def __init__(
        self,
        spec: SamplingSpec,
        *,
        decoder: str = "auto",
        frames: FrameOptions | None = None,
        preset: str | None = None,
        attempts_dir: str | None = None,
        decode_threads: int = 1,
        recycle_after: int | None = None,
    ):
        self.recycle_after = recycle_after  # videos per worker process (Stage.recycle_after)
        self.spec = spec
        self.decoder = decoder
        self.frames = frames or FrameOptions()
        self.preset = preset
        self.attempts_dir = attempts_dir  # markers of decord attempts (see the module doc)
        self.decode_threads = decode_threads

    def output_fields(self) -> list[pa.Field]:
        return FRAME_FIELDS

    def config(self) -> dict[str, Any]:
        return {
            "sampling": self.spec.to_dict(),
            "decoder": self.decoder,
            "frame_format": self.frames.frame_format,
            "max_side": self.frames.max_side,
            "jpeg_quality": self.frames.jpeg_quality,
            "preset": self.preset,
        }

    def setup(self) -> None:
        """Import the decoders once per worker, before its first video: their import time
        must not count against --timeout."""
        import av  # noqa: F401 - the probe's demuxer
        from PIL import Image

        from mmtok.video.decode import decord_available

        Image.init()
        if self.decoder != "pyav":
            decord_available()  # imports decord

    # -- one video ---------------------------------------------------------------------------

    def decode(self, source: str | bytes, meta: Any, indices: list[int], decoder: str) -> Any:
        """Decode `indices` with `decoder` (tests override this to hang or crash)."""
        from mmtok.video.decode import decode_frames

        return decode_frames(source, meta, indices, decoder, threads=self.decode_threads)

    def _marker(self, video_id: str) -> str | None:
        if self.attempts_dir is None:
            return None
        digest = hashlib.sha256(video_id.encode()).hexdigest()[:32]
        return os.path.join(self.attempts_dir, digest)

    def video_rows(self, row: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The frame rows of one video and its videos.parquet row; raises VideoRejected."""
        from mmtok.video.decode import choose_decoder
        from mmtok.video.probe import VideoError, probe_video

        source = video_source(row)
        path = source if isinstance(source, str) else None
        video_id = row["id"]
        try:
            meta = probe_video(source)
            sample = sample_frames(meta.pts, self.spec, key=video_id)
        except VideoError as e:
            raise VideoRejected(e.reason, e.message) from None
        except TooShort as e:
            raise VideoRejected(Reason.TOO_SHORT, e.message) from None
        decoder, why = choose_decoder(meta, self.decoder)
        marker = self._marker(video_id)
        if decoder == "decord" and marker is not None and os.path.exists(marker):
            decoder, why = "pyav", "retried with PyAV: decord hung or crashed on this video"
        if decoder == "decord" and marker is not None:
            with open(marker, "w"):
                pass
        try:
            decoded = self.decode(source, meta, list(sample.indices), decoder)
        except VideoError as e:
            raise VideoRejected(e.reason, e.message) from None
        finally:  # not reached when the decoder hangs or kills the process: the marker stays
            if marker is not None and os.path.exists(marker):
                os.remove(marker)
        if decoded.decoder != decoder:  # decord disagreed with the probe: PyAV took over
            decoder, why = decoded.decoder, decoded.why
        tokens = None
        if self.preset is not None:
            width, height = meta.display_size
            counted = video_tokens(self.preset, len(sample.indices), width, height)
            tokens = None if isinstance(counted, Refused) else counted.vision_tokens
        info = {
            "video_id": video_id,
            "video_path": path,
            **meta.to_row(),
            "decoder": decoder,
            "decoder_why": why,
            "warnings": [*meta.warnings, *decoded.warnings],
            "frames_sampled": len(sample.indices),
            "frames_written": len(decoded.indices),
            "preset": self.preset,
            "vision_tokens": tokens,
        }
        info_text = json.dumps(info, default=_json_default)
        by_index = dict(zip(decoded.indices, decoded.frames, strict=True))
        first_pts = float(meta.pts[0])
        rows = []
        for k, (index, requested) in enumerate(zip(sample.indices, sample.requested, strict=True)):
            if index not in by_index:  # past the damage of a truncated file
                continue
            data, width, height = encode_frame(by_index[index], self.frames)
            raw = self.frames.frame_format == "raw"
            pts = float(meta.pts[index])
            rows.append(
                {
                    "id": f"{video_id}#{k}",
                    "image": None if raw else {"path": None, "bytes": data},
                    "video_id": video_id,
                    "video_path": path,
                    "sample_index": k,
                    "frame_index": index,
                    "pts_s": pts,
                    "time_s": pts - first_pts,
                    "requested_s": requested,
                    "width": width,
                    "height": height,
                    "decoder": decoder,
                    "pixels": data if raw else None,
                    "video_info": info_text,
                }
            )
        return rows, info

    # -- a batch -----------------------------------------------------------------------------

    def process(self, rows: pa.Table) -> StageResult:
        kept_parts: list[pa.Table] = []
        bad, reasons, messages = [], [], []
        for i, row in enumerate(rows.select(["id", "image"]).to_pylist()):
            try:
                frame_rows, _ = self.video_rows(row)
            except VideoRejected as e:
                bad.append(i)
                reasons.append(e.reason)
                messages.append(e.message)
                continue
            finally:
                if stage_module._row_done is not None:  # the executor's watchdog: one video done
                    stage_module._row_done()
            # the video row's other columns (caption, passthrough) repeat on each of its frames
            base = rows.slice(i, 1).take(np.zeros(len(frame_rows), dtype=np.int64))
            base = base.set_column(
                base.schema.get_field_index("id"),
                "id",
                pa.array([r["id"] for r in frame_rows], pa.string()),
            )
            for field in FRAME_FIELDS:
                column = pa.array([r[field.name] for r in frame_rows], field.type)
                index = base.schema.get_field_index(field.name)
                if index >= 0:
                    base = base.set_column(index, field, column)
                else:
                    base = base.append_column(field, column)
            kept_parts.append(base)
        if kept_parts:
            kept = pa.concat_tables(kept_parts)
        else:
            kept = rows.slice(0, 0)
            for field in FRAME_FIELDS:
                if field.name not in kept.column_names:
                    kept = kept.append_column(field, pa.array([], field.type))
        rejected = make_rejects(rows.take(pa.array(bad, pa.int64())), self.name, reasons, messages)
        return StageResult(kept, rejected)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


# -- videos.parquet -------------------------------------------------------------------------------

VIDEO_FIELDS = [
    pa.field("video_id", pa.string()),
    pa.field("video_path", pa.string()),
    pa.field("container", pa.string()),
    pa.field("codec", pa.string()),
    pa.field("duration", pa.float64()),
    pa.field("header_fps", pa.float64()),
    pa.field("measured_fps", pa.float64()),
    pa.field("vfr", pa.bool_()),
    pa.field("frame_count", pa.int64()),
    pa.field("header_frames", pa.int64()),
    pa.field("width", pa.int32()),  # display size (rotation applied)
    pa.field("height", pa.int32()),
    pa.field("coded_width", pa.int32()),
    pa.field("coded_height", pa.int32()),
    pa.field("rotation", pa.int32()),
    pa.field("start_time", pa.float64()),
    pa.field("open_gop", pa.bool_()),
    pa.field("edit_list", pa.bool_()),
    pa.field("discarded_packets", pa.int64()),
    pa.field("file_size", pa.int64()),
    pa.field("decoder", pa.string()),
    pa.field("decoder_why", pa.string()),
    pa.field("warnings", pa.list_(pa.string())),
    pa.field("frames_sampled", pa.int32()),
    pa.field("frames_written", pa.int32()),
    pa.field("preset", pa.string()),
    pa.field("vision_tokens", pa.int64()),
]


class VideoTable:
    """Observer of the kept frame rows: one row per video for `videos.parquet`, in the order
    the videos came."""

    columns = ["video_id", "video_info"]

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}

    def add(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        ids = table.column("video_id").to_pylist()
        infos = table.column("video_info").to_pylist()
        for video_id, info in zip(ids, infos, strict=True):
            if video_id not in self.rows and info is not None:
                self.rows[video_id] = json.loads(info)

    def table(self) -> pa.Table:
        """The videos, in an explicit schema (fields the probe adds later come after it)."""
        rows = list(self.rows.values())
        known = {f.name for f in VIDEO_FIELDS}
        extra = sorted({k for r in rows for k in r} - known)
        columns = [pa.array([r.get(f.name) for r in rows], f.type) for f in VIDEO_FIELDS]
        fields = list(VIDEO_FIELDS)
        for name in extra:
            values = [r.get(name) for r in rows]
            try:
                column = pa.array(values)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                column = pa.array([None if v is None else json.dumps(v) for v in values])
            columns.append(column)
            fields.append(pa.field(name, column.type))
        return pa.Table.from_arrays(columns, schema=pa.schema(fields))

    def summary(self) -> dict[str, Any]:
        rows = list(self.rows.values())
        decoders: dict[str, int] = {}
        for r in rows:
            decoders[r["decoder"]] = decoders.get(r["decoder"], 0) + 1
        tokens = [r["vision_tokens"] for r in rows if r.get("vision_tokens") is not None]
        return {
            "videos": len(rows),
            "frames": sum(r["frames_written"] for r in rows),
            "seconds_of_video": round(sum(r["duration"] or 0 for r in rows), 3),
            "decoders": dict(sorted(decoders.items())),
            "videos_with_warnings": sum(1 for r in rows if r["warnings"]),
            "total_vision_tokens": sum(tokens) if tokens else None,
            "mean_vision_tokens": sum(tokens) / len(tokens) if tokens else None,
        }
