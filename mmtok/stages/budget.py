"""BudgetStage: per row, under each preset, the tokens and bytes of `../shared/design/budget.md`.

Runs after ProbeStage, from the header only. Adds `rgb_bytes` (w*h*3), `text_tokens` (caption)
and one struct column per preset, named by the preset as given (`qwen2-vl:max_pixels=1003520`),
holding image_tokens, prompt_tokens, num_tiles, pixel_bytes_uint8/fp32, bytes_per_token
(file bytes / image tokens), sequence_tokens (prompt + text: what must fit the context),
overflow (sequence tokens > --context) and error (the size this preset refuses; the other
fields are then null). A size one preset refuses is not a reject: the others still count it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmtok.engine.stage import Stage, StageResult
from mmtok.errors import MmtokError
from mmtok.images.probe import SWAPS_SIDES
from mmtok.io.schema import conform, make_rejects, reject_schema, with_fields
from mmtok.presets import Preset, Refused
from mmtok.text import TextCounter

LAYOUT_CACHE = 8192  # distinct sizes per preset per worker
_SWAPS = sorted(SWAPS_SIDES)  # EXIF orientations 5-8 transpose: a range
assert list(range(_SWAPS[0], _SWAPS[-1] + 1)) == _SWAPS

PRESET_TYPE = pa.struct(
    [
        pa.field("image_tokens", pa.int64()),
        pa.field("prompt_tokens", pa.int64()),
        pa.field("num_tiles", pa.int32()),
        pa.field("pixel_bytes_uint8", pa.int64()),
        pa.field("pixel_bytes_fp32", pa.int64()),
        pa.field("bytes_per_token", pa.float64()),
        pa.field("sequence_tokens", pa.int64()),
        pa.field("overflow", pa.bool_()),
        pa.field("error", pa.string()),
    ]
)


class BudgetStage(Stage):
    name: ClassVar[str] = "budget"

    def __init__(
        self,
        presets: dict[str, Preset],
        text: TextCounter,
        *,
        context: int | None = None,
        apply_exif: bool = True,
    ):
        self.presets = presets  # label -> preset (objects, so TOML presets reach workers)
        self.text = text
        self.context = context
        self.apply_exif = apply_exif

    def output_fields(self) -> list[pa.Field]:
        return [
            pa.field("rgb_bytes", pa.int64()),
            pa.field("text_tokens", pa.int64()),
            *(pa.field(label, PRESET_TYPE) for label in self.presets),
        ]

    def config(self) -> dict[str, Any]:
        return {
            "presets": {label: p.spec() for label, p in self.presets.items()},
            "text_tokens": self.text.label,
            "context": self.context,
            "apply_exif": self.apply_exif,
        }

    def setup(self) -> None:
        self.text.setup()
        # Sizes repeat across a dataset (cameras, thumbnails, crawled sizes): lay each one out
        # once per worker and keep its numbers. Bounded, so memory does not grow with the rows.
        # Per preset: the sizes kept (w << 32 | h), sorted, and their NUMBERS as columns, so
        # a batch of known sizes is looked up and gathered by numpy alone; refusal messages.
        self._known: dict[str, np.ndarray] = {label: _NO_KEYS for label in self.presets}
        self._table: dict[str, np.ndarray] = {label: _NO_NUMBERS for label in self.presets}
        self._errors: dict[str, dict[int, str]] = {label: {} for label in self.presets}

    def process(self, rows: pa.Table) -> StageResult:
        """Columnar: each distinct (width, height) is laid out once per preset and worker, and
        the per-row columns are gathered from those numbers with numpy."""
        width = _ints(rows.column("width"))
        height = _ints(rows.column("height"))
        if self.apply_exif:
            o = _ints(rows.column("exif_orientation"))
            swap = (o >= _SWAPS[0]) & (o <= _SWAPS[-1])  # in SWAPS_SIDES, without np.isin
            width, height = np.where(swap, height, width), np.where(swap, width, height)
        file_bytes = _ints(rows.column("file_bytes"))
        text_tokens = np.asarray(self.text.count(rows.column("caption").to_pylist()), np.int64)
        keys, inverse = np.unique((width << 32) | height, return_inverse=True)
        out = rows.append_column("rgb_bytes", pa.array(width * height * 3, pa.int64()))
        out = out.append_column("text_tokens", pa.array(text_tokens, pa.int64()))
        for label in self.presets:
            numbers, errors = self._numbers(label, keys)
            column = self._column(numbers[:, inverse], errors, inverse, file_bytes, text_tokens)
            out = out.append_column(pa.field(label, PRESET_TYPE), column)
        return StageResult(out, make_rejects(rows.slice(0, 0), self.name, [], []))

    def _numbers(self, label: str, keys: np.ndarray) -> tuple[np.ndarray, list[str | None] | None]:
        """NUMBERS of the distinct sizes `keys` (sorted), as columns (7, len(keys)), and their
        refusal messages (None when the preset refuses none of them)."""
        known, table = self._known[label], self._table[label]
        at = np.searchsorted(known, keys)
        found = at < len(known)
        found[found] = known[at[found]] == keys[found]
        if found.all():
            numbers = table[:, at]
        else:
            new = keys[~found]
            laid = np.array([self._layout(label, k) for k in new.tolist()], np.int64)
            laid = laid.reshape(-1, len(NUMBERS)).T
            numbers = np.empty((len(NUMBERS), len(keys)), np.int64)
            numbers[:, found] = table[:, at[found]]
            numbers[:, ~found] = laid
            room = LAYOUT_CACHE - len(known)
            if room > 0:  # as many as fit, smallest first
                merged = np.concatenate([known, new[:room]])
                order = np.argsort(merged, kind="stable")
                self._known[label] = merged[order]
                self._table[label] = np.concatenate([table, laid[:, :room]], axis=1)[:, order]
        if not numbers[0].any():
            return numbers, None
        refusals = self._errors[label]
        return numbers, [refusals.get(key) for key in keys.tolist()]

    def _layout(self, label: str, key: int) -> tuple[int, ...]:
        """One size's NUMBERS under one preset (its refusal message kept aside)."""
        x = self.presets[label].layout(key >> 32, key & 0xFFFFFFFF)
        if isinstance(x, Refused):
            self._errors[label][key] = x.error
            return (1, 0, 0, 0, 0, 0, 1)
        u8, fp32 = x.pixel_bytes_uint8, x.pixel_bytes_fp32
        return (0, x.image_tokens, x.prompt_tokens, x.num_tiles, u8 or 0, fp32 or 0,
                int(u8 is None))  # fmt: skip

    def _column(
        self,
        numbers: np.ndarray,
        errors: list[str | None] | None,
        inverse: np.ndarray,
        file_bytes: np.ndarray,
        text_tokens: np.ndarray,
    ) -> pa.Array:
        """One preset's struct column from the rows' NUMBERS (columns; null where refused)."""
        null, image, prompt = numbers[0] == 1, numbers[1], numbers[2]
        no_pixels = numbers[6] == 1
        # a mask only where a value is null: Arrow then needs no validity bitmap
        mask = null if errors is not None else None
        pixels_mask = no_pixels if no_pixels.any() else None
        sequence = prompt + text_tokens
        with np.errstate(divide="ignore", invalid="ignore"):
            per_token = file_bytes / image
        per_token_null = null | (image == 0)
        per_token_mask = per_token_null if per_token_null.any() else None
        n = len(null)
        if self.context:
            overflow = pa.array(sequence > self.context, pa.bool_(), mask=mask)
        else:
            overflow = pa.nulls(n, pa.bool_())
        arrays = [
            pa.array(image, pa.int64(), mask=mask),
            pa.array(prompt, pa.int64(), mask=mask),
            pa.array(numbers[3].astype(np.int32), pa.int32(), mask=mask),
            pa.array(numbers[4], pa.int64(), mask=pixels_mask),
            pa.array(numbers[5], pa.int64(), mask=pixels_mask),
            pa.array(per_token, pa.float64(), mask=per_token_mask),
            pa.array(sequence, pa.int64(), mask=mask),
            overflow,
            pa.array(errors, pa.string()).take(pa.array(inverse))
            if errors is not None
            else pa.nulls(n, pa.string()),
        ]
        return pa.StructArray.from_arrays(arrays, fields=_PRESET_FIELDS)


