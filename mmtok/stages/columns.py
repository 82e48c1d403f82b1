"""KeepColumns: drop every column but the named ones (the sink writes the others as nulls,
which take no space): dedup stores its signature pass this way, without the images."""

from __future__ import annotations

from typing import Any, ClassVar

import pyarrow as pa

from mmtok.engine.stage import Stage, StageResult


class KeepColumns(Stage):
    name: ClassVar[str] = "keep_columns"

    def __init__(self, columns: list[str]):
        self.columns = list(columns)

    def config(self) -> dict[str, Any]:
        return {"columns": self.columns}

    def process(self, rows: pa.Table) -> StageResult:
        kept = rows.select([c for c in self.columns if c in rows.column_names])
        return StageResult(kept, rows.schema.empty_table())
