"""ProbeStage: header-only image facts per row; optionally a full decode to catch truncation."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from mmtok.engine import stage as stage_module
from mmtok.engine.stage import RowStage, StageResult
from mmtok.images import DEFAULT_MAX_PIXELS, AlphaPolicy, decode_image, image_input, probe_image
from mmtok.images.probe import SWAPS_SIDES, image_source, probe_facts
from mmtok.io.schema import make_rejects
from mmtok.reasons import RowRejected
from mmtok.stats import PercentileSample

PROBE_FIELDS = [
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("display_width", pa.int32()),  # after the EXIF rotation
    pa.field("display_height", pa.int32()),
    pa.field("format", pa.string()),
    pa.field("mode", pa.string()),
    pa.field("frames", pa.int32()),
    pa.field("exif_orientation", pa.int8()),
    pa.field("file_bytes", pa.int64()),
]


class ProbeStage(RowStage):
    name: ClassVar[str] = "probe"
    input_columns: ClassVar[tuple[str, ...]] = ("image",)

    def __init__(
        self,
        *,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        decode_check: bool = False,
        allow_truncated: bool = False,
    ):
        self.max_pixels = max_pixels
        self.decode_check = decode_check
        self.allow_truncated = allow_truncated

    def output_fields(self) -> list[pa.Field]:
        return PROBE_FIELDS

    def config(self) -> dict[str, Any]:
        return {
            "max_pixels": self.max_pixels,
            "decode_check": self.decode_check,
            "allow_truncated": self.allow_truncated,
        }

    def setup(self) -> None:
        if self.max_pixels > DEFAULT_MAX_PIXELS:
            Image.MAX_IMAGE_PIXELS = None  # our own limit applies; Pillow's would refuse first

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        return dict(zip(_NAMES, self._probe(row["image"]), strict=True))

    def _probe(self, image: dict | None) -> tuple:
        """The values of PROBE_FIELDS for one `image` value; raises `BadImage`."""
        src = image_input(image)
        info = probe_image(src, self.max_pixels)
        if self.decode_check:
            self._decode(src)
        display_width, display_height = info.display_size
        orientation = info.exif_orientation
        if orientation is not None and not -128 <= orientation < 128:
            orientation = None  # does not fit the int8 column
        return (info.width, info.height, display_width, display_height, info.format, info.mode,
                info.frames, orientation, info.file_bytes)  # fmt: skip

    def _decode(self, src: str | bytes) -> None:
        decode_image(
            src,
            max_pixels=self.max_pixels,
            allow_truncated=self.allow_truncated,
            alpha=AlphaPolicy.DROP,
            exif_transpose=False,
        )

    def process(self, rows: pa.Table) -> StageResult:
        """`RowStage.process` with the image values read straight from their column's fields
        and the outputs gathered as tuples, turned into columns at the end: no dict or object
        in or out per row. A subclass with its own `process_row` gets `RowStage`'s loop."""
        if type(self).process_row is not ProbeStage.process_row:
            return super().process(rows)
        facts: list[tuple] = []
        keep, reasons, messages = [], [], []
        row_done = stage_module._row_done
        max_pixels, decode_check = self.max_pixels, self.decode_check
        for path, data in _image_values(rows.column("image")):
            try:
                src = image_source(path, data)
                values = probe_facts(src, max_pixels)
                if decode_check:
                    self._decode(src)
            except RowRejected as e:
                keep.append(False)
                reasons.append(e.reason)
                messages.append(e.message)
                continue
            finally:
                if row_done is not None:
                    row_done()
            keep.append(True)
            facts.append(values)
        if len(facts) == len(keep):
            kept, rejected = rows, rows.slice(0, 0)
        else:
            mask = pa.array(keep, pa.bool_())
            kept, rejected = rows.filter(mask), rows.filter(pc.invert(mask))
        for f, column in zip(PROBE_FIELDS, _columns(facts), strict=True):
            index = kept.schema.get_field_index(f.name)
            kept = (
                kept.set_column(index, f, column) if index >= 0 else kept.append_column(f, column)
            )
        return StageResult(kept, make_rejects(rejected, self.name, reasons, messages))