# per distinct size: refused, image tokens, prompt tokens, tiles, uint8 bytes, fp32 bytes,
# no pixel tensor (1/0)
NUMBERS = ("refused", "image", "prompt", "tiles", "uint8", "fp32", "no_pixels")
_NO_KEYS = np.empty(0, np.int64)
_NO_NUMBERS = np.empty((len(NUMBERS), 0), np.int64)
_PRESET_FIELDS = list(PRESET_TYPE)


def _ints(column: pa.ChunkedArray) -> np.ndarray:
    """An integer column as int64, nulls as 0 (exif_orientation is null when absent)."""
    return column.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)


# -- videos among the images ----------------------------------------------------------------------

# first bytes of the containers a video row may hold as bytes (a tar member, a Parquet cell)
_VIDEO_MAGIC = (b"\x1a\x45\xdf\xa3",)  # Matroska / WebM (EBML)
_BMFF_BOXES = (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip")
MEDIA_FIELD = pa.field("media", pa.string())  # "image" or "video"
VIDEO_BUDGET_FIELDS = [
    MEDIA_FIELD,
    pa.field("video_frames", pa.int64()),  # presented frames in the file
    pa.field("video_duration", pa.float64()),  # seconds
]


def video_rows(image: pa.ChunkedArray) -> np.ndarray:
    """`is_video` of every row of an `image` column, as a bool array (the paths looked at as
    strings, the bytes by their first 12 bytes: no dict per row)."""
    from mmtok.io.sources import VIDEO_EXTENSIONS

    out = np.zeros(len(image), dtype=bool)
    at = 0
    for chunk in image.chunks:
        if chunk.null_count == len(chunk):
            at += len(chunk)
            continue
        paths = chunk.field("path").to_pylist()
        data = chunk.field("bytes")
        valid = chunk.is_valid().to_pylist() if chunk.null_count else None
        heads = pc.binary_slice(data, 0, 12).to_pylist() if data.null_count < len(data) else None
        for i, path in enumerate(paths):
            if valid is not None and not valid[i]:
                continue
            head = heads[i] if heads is not None else None
            if head is not None:
                out[at + i] = _video_head(head)
            elif path and "." in path:
                out[at + i] = path.rsplit(".", 1)[-1].lower() in VIDEO_EXTENSIONS
        at += len(chunk)
    return out


def _video_head(head: bytes) -> bool:
    if head[4:8] == b"ftyp":
        return head[8:12] not in (b"avif", b"avis", b"heic", b"heix", b"mif1", b"msf1")
    return (
        head[4:8] in _BMFF_BOXES[1:]
        or head.startswith(_VIDEO_MAGIC)
        or (head[:4] == b"RIFF" and head[8:12] == b"AVI ")
    )


def is_video(image: dict | None) -> bool:
    """A row whose `image` holds a video: by the path's extension, or the bytes' signature
    (MP4/MOV boxes other than an AVIF/HEIF image's `ftyp`, Matroska/WebM, AVI)."""
    from mmtok.io.sources import VIDEO_EXTENSIONS

    if not image:
        return False
    data = image.get("bytes")
    if data is not None:
        return _video_head(bytes(data[:12]))
    path = image.get("path") or ""
    return path.rsplit(".", 1)[-1].lower() in VIDEO_EXTENSIONS if "." in path else False


class VideoBudgetStage(Stage):
    """The probe and budget columns of video rows, from the container alone (`probe_video`:
    demux, no decode): per preset, the frames its video rule samples, their vision tokens,
    the uint8 pixels they are fed as (`pixel_bytes_uint8`) and file bytes per token. Under a
    preset with no video rule the video is refused (`error`), not rejected.

    `rgb_bytes` of a video: the decoded RGB frames the first preset samples, at the video's
    size. `frames` (a probe column): the frames the first preset samples."""

    name: ClassVar[str] = "video_probe"
    isolate: ClassVar[bool] = True

    def __init__(self, budget: BudgetStage):
        self.budget = budget

    def output_fields(self) -> list[pa.Field]:
        from mmtok.stages.probe import PROBE_FIELDS

        return [*PROBE_FIELDS, *self.budget.output_fields(), *VIDEO_BUDGET_FIELDS]

    def config(self) -> dict[str, Any]:
        return {
            "video_rules": {
                label: _video_name(label, p) for label, p in self.budget.presets.items()
            }
        }

    def setup(self) -> None:
        self.budget.text.setup()

    def _row(self, row: dict[str, Any], text_tokens: int) -> dict[str, Any]:
        from mmtok import budget as b
        from mmtok.stages.frames import VideoRejected, video_source
        from mmtok.video.probe import VideoError, probe_video

        source = video_source(row)
        try:
            meta = probe_video(source)
        except VideoError as e:
            raise VideoRejected(e.reason, e.message) from None
        width, height = meta.display_size
        out: dict[str, Any] = {
            "width": meta.coded_size[0],
            "height": meta.coded_size[1],
            "display_width": width,
            "display_height": height,
            "format": f"video/{meta.codec}",
            "mode": "RGB",
            "frames": None,
            "exif_orientation": None,
            "file_bytes": meta.file_size,
            "text_tokens": text_tokens,
            "media": "video",
            "video_frames": meta.frame_count,
            "video_duration": meta.duration,
        }
        context = self.budget.context
        for label, preset in self.budget.presets.items():
            name = b.video_preset_name(label, preset)
            cost = (
                b.video_cost(name, meta.pts, width, height)
                if name
                else f"{preset.name} has no video rule in mmtok"
            )
            if isinstance(cost, str):
                out[label] = {"error": cost}
                continue
            sequence = cost.vision_tokens + text_tokens
            out[label] = {
                "image_tokens": cost.vision_tokens,
                "prompt_tokens": cost.vision_tokens,
                "num_tiles": cost.frames,
                "pixel_bytes_uint8": cost.pixel_bytes_uint8,
                "pixel_bytes_fp32": 4 * cost.pixel_bytes_uint8,
                "bytes_per_token": meta.file_size / cost.vision_tokens
                if cost.vision_tokens
                else None,
                "sequence_tokens": sequence,
                "overflow": sequence > context if context else None,
                "error": None,
            }
            if out["frames"] is None:
                out["frames"] = cost.frames
                out["rgb_bytes"] = cost.frames * width * height * 3
        out.setdefault("rgb_bytes", 0)
        return out

    def process(self, rows: pa.Table) -> StageResult:
        from mmtok.engine import stage as stage_module
        from mmtok.stages.frames import VideoRejected

        require_pyav()
        fields = self.output_fields()
        values: dict[str, list] = {f.name: [] for f in fields}
        keep, reasons, messages = [], [], []
        captions = rows.column("caption").to_pylist()
        text_tokens = self.budget.text.count(captions)
        for row, tokens in zip(rows.select(["id", "image"]).to_pylist(), text_tokens, strict=True):
            try:
                out = self._row(row, int(tokens))
            except VideoRejected as e:
                keep.append(False)
                reasons.append(e.reason)
                messages.append(e.message)
                continue
            finally:
                if stage_module._row_done is not None:
                    stage_module._row_done()
            keep.append(True)
            for f in fields:
                values[f.name].append(out.get(f.name))
        mask = pa.array(keep, pa.bool_())
        kept = rows.filter(mask)
        for f in fields:
            column = pa.array(values[f.name], f.type)
            index = kept.schema.get_field_index(f.name)
            kept = (
                kept.set_column(index, f, column) if index >= 0 else kept.append_column(f, column)
            )
        rejected = make_rejects(rows.filter(pa.compute.invert(mask)), self.name, reasons, messages)
        return StageResult(kept, rejected)


def require_pyav() -> None:
    """Videos need PyAV (the `video` extra); images never do."""
    try:
        import av  # noqa: F401
    except ImportError:
        raise MmtokError(
            "the inputs hold videos, which need PyAV", hint="pip install 'mmtok[video]'"
        ) from None


def _video_name(label: str, preset: Preset) -> str | None:
    from mmtok import budget as b

    return b.video_preset_name(label, preset)


class MediaBudgetStage(Stage):
    """estimate-budget over images and videos mixed: image rows go through the image stages
    (probe, budget), video rows through `VideoBudgetStage`; the rows keep their order and
    every row has the columns of both (`media` says which it is)."""

    name: ClassVar[str] = "media_budget"
    isolate: ClassVar[bool] = True

    def __init__(self, image_stages: list[Stage], video_stage: VideoBudgetStage):
        self.image_stages = image_stages
        self.video_stage = video_stage
        self._target: tuple[pa.Schema, pa.Schema] | None = None  # (input, output) schemas

    def output_fields(self) -> list[pa.Field]:
        fields: dict[str, pa.Field] = {}
        for stage in [*self.image_stages, self.video_stage]:
            for f in stage.output_fields():
                fields[f.name] = f
        return list(fields.values())

    def config(self) -> dict[str, Any]:
        return {
            "images": [{"stage": s.name, **s.config()} for s in self.image_stages],
            "videos": {"stage": self.video_stage.name, **self.video_stage.config()},
        }

    def setup(self) -> None:
        for stage in self.image_stages:
            stage.setup()
        self.video_stage.setup()

    def process(self, rows: pa.Table) -> StageResult:
        videos = video_rows(rows.column("image"))
        if not videos.any():  # the common batch: images only, no reordering to undo
            return self._images(rows)
        return self._mixed(rows, videos)

    def _images(self, rows: pa.Table) -> StageResult:
        """`_mixed` for a batch without videos, without its row numbers, sort and concats."""
        schema = rows.schema
        rejected_parts = []
        for stage in self.image_stages:
            if rows.num_rows == 0:
                break
            result = stage.process(rows)
            rows = result.kept
            if result.rejected.num_rows:
                rejected_parts.append(result.rejected)
        rows = rows.append_column(MEDIA_FIELD, _repeat("image", rows.num_rows))
        # the output schema once per input schema (metadata included), not per batch (~30 us)
        if self._target is None or not self._target[0].equals(schema, check_metadata=True):
            self._target = (schema, with_fields(schema, self.output_fields()))
        kept = conform(rows, self._target[1])
        rejects = reject_schema(schema)
        if not rejected_parts:
            return StageResult(kept, rejects.empty_table())
        return StageResult(kept, pa.concat_tables([conform(t, rejects) for t in rejected_parts]))

    def _mixed(self, rows: pa.Table, videos: np.ndarray) -> StageResult:
        order = pa.array(np.arange(rows.num_rows), pa.int64())
        rows = rows.append_column("__row", order)
        kept_parts, rejected_parts = [], [make_rejects(rows.slice(0, 0), self.name, [], [])]
        image_rows = rows.filter(pa.array(~videos))
        for stage in self.image_stages:
            if image_rows.num_rows == 0:
                break
            result = stage.process(image_rows)
            image_rows = result.kept
            rejected_parts.append(result.rejected)
        kept_parts.append(
            image_rows.append_column(MEDIA_FIELD, _repeat("image", image_rows.num_rows))
        )
        if videos.any():
            result = self.video_stage.process(rows.filter(pa.array(videos)))
            kept_parts.append(result.kept)
            rejected_parts.append(result.rejected)
        schema = with_fields(rows.schema, self.output_fields())
        kept = pa.concat_tables([conform(t, schema) for t in kept_parts]).sort_by("__row")
        rejects = reject_schema(rows.schema)
        rejected = pa.concat_tables([conform(t, rejects) for t in rejected_parts])
        return StageResult(kept.drop(["__row"]), rejected.drop(["__row"]))


def _repeat(value: str, n: int) -> pa.Array:
    """A string column of one value (no list of n Python strings to convert)."""
    return pa.repeat(pa.scalar(value, pa.string()), n)
