"""Slices: the unit of work of the executors. A worker reads its slice of the inputs itself
(a byte range of a JSON Lines or CSV file, a range of row groups of a Parquet file, a range of a
folder listing, a whole tar shard), so the main process never parses rows or pipes them out.

    plan = plan_slices(inputs)                 # in the main process: small, picklable Slices
    reader = SliceReader.of(inputs)            # picklable: the scanned sources and the schema
    for batch in reader.read(plan[i]): ...     # in a worker (or a Ray task): SourceBatches

The plan depends on the inputs and the read options alone, never on the number of workers, so
the batches, the output and the ids are the same for any worker count, and a resumed run can
find where it stopped as (slice, batches done in it).
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice

import pyarrow as pa

from mmtok.io.sources import Inputs
from mmtok.io.sources.base import Slice, Source, SourceBatch

__all__ = ["SLICE_BATCHES", "Slice", "SliceReader", "plan_slices", "read_slice"]

# Batches per slice: big enough that a slice pays its open and seek once for many rows, small
# enough that two workers finish within a slice of each other on a few thousand rows.
SLICE_BATCHES = 4


def plan_slices(inputs: Inputs, rows: int | None = None) -> list[Slice]:
    """Every input cut into slices of about `rows` records (default: `SLICE_BATCHES` batches),
    in input order."""
    rows = rows or SLICE_BATCHES * inputs.options.batch_rows
    return [part for i, source in enumerate(inputs.sources) for part in source.slices(i, rows)]


class SliceReader:
    """What a worker needs to read any slice: the inputs' sources (already scanned, so a
    worker never scans again) and their shared schema. The main process's own reader shares
    the sources of `Inputs`, so the read stats of the workers can be added to them."""

    def __init__(self, sources: list[Source], schema: pa.Schema):
        self.sources, self.schema = sources, schema

    @classmethod
    def of(cls, inputs: Inputs) -> SliceReader:
        return cls(inputs.sources, inputs.schema)

    def read(self, part: Slice, skip: int = 0) -> Iterator[SourceBatch]:
        """The batches of `part`, after the first `skip` (read, not returned)."""
        batches = self.sources[part.source].batches(self.schema, part)
        return islice(batches, skip, None) if skip else batches

    def notes(self, part: Slice) -> dict[str, int]:
        """The notes of `part`'s source after reading it (ignored tar members, ...)."""
        return dict(self.sources[part.source].notes)

    def merge(self, part: Slice, batch_stats: object | None, notes: dict[str, int] | None) -> None:
        """Add what a worker's read of `part` gave to the main process's sources."""
        source = self.sources[part.source]
        if batch_stats is not None:
            source.stats.add(batch_stats)  # type: ignore[arg-type]
        if notes:
            source.notes.update(notes)


def read_slice(
    inputs: Inputs, part: Slice, skip: int = 0
) -> Iterator[tuple[pa.Table, pa.Table | None, int]]:
    """(rows, read rejects, records) per batch of `part`: what `run_local` consumes."""
    for batch in SliceReader.of(inputs).read(part, skip):
        yield batch.rows, batch.rejected, batch.num_records
