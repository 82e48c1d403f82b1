"""Shards written by the workers: each slice of the input becomes its own Parquet file(s) in
staging, written by the process that ran the stages over it (engine.md §4, as datatrove and
img2dataset do). The main process gets only what it counts and summarises (row counts, the
reject reasons, the columns its observers read: never pixels or image bytes) and, when a slice
is done, the names of its files, which it publishes in input order by renaming them
(`DatasetSink.adopt`): no row is copied, re-encoded or pickled through the main process.

    spec = sink.shard_spec(columns)           # in the main process: small, picklable
    files = SliceFiles(spec, index)           # in a worker, for one slice
    files.add(kept, rejected, records)        # per batch
    output = files.close()                    # SliceOutput: the finished files, for the sink

Shard sizes. The slices of a written output are cut from the input alone (never the worker
count, so the files and their contents are the same for any `-w`): about 1/`TARGET_SLICES` of
the input's rows, clamped between `SLICE_BATCHES` batches (the unit of work without output) and
--shard-rows, in whole batches (`slice_rows`); a small input is still cut into `MIN_SLICES`
slices where it has that many batches, so that workers share it. So an input gives about
`TARGET_SLICES` files until its slices reach --shard-rows, then files of --shard-rows rows:
20,000 rows give 20 shards of 1,024 rows, ten million give 201 of 49,920 (batches of 256),
never thousands of tiny files. Inside a slice a worker rolls a new file when one reaches
--shard-rows or --shard-bytes (after a batch, as the main-process sink does), so a slice of
large rows (tile pixels) stays within --shard-bytes. Sources read whole (tar shards, JSON
arrays, gzip) are one slice each.

Crash safety. A worker writes `s<slice>-<n>.parquet.tmp`, fsyncs it and renames it only when
the file is complete; the main process adopts only the files a finished slice reported. A
worker killed mid-slice leaves `.tmp` files (or whole files of an unfinished slice) that no
state lists: the slice runs again and overwrites them, and `--resume` clears the folder.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

if TYPE_CHECKING:
    from mmtok.io.sink import ShardStats

# Slices (so shard files) per written input, at most, until they reach --shard-rows: enough
# that dozens of workers share a mid-sized input, few enough that files stay large.
TARGET_SLICES = 64
# Slices per input, at least, when it has that many batches: the workers of a small machine
# then share even a small input (20 images to tile, in batches of 8, are 3 slices, not 1).
MIN_SLICES = 8


# Field metadata by which a stage asks for the Parquet codec of its column's leaves instead of
# zstd: tile pixels take lz4 (raw RGB: most of zstd's gain on photos at a fraction of its CPU)
# or none (PNG tiles are deflated already). Parquet records the codec of every column chunk.
CODEC_KEY = b"mmtok_codec"


def _leaf_paths(name: str, kind: pa.DataType) -> list[str]:
    """The Parquet column paths of an Arrow field (pyarrow's compliant nested naming)."""
    if pa.types.is_struct(kind):
        return [p for f in kind for p in _leaf_paths(f"{name}.{f.name}", f.type)]
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return _leaf_paths(f"{name}.list.element", kind.value_type)
    return [name]


def write_options(schema: pa.Schema) -> dict[str, Any]:
    """`ParquetWriter` options for `schema`: zstd for every column, except the leaves of fields
    whose metadata names a codec (`CODEC_KEY`). Those hold large distinct values (pixels), so
    they also get no dictionary (the attempt hashes every value before giving up) and no
    statistics (min/max compare whole values)."""
    codecs, plain = {}, []
    for f in schema:
        codec = (f.metadata or {}).get(CODEC_KEY)
        for path in _leaf_paths(f.name, f.type):
            if codec is None:
                plain.append(path)
            codecs[path] = codec.decode() if codec is not None else "zstd"
    if len(plain) == len(codecs):
        return {"compression": "zstd"}
    return {"compression": codecs, "use_dictionary": plain, "write_statistics": plain}


def slice_rows(total: int | None, batch_rows: int, shard_rows: int, min_batches: int) -> int:
    """Rows per slice of a written output: `total / TARGET_SLICES`, at least `min_batches`
    batches, but small enough for `MIN_SLICES` slices and at most `shard_rows` (a user who asks
    for small shards gets small slices), in whole batches (where slices can cut; at least one),
    rounded down so that a full slice never spills a few rows into a second file."""
    rows = min_batches * batch_rows
    if total is not None:
        rows = max(rows, -(-total // TARGET_SLICES))
        rows = min(rows, -(-total // MIN_SLICES))
    rows = min(rows, shard_rows)
    return max(1, rows // batch_rows) * batch_rows


# Rows whose summary parts a worker holds at most before it sends them with a batch: a slice
# read whole (a gzip or tar file) can hold millions of rows, and the parts keep per-row values.
PART_ROWS = 65_536


@dataclass
class ShardSpec:
    """What a worker needs to write its slices (picklable). `folder` None: write nothing, only
    send the summaries (a run without output; `SliceFiles` is then not used)."""

    folder: str | None
    write_schema: pa.Schema  # the row schema as written (image in the `datasets` layout)
    shard_rows: int = 50_000
    shard_bytes: int = 512 << 20
    row_group_rows: int = 8_192
    row_group_bytes: int = 64 << 20
    shard_stats: ShardStats | None = None
    send_columns: list[str] = field(default_factory=list)  # what the main process observes
    # (columns, empty part) of each mergeable summary (`Observer.summary`): the worker adds
    # a slice's kept batches to fresh parts and sends the parts, not the columns (`SliceParts`)
    summaries: list[tuple[list[str], Any]] = field(default_factory=list)
    part_rows: int = PART_ROWS  # `SliceParts`: rows whose parts a worker holds, at most

    def summary(
        self, kept: pa.Table, rejected: list[pa.Table]
    ) -> tuple[pa.Table, list[pa.Table], list[Any] | None]:
        """What goes back to the main process for a batch: the observed columns of the kept
        rows, the reasons of the rejects, and the batch's part of each summary (None if the
        spec has none)."""
        observed, reasons = self.observed(kept, rejected)
        return observed_table(observed), reasons, self.parts(kept)

    def observed(self, kept: pa.Table, rejected: list[pa.Table]) -> tuple[pa.Table | int, list]:
        """The observed columns of the kept rows, or only their count (an int: a table would
        cost the main process ~8 us to unpickle) when the main process observes no column;
        and the reasons of the rejects."""
        names = [c for c in dict.fromkeys(self.send_columns) if c in kept.column_names]
        observed = kept.select(names) if names else kept.num_rows
        return observed, [t.select(["reason"]) for t in rejected]

    def parts(self, kept: pa.Table) -> list[Any] | None:
        """Each summary's part for one kept batch."""
        parts = self.new_parts()
        if parts is not None:
            self.add_parts(parts, kept)
        return parts

    def new_parts(self) -> list[Any] | None:
        """A fresh part of each summary (None if the spec has none): a worker adds a slice's
        batches to one (`add_parts`) and sends it with the slice's end, so the main process
        unpickles and merges one part per slice, not per batch (parts add in order:
        `part.add(a); part.add(b)` is `merge(a); merge(b)`)."""
        if not self.summaries:
            return None
        return [empty.empty() for _, empty in self.summaries]

    def add_parts(self, parts: list[Any], kept: pa.Table) -> None:
        for (columns, _), part in zip(self.summaries, parts, strict=True):
            part.add(kept.select(columns))


class SliceParts:
    """The summaries' parts of one slice, added batch by batch in the worker that runs it and
    sent once (`end`), or every `part_rows` rows (memory stays bounded). Where they are sent
    depends only on the slice's kept rows, so a slice run again after a worker died sends them
    at the same batches, and the parent, which drops the messages of batches it already has,
    merges each batch's part exactly once."""

    def __init__(self, spec: ShardSpec):
        self.spec, self.parts, self.rows = spec, spec.new_parts(), 0

    def add(self, kept: pa.Table) -> list[Any] | None:
        """Add a batch; what its message carries: None (the spec has no summaries), [] (its
        part comes later), or the parts of the batches since the last ones sent."""
        if self.parts is None:
            return None
        self.spec.add_parts(self.parts, kept)
        self.rows += kept.num_rows
        if self.rows < self.spec.part_rows:
            return []
        parts, self.parts, self.rows = self.parts, self.spec.new_parts(), 0
        return parts

    def end(self) -> list[Any] | None:
        """The parts not sent yet, for the slice's end."""
        return self.parts


def observed_table(observed: pa.Table | int) -> pa.Table:
    """`ShardSpec.observed`'s kept rows as a table: a count becomes a null column of that many
    rows (a table without columns has no length)."""
    return _counted(observed) if isinstance(observed, int) else observed


@functools.lru_cache(maxsize=8)
def _counted(rows: int) -> pa.Table:
    """Tables are immutable: batches of one size share one (most batches are full)."""
    return pa.table({"rows": pa.nulls(rows)})


@dataclass
class SliceOutput:
    """A finished slice: its files in `ShardSpec.folder`, in order, to be adopted."""

    index: int  # the slice's place in the plan
    parts: list[tuple[str, int, str]]  # (file name, rows, sha256 for the manifest)
    rejects: str | None  # file name of its rejects, if any
    records: int  # input records the slice accounts for
    batches: int


def cast_for_write(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    """Rows cast to the written schema, in slices of at most 256 MiB, so the cast of image bytes
    to `binary` (32-bit offsets) never overflows; as few as that allows, since each slice's cast
    has a fixed cost."""
    rows = pa.concat_tables(tables)
    per_slice = max(64, rows.num_rows * (256 << 20) // max(rows.nbytes, 1))
    return pa.Table.from_batches(
        [_cast(b, schema) for b in rows.to_batches(per_slice)],
        schema,
    )


def _cast(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """`batch.cast(schema)`, casting only the columns whose type differs (the image column): a
    cast to the same type still runs the compute kernels, ~10 us a column and batch."""
    if batch.schema.names != schema.names:
        return batch.cast(schema)  # as it always did: cast's own error
    columns = [
        column if column.type == f.type else column.cast(f.type)
        for column, f in zip(batch.columns, schema, strict=True)
    ]
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def has_pixel_columns(schema: pa.Schema) -> bool:
    """Whether a stage marked a column of `schema` as large values (`CODEC_KEY`: tile pixels)."""
    return any(CODEC_KEY in (f.metadata or {}) for f in schema)


def drop_cached_pages(fd: int) -> None:
    """Let the kernel drop the page cache of a finished (fsynced, hashed) file. Written pixels are
    read by a later job, if ever, so caching them only evicts what is worth keeping (the input
    images); the next file's writes then reuse the freed pages instead of taking fresh ones,
    which on a virtual machine costs ~2 ms per MB of kernel time (measured: 512 MB of shards
    in 1.1 s of system time kept, 0.24 s dropped)."""
    if hasattr(os, "posix_fadvise"):  # not on macOS or Windows
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def finish_file(tmp: Path, path: Path) -> None:
    """fsync, then rename: a file under its final name is always complete."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def finish_and_hash(tmp: Path, path: Path, drop_cache: bool = False) -> str:
    """`finish_file`, and the file's sha256, computed in a thread while this one waits for the
    disk in fsync (both release the GIL): the hash costs no time of its own as long as the
    disk is the slower of the two. `drop_cache`: then `drop_cached_pages`."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="mmtok-hash") as pool:
            digest = pool.submit(_sha256, tmp)
            os.fsync(fd)
            hexdigest = digest.result()
        os.replace(tmp, path)
        if drop_cache:
            drop_cached_pages(fd)
    finally:
        os.close(fd)
    return hexdigest


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class SliceFiles:
    """The files of one slice, written batch by batch in the process that runs its stages."""

    def __init__(self, spec: ShardSpec, index: int):
        self.spec, self.index = spec, index
        self.folder = Path(spec.folder) if spec.folder else None
        self.stats = copy.deepcopy(spec.shard_stats)  # this slice's own tallies
        self.parts: list[tuple[str, int, str]] = []
        self.rejects: list[pa.Table] = []
        self.records = self.batches = 0
        self._writer: pq.ParquetWriter | None = None
        self._buffer: list[pa.Table] = []
        self._buffered_rows = self._buffered_bytes = 0
        self._file_rows = self._file_bytes = 0
        self._drop_cache = has_pixel_columns(spec.write_schema)

    def _name(self) -> str:
        return f"s{self.index:06d}-{len(self.parts):03d}.parquet"

    def add(self, kept: pa.Table, rejected: list[pa.Table], records: int) -> None:
        self.records += records
        self.batches += 1
        self.rejects += [t for t in rejected if t.num_rows]
        if self.folder is None or not kept.num_rows:
            return
        spec = self.spec
        if self.stats is not None:
            self.stats.add(kept)
        nbytes = kept.nbytes  # walks every buffer: once
        self._buffer.append(kept)
        self._buffered_rows += kept.num_rows
        self._buffered_bytes += nbytes
        self._file_rows += kept.num_rows
        self._file_bytes += nbytes
        if (
            self._buffered_rows >= spec.row_group_rows
            or self._buffered_bytes >= spec.row_group_bytes
        ):
            self._flush()
        if self._file_rows >= spec.shard_rows or self._file_bytes >= spec.shard_bytes:
            self._roll()

    def _flush(self) -> None:
        if not self._buffer:
            return
        assert self.folder is not None
        if self._writer is None:
            path = self.folder / (self._name() + ".tmp")
            schema = self.spec.write_schema
            self._writer = pq.ParquetWriter(path, schema, **write_options(schema))
        table = cast_for_write(self._buffer, self.spec.write_schema)
        self._buffer, self._buffered_rows, self._buffered_bytes = [], 0, 0
        self._writer.write_table(table, row_group_size=self.spec.row_group_rows)

    def _roll(self) -> None:
        """Close the open file (if any rows went in) under its final name."""
        self._flush()
        if self._writer is None:
            return
        assert self.folder is not None
        if self.stats is not None:
            self._writer.add_key_value_metadata(self.stats.take())
        self._writer.close()
        self._writer = None
        name = self._name()
        # hashed here, while the file is in the page cache, not by the main process at the end
        tmp, path = self.folder / (name + ".tmp"), self.folder / name
        digest = finish_and_hash(tmp, path, self._drop_cache)
        self.parts.append((name, self._file_rows, digest))
        self._file_rows = self._file_bytes = 0

    def close(self) -> SliceOutput:
        self._roll()
        rejects = None
        if self.rejects and self.folder is not None:
            rejects = f"s{self.index:06d}-rejects.parquet"
            tmp = self.folder / (rejects + ".tmp")
            pq.write_table(pa.concat_tables(self.rejects), tmp, compression="zstd")
            finish_file(tmp, self.folder / rejects)
        self.rejects = []
        return SliceOutput(self.index, self.parts, rejects, self.records, self.batches)

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
