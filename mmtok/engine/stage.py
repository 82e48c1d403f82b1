"""The stage contract: configure in the constructor, `setup()` once per worker, then
`process(rows) -> StageResult(kept, rejected)` on many batches.

A stage never raises for a bad row: it moves the row to `rejected` with a reason code. An
exception out of `process` is a bug or a bad configuration and stops the run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute.invert

from mmtok.io.schema import make_rejects
from mmtok.reasons import RowRejected


@dataclass
class StageResult:
    kept: pa.Table  # input columns plus the stage's output fields
    rejected: pa.Table  # input columns plus stage, reason, message


class Stage:
    """Base class. Constructors only store configuration, so stages pickle to workers."""

    name: ClassVar[str] = "stage"
    # True when `process` runs decoders on untrusted data, so one row can hang or kill its
    # process: the executor then runs the chain in a child process even with one worker, and
    # retries a batch that failed row by row. A stage that keeps state from batch to batch must
    # stay False: it runs in the main process with one worker, where nothing is retried.
    isolate: ClassVar[bool] = False
    # True when one input row becomes several output rows (sample-frames: a video, its frames):
    # the run then counts input rows (in = kept + rejected) apart from the rows it writes.
    expands_rows: ClassVar[bool] = False
    # Times a row that hung or crashed alone is sent again to a fresh worker before it becomes
    # a reject: for a stage that can then take another way (sample-frames: PyAV after decord).
    row_retries: ClassVar[int] = 0
    # Replace a worker after it has been given this many rows (None: never), so that what a
    # native decoder leaks cannot pile up (decord, video.md §3.4). An instance may set it.
    recycle_after: int | None = None

    def output_fields(self) -> list[pa.Field]:
        """Columns this stage adds to kept rows (replacing input columns of the same name)."""
        return []

    def config(self) -> dict[str, Any]:
        """The settings that change this stage's output; recorded in the manifest."""
        return {}

    def setup(self) -> None:
        """Load heavy state once per worker (models, libraries, global decoder settings)."""

    def process(self, rows: pa.Table) -> StageResult:
        raise NotImplementedError

    def resume_after(self, rows: int) -> None:
        """A resumed run skips the first `rows` rows (batches already written); a stage that
        counts rows (dedup's writing pass on the main path) starts from there."""

    def for_slice(self, index: int, row: int) -> Stage:
        """The stage for one batch of slice `index` of the input plan, whose first row is the
        slice's `row`-th row read (0-based): the executors call it before each batch they
        read from a slice, so a stage that needs to know where its rows are in the input
        (dedup's writing pass) can run in any worker. Default: the stage itself."""
        return self


# Set by the executor inside a worker process: called after each row, so the parent can tell a
# long batch (rows keep finishing) from a hung row (nothing finishes for --row-timeout seconds).
_row_done: Callable[[], None] | None = None


def on_row_done(callback: Callable[[], None] | None) -> None:
    global _row_done
    _row_done = callback


class RowStage(Stage):
    """A stage that looks at one row at a time.

    `process_row` gets the values of `input_columns` as a dict and returns the values of the
    output fields, or raises `RowRejected` (e.g. `BadImage`) for a bad row.
    """

    input_columns: ClassVar[tuple[str, ...]] = ("image",)
    # those of `input_columns` an input may lack: they read as None
    optional_columns: ClassVar[tuple[str, ...]] = ()
    isolate: ClassVar[bool] = True

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def build_column(self, field: pa.Field, values: list) -> pa.Array:
        """The Arrow column of one output field (override for large values, e.g. pixels)."""
        return pa.array(values, field.type)

    def process(self, rows: pa.Table) -> StageResult:
        fields = self.output_fields()
        outputs: dict[str, list] = {f.name: [] for f in fields}
        keep, reasons, messages = [], [], []
        row_done = _row_done
        names = rows.column_names
        absent = [c for c in self.optional_columns if c not in names]
        present = [c for c in self.input_columns if c not in absent]
        for row in rows.select(present).to_pylist():
            if absent:
                row.update(dict.fromkeys(absent))
            try:
                values = self.process_row(row)
            except RowRejected as e:
                keep.append(False)
                reasons.append(e.reason)
                messages.append(e.message)
                continue
            finally:
                if row_done is not None:
                    row_done()
            keep.append(True)
            for name, column in outputs.items():
                column.append(values[name])
        mask = pa.array(keep, pa.bool_())
        kept = rows.filter(mask)
        for f in fields:
            column = self.build_column(f, outputs[f.name])
            index = kept.schema.get_field_index(f.name)
            if index >= 0:
                kept = kept.set_column(index, f, column)
            else:
                kept = kept.append_column(f, column)
        rejected = make_rejects(rows.filter(pa.compute.invert(mask)), self.name, reasons, messages)
        return StageResult(kept, rejected)