def _image_values(images: pa.ChunkedArray) -> Iterable[tuple[str | None, bytes | None]]:
    """(path, bytes) of each row's `image` struct, (None, None) for a null one (what
    `image_input` reads from its dict), without a dict per row."""
    kind = images.type
    if not (pa.types.is_struct(kind) and {f.name for f in kind} <= {"path", "bytes"}):
        return ((None, None) if i is None else (i.get("path"), i.get("bytes"))
                for i in images.to_pylist())  # fmt: skip
    # flatten: the fields of a null struct read as null
    columns = {f.name: c.to_pylist() for f, c in zip(kind, images.flatten(), strict=True)}
    none = [None] * len(images)
    return zip(columns.get("path", none), columns.get("bytes", none), strict=True)


def _columns(facts: list[tuple]) -> list[pa.Array]:
    """The PROBE_FIELDS columns of the facts tuples (`probe_facts` order: width, height,
    format, mode, frames, orientation, file_bytes)."""
    if not facts:
        return [pa.array([], f.type) for f in PROBE_FIELDS]
    width, height, formats, modes, frames, orientations, sizes = zip(*facts, strict=True)
    if SWAPS_SIDES.isdisjoint(orientations):
        display_width, display_height = width, height
    else:  # orientations 5-8 show the image turned by 90 degrees
        display_width = [
            h if o in SWAPS_SIDES else w
            for w, h, o in zip(width, height, orientations, strict=True)
        ]
        display_height = [
            w if o in SWAPS_SIDES else h
            for w, h, o in zip(width, height, orientations, strict=True)
        ]
    if not all(o is None or -128 <= o < 128 for o in set(orientations)):
        orientations = [o if o is None or -128 <= o < 128 else None for o in orientations]
    values = (width, height, display_width, display_height, formats, modes, frames, orientations,
              sizes)  # fmt: skip
    return [pa.array(v, f.type) for f, v in zip(PROBE_FIELDS, values, strict=True)]


_NAMES = tuple(f.name for f in PROBE_FIELDS)


class ProbeSummary:
    """Counts by format and mode, and size percentiles, over the probed rows of a run.

    Mergeable (`Observer.summary`): workers fill a part per batch (`empty`, `add`), the main
    process merges them in input order (`merge`)."""

    columns: ClassVar[list[str]] = ["format", "mode", "width", "height", "file_bytes", "frames"]

    def __init__(self):
        self.formats: Counter = Counter()
        self.modes: Counter = Counter()
        self.animated = 0
        self.samples = {
            # pixels and bytes are counts: their percentiles are values that occur
            k: PercentileSample(seed=i, integer=k != "megapixels")
            for i, k in enumerate(["width", "height", "megapixels", "file_bytes"])
        }

    def empty(self) -> ProbeSummary:
        part = ProbeSummary()
        part.samples = {k: s.empty() for k, s in self.samples.items()}
        return part

    def merge(self, part: ProbeSummary) -> None:
        self.formats.update(part.formats)  # new keys in the part's order, as `add` inserts them
        self.modes.update(part.modes)
        self.animated += part.animated
        for k, sample in self.samples.items():
            sample.merge(part.samples[k])

    def add(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        for counter, column in ((self.formats, "format"), (self.modes, "mode")):
            for item in pc.value_counts(table.column(column)).to_pylist():
                counter[item["values"]] += item["counts"]
        self.animated += pc.sum(pc.greater(table.column("frames"), 1)).as_py() or 0
        width = table.column("width").to_numpy(zero_copy_only=False).astype("float64")
        height = table.column("height").to_numpy(zero_copy_only=False).astype("float64")
        self.samples["width"].add(width)
        self.samples["height"].add(height)
        self.samples["megapixels"].add(width * height / 1e6)
        self.samples["file_bytes"].add(table.column("file_bytes").to_numpy(zero_copy_only=False))

    def to_dict(self) -> dict[str, Any]:
        return {
            "formats": dict(self.formats.most_common()),
            "modes": dict(self.modes.most_common()),
            "multi_frame": self.animated,
            "percentiles": {k: s.percentiles() for k, s in self.samples.items()},
            "percentiles_exact": all(s.exact for s in self.samples.values()),
        }
