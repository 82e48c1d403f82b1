"""ProbeStage: header-only image facts per row; optionally a full decode to catch truncation."""

from __future__ import annotations

from collections import Counter
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from mmtok.engine import stage as stage_module
from mmtok.engine.stage import RowStage, StageResult
from mmtok.images import DEFAULT_MAX_PIXELS, AlphaPolicy, decode_image, image_input, probe_image
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
            decode_image(
                src,
                max_pixels=self.max_pixels,
                allow_truncated=self.allow_truncated,
                alpha=AlphaPolicy.DROP,
                exif_transpose=False,
            )
        display_width, display_height = info.display_size
        orientation = info.exif_orientation
        if orientation is not None and not -128 <= orientation < 128:
            orientation = None  # does not fit the int8 column
        return (info.width, info.height, display_width, display_height, info.format, info.mode,
                info.frames, orientation, info.file_bytes)  # fmt: skip

    def process(self, rows: pa.Table) -> StageResult:
        """`RowStage.process` with the image values read straight from their column and the
        outputs gathered as columns: no dict in or out per row (a header read is ~10 us, the
        dicts were another 2). A subclass with its own `process_row` gets `RowStage`'s loop."""
        if type(self).process_row is not ProbeStage.process_row:
            return super().process(rows)
        columns: list[list] = [[] for _ in PROBE_FIELDS]
        keep, reasons, messages = [], [], []
        row_done = stage_module._row_done
        probe = self._probe
        for image in rows.column("image").to_pylist():
            try:
                values = probe(image)
            except RowRejected as e:
                keep.append(False)
                reasons.append(e.reason)
                messages.append(e.message)
                continue
            finally:
                if row_done is not None:
                    row_done()
            keep.append(True)
            for column, value in zip(columns, values, strict=True):
                column.append(value)
        if all(keep):
            kept, rejected = rows, rows.slice(0, 0)
        else:
            mask = pa.array(keep, pa.bool_())
            kept, rejected = rows.filter(mask), rows.filter(pc.invert(mask))
        for f, values in zip(PROBE_FIELDS, columns, strict=True):
            index = kept.schema.get_field_index(f.name)
            column = pa.array(values, f.type)
            kept = (
                kept.set_column(index, f, column) if index >= 0 else kept.append_column(f, column)
            )
        return StageResult(kept, make_rejects(rejected, self.name, reasons, messages))


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
