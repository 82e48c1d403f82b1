"""The stage contract: configure in the constructor, `setup()` once per worker, then
`process(rows) -> StageResult(kept, rejected)` on many batches.

A stage never raises for a bad row: it moves the row to `rejected` with a reason code. An
exception out of `process` is a bug or a bad configuration and stops the run.
"""

from __future__ import annotations

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
        counts rows (dedup's writing pass) starts from there."""


class RowStage(Stage):
    """A stage that looks at one row at a time.

    `process_row` gets the values of `input_columns` as a dict and returns the values of the
    output fields, or raises `RowRejected` (e.g. `BadImage`) for a bad row.
    """

    input_columns: ClassVar[tuple[str, ...]] = ("image",)

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def build_column(self, field: pa.Field, values: list) -> pa.Array:
        """The Arrow column of one output field (override for large values, e.g. pixels)."""
        return pa.array(values, field.type)

    def process(self, rows: pa.Table) -> StageResult:
        fields = self.output_fields()
        outputs: dict[str, list] = {f.name: [] for f in fields}
        keep, reasons, messages = [], [], []
        for row in rows.select(list(self.input_columns)).to_pylist():
            try:
                values = self.process_row(row)
            except RowRejected as e:
                keep.append(False)
                reasons.append(e.reason)
                messages.append(e.message)
                continue
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
