"""What every source shares: read options, the batch builder that turns row dicts into Arrow
(repairing or rejecting the rows that do not convert), and the `Source` base class."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from mmtok.errors import MmtokError
from mmtok.io.encoding import is_valid_text, path_text, valid_text
from mmtok.io.schema import BASE_NAMES, LINEAGE_NAMES, make_rejects
from mmtok.io.sources.values import (
    PathResolver,
    add_warning,
    caption_value,
    image_value,
    row_id,
    row_ids,
    short_repr,
    valid_value,
)
from mmtok.reasons import Reason

READ_STAGE = "read"
DEFAULT_TEXT_COL = "caption"
# What `pa.Table.from_pylist` raises for values that do not fit the schema.
_CONVERSION_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, UnicodeEncodeError)


@dataclass(frozen=True)
class ReadOptions:
    image_col: str = "image"
    text_col: str = DEFAULT_TEXT_COL
    id_col: str | None = None  # None: the input's `id` column if it has one, else a hash
    batch_rows: int = 256
    batch_bytes: int = 32 << 20  # cut a batch early when its image bytes reach this
    # video files are rows too (their path or bytes in `image`): folders and tar shards take
    # VIDEO_EXTENSIONS members, and a video file is an input (sample-frames, estimate-budget)
    videos: bool = False


@dataclass(frozen=True)
class Slice:
    """A unit of work: a part of one source that a worker reads on its own. Small and picklable
    (the local executor sends it to a worker process, the Ray engine to a task).

    `kind`: "bytes" (a byte range of JSON Lines or CSV, starting at a record), "row_groups" (of
    a Parquet file), "items" (a range of a folder listing), or "whole" (the source at once: tar
    shards, JSON arrays, gzip files). `stop` is exclusive; None: to the end. `first_row`: the
    row number of the slice's first record (row ids hash it); `first_line`: the line number
    just before the slice (reject messages name lines)."""

    source: int  # index of the source in `Inputs.sources`
    path: str
    kind: str
    start: int = 0
    stop: int | None = None
    first_row: int = 0
    first_line: int = 0


def byte_slices(
    source: int, path: str, marks: list[tuple[int, int, int]], every: int
) -> list[Slice]:
    """Byte ranges of a JSON Lines or CSV file, cut at every `every`-th mark (byte offset, row
    number, lines before: where a record starts); the last runs to the end of the file, so
    records appended after the scan are still read. The whole file when there is no second cut
    (no marks: a gzip file, or one whose records could not all be read)."""
    cuts = marks[:: max(1, every)]
    if len(cuts) <= 1:
        return [Slice(source, path, "whole")]
    ends = [offset for offset, _, _ in cuts[1:]] + [None]
    return [
        Slice(source, path, "bytes", offset, end, row, line)
        for (offset, row, line), end in zip(cuts, ends, strict=True)
    ]


@dataclass
class SourceBatch:
    rows: pa.Table
    rejected: pa.Table | None = None  # records that could not be parsed (stage "read")
    stats: ReadStats | None = None  # what reading this batch gave (for warnings at the end)

    @property
    def num_records(self) -> int:
        return self.rows.num_rows + (self.rejected.num_rows if self.rejected is not None else 0)


@dataclass
class BadRecord:
    """A record that cannot become a row: it becomes a `bad_record` reject of stage "read"."""

    row: dict  # what is known of it: at least id and source
    message: str


@dataclass
class ReadStats:
    """What one pass over a source gave, for the warning at the end of a run."""

    rows: int = 0
    bad_records: int = 0
    rows_without_image: int = 0
    rows_with_warning: int = 0  # kept rows that reading had to repair (see their `warning`)
    first_bad: str | None = None
    # a resumed run: the run it resumes read this source, or part of it (nothing to judge
    # when this pass read none of it)
    read_before: bool = False

    def add(self, other: ReadStats) -> None:
        """Add the figures of a later part of the same source (slices are added in order)."""
        self.rows += other.rows
        self.bad_records += other.bad_records
        self.rows_without_image += other.rows_without_image
        self.rows_with_warning += other.rows_with_warning
        self.first_bad = self.first_bad or other.first_bad


class _BatchBuilder:
    """Accumulates rows and read rejects as Python values; emits conformed Arrow batches.

    Rows come as dicts (`add`: converted by `pa.Table.from_pylist`) or, from a reader that
    makes them in place, as values appended to `columns`, one list per schema column: what
    `from_pylist` builds from row dicts before it converts them, so the table is the same. A
    reader that appends calls `spill` first (the batch's dicts join the columns, in order);
    the lists are cleared in place at each flush."""

    def __init__(self, schema: pa.Schema, options: ReadOptions, text_columns: list[str], unit: str):
        self.schema, self.options, self.unit = schema, options, unit
        # Passthrough columns that inputs disagree on are text: other values become JSON text.
        self.text_columns = text_columns
        self.rows: list[dict] = []  # rows as dicts: after those in `columns`
        self.columns: list[list] = [[] for _ in schema]
        self._named = list(zip(schema.names, self.columns, strict=True))
        self.where: list[int | str] = []  # of every row: a number of `unit`s, or a description
        self.bad: list[tuple[dict, str]] = []
        self.image_bytes = 0
        self.stats = ReadStats()

    def add(self, row: dict, where: int | str) -> SourceBatch | None:
        for name in self.text_columns:
            value = row.get(name)
            if value is not None and not isinstance(value, str):
                row[name] = caption_value(value)
        self.rows.append(row)
        self.where.append(where)
        image = row.get("image")
        if image and image.get("bytes"):
            self.image_bytes += len(image["bytes"])
        return self._maybe_flush()

    def spill(self) -> None:
        """The row dicts join the columns (a reader is about to append to them)."""
        for row in self.rows:
            for name, column in self._named:
                column.append(row.get(name))
        self.rows.clear()

    def reject(self, row: dict, message: str) -> SourceBatch | None:
        self.bad.append((row, message))
        return self._maybe_flush()

    def _maybe_flush(self) -> SourceBatch | None:
        full = len(self.where) + len(self.bad) >= self.options.batch_rows
        if full or self.image_bytes >= self.options.batch_bytes:
            return self.flush()
        return None

    def flush(self) -> SourceBatch | None:
        if not self.where and not self.bad:
            return None
        try:
            if len(self.rows) < len(self.where):  # some rows are in the columns
                self.spill()
                rows = pa.Table.from_arrays(self.columns, schema=self.schema)
            else:
                rows = pa.Table.from_pylist(self.rows, schema=self.schema)  # missing keys: nulls
        except _CONVERSION_ERRORS:
            # A dirty batch: find its bad rows by halves, repair or reject them.
            if not self.rows:  # they were in the columns: the dicts again
                names = self.schema.names
                values = zip(*self.columns, strict=True)
                self.rows.extend(dict(zip(names, row, strict=True)) for row in values)
            rows = pa.concat_tables([self.schema.empty_table(), *self._dirty(0, len(self.rows))])
        rejected = None
        if self.bad:
            bad_rows = [r for r, _ in self.bad]
            try:
                bad_table = pa.Table.from_pylist(bad_rows, schema=self.schema)
            except _CONVERSION_ERRORS:  # keep what fits of a rejected record's columns
                for row in bad_rows:
                    self._repair(row)
                bad_table = pa.Table.from_pylist(bad_rows, schema=self.schema)
            rejected = make_rejects(
                bad_table,
                READ_STAGE,
                [Reason.BAD_RECORD.value] * len(self.bad),
                [m for _, m in self.bad],
            )
        stats = ReadStats(
            rows=rows.num_rows,
            bad_records=len(self.bad),
            rows_without_image=rows.column("image").null_count,
            rows_with_warning=rows.num_rows - rows.column("warning").null_count,
            first_bad=self.bad[0][1] if self.bad else None,
        )
        self.stats.add(stats)
        for column in self.columns:
            column.clear()
        self.rows.clear()
        self.where.clear()
        self.bad.clear()
        self.image_bytes = 0
        return SourceBatch(rows, rejected, stats)

    def place(self, where: int | str) -> str:
        return where if isinstance(where, str) else f"{self.unit} {where}"

    def _dirty(self, start: int, stop: int) -> list[pa.Table]:
        """Rows [start, stop) of a batch that failed to convert, as tables: halves that convert
        are kept whole, so only the dirty rows are looked at one by one (repaired, or moved
        to the read rejects)."""
        if stop - start > 1:
            try:
                return [pa.Table.from_pylist(self.rows[start:stop], schema=self.schema)]
            except _CONVERSION_ERRORS:
                mid = (start + stop) // 2
                return self._dirty(start, mid) + self._dirty(mid, stop)
        row = self.rows[start]
        if problems := self._repair(row):
            self.bad.append((row, f"{self.place(self.where[start])}: {'; '.join(problems)}"))
            return []
        return [pa.Table.from_pylist([row], schema=self.schema)]

    def _repair(self, row: dict) -> list[str]:
        """Make `row` convertible: text with lone surrogates made valid (with a warning);
        values that do not fit their column are nulled and returned as problems."""
        problems, repaired = [], []
        for f in self.schema:
            value = row.get(f.name)
            if value is None:
                continue
            try:
                pa.array([value], f.type)
                continue
            except _CONVERSION_ERRORS:
                pass
            if f.type == pa.string() and not isinstance(value, str):
                value = caption_value(value)  # a text column: any value fits as its JSON text
            valid = valid_value(value)
            if valid != value:
                repaired.append(f.name)
            try:
                pa.array([valid], f.type)
                row[f.name] = valid
            except _CONVERSION_ERRORS as e:
                problem = f"{short_repr(valid)} does not fit {f.type} ({e})"
                problems.append(f"column {f.name!r}: {problem}")
                row[f.name] = None
        if repaired:
            add_warning(
                row,
                "text that was not valid UTF-8 (lone surrogates or bad bytes) replaced with "
                f"U+FFFD in {', '.join(repaired)}",
            )
        return problems


def _display_text(display: str) -> str:
    """An input's name as valid text (the `source` column): a name that is not UTF-8 as the
    `file:` URI of its absolute path."""
    return display if is_valid_text(display) else path_text(os.path.abspath(display))


class Source:
    """One input: a file or folder. Subclasses read it row by row or batch by batch."""

    kind = "?"
    unit = "row"  # what `where` counts in reject messages: line, row, item, ...
    spooled = False  # read from a copy of a pipe (`mmtok.io.sources.spool`), removed with it

    def __init__(self, path: str, options: ReadOptions, display: str | None = None):
        self.path = path
        self.display = display or path
        self.source_text = _display_text(self.display)
        self.options = options
        self.base_dir = os.path.dirname(os.path.abspath(path))
        self.notes: dict[str, int] = {}
        self.stats = ReadStats()
        self._output_names: dict[str, str | None] = {}
        self._lineage: tuple[str, ...] = ()  # base columns of an earlier mmtok run, as text
        self._dirty_names: frozenset[str] = frozenset()

    @property
    def id_key(self) -> str:
        """What row ids hash: the absolute path, so the same file gives the same ids (a pipe's
        own name, not its copy's)."""
        if self.display == self.path:
            return os.path.abspath(self.path)
        return self.__dict__.get("_id_key", self.display)

    def spooled_from(self, name: str) -> None:
        """This source reads a copy of the pipe `name` (`spool`): messages, the `source` column
        and row ids name the pipe; relative image paths resolve against its folder, or the
        current one for a shell's /dev/fd/N and /dev/stdin."""
        self.spooled = True
        self.display, self.source_text = name, _display_text(name)
        absolute = os.path.abspath(name)
        if absolute.startswith(("/dev/", "/proc/")):
            self.base_dir, self._id_key = os.getcwd(), name
        else:
            self.base_dir, self._id_key = os.path.dirname(absolute), absolute

    def passthrough_fields(self) -> list[pa.Field]:
        return []

    def columns(self) -> list[str] | None:
        """The input's column names, for checking --text-col; None: the source has no columns
        of its own (a folder) or cannot tell without reading it all (a tar shard)."""
        return None

    def count_rows(self) -> int | None:
        return None

    def records(self, part: Slice | None = None) -> Iterator[tuple[dict | BadRecord, int | str]]:
        """Rows in the output schema as dicts, or `BadRecord`s, in input order, each with
        where it was: a number of `unit`s (line 12), or a description (sample abc). `part`:
        only the records of that slice (one of `slices()`); None: all of them."""
        raise NotImplementedError

    def slices(self, index: int, rows: int) -> list[Slice]:
        """The source cut into slices of about `rows` records, in order (`index`: the source's
        place in the inputs). The cut depends on the input alone, never on the worker count,
        so output and ids are the same for any number of workers. Default: one slice."""
        return [Slice(index, self.path, "whole")]

    def batches(self, schema: pa.Schema, part: Slice | None = None) -> Iterator[SourceBatch]:
        """The batches of the whole source, or of one slice of it (each slice starts a batch)."""
        builder = self._builder(schema, part)
        for record, where in self.records() if part is None else self.records(part):
            if isinstance(record, BadRecord):
                batch = builder.reject(record.row, f"{builder.place(where)}: {record.message}")
            else:
                batch = builder.add(record, where)
            if batch:
                yield batch
        if batch := builder.flush():
            yield batch

    def _builder(self, schema: pa.Schema, part: Slice | None) -> _BatchBuilder:
        own = {f.name: f.type for f in self.passthrough_fields()}
        text_columns = [
            f.name
            for f in schema
            if f.type == pa.string() and f.name in own and own[f.name] != pa.string()
        ]
        builder = _BatchBuilder(schema, self.options, text_columns, self.unit)
        if part is None:
            self.stats = builder.stats
        self._row_helpers = (row_ids(self.id_key), PathResolver(self.base_dir))  # see `_row`
        return builder

    def fingerprint(self) -> dict:
        if self.spooled:  # a new copy each run: known by its content
            with open(self.path, "rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
            return {"path": self.source_text, "kind": self.kind, "sha256": digest}
        st = os.stat(self.path)
        return {
            "path": self.source_text,
            "kind": self.kind,
            "bytes": st.st_size,
            "mtime_ns": st.st_mtime_ns,
        }

    def hint(self) -> str:
        """What is probably wrong when this source gives no rows at all."""
        return f"is it a {self.kind} file?"

    # Shared by the record-oriented sources (JSON Lines, CSV, Parquet).
    _id_col: str | None = None

    def _find_id_col(self, names: list[str]) -> str | None:
        """The id column: the one asked for, else the input's own `id` column if it has one."""
        if self.options.id_col is None:
            return "id" if "id" in names else None
        if self.options.id_col not in names:
            raise MmtokError(
                f"{self.display}: no id column {self.options.id_col!r}; columns: {names}"
            )
        return self.options.id_col

    def _require_image_col(self, names: list[str]) -> None:
        if self.options.image_col not in names:
            raise MmtokError(
                f"{self.display}: no image column {self.options.image_col!r}; columns: {names}",
                hint="choose it with --image-col",
            )

    def _set_lineage(self, text_typed: dict[str, bool]) -> None:
        """Base columns of an earlier mmtok run (`source`, `warning`) are kept as lineage when
        they hold text; with any other type they are the input's own data (`source_input`)."""
        self._lineage = tuple(n for n in LINEAGE_NAMES if text_typed.get(n))

    def _bad(self, key: str | int, message: str, **known) -> BadRecord:
        row = {"id": row_id(self.id_key, key), "source": self.source_text, **known}
        return BadRecord(row, message)

    def _passthrough_name(self, name: str) -> str | None:
        """Output name of an input column, or None when it is one of the role columns.

        Called for every column of every row, so each name is worked out once per source."""
        out = self._output_names.get(name, ...)
        if out is ...:  # `_row` reads the cache itself (the hot path); this fills it
            clean = valid_text(name)
            if name in (self.options.image_col, self.options.text_col, self._id_col):
                out = None
            elif name in self._lineage:
                out = None  # copied by `_row` when it holds text
            elif clean in BASE_NAMES:
                out = f"{clean}_input"  # a reserved name used for something else in this input
            else:
                out = clean
            self._output_names[name] = out
        return out

    # (row ids, path resolver) of this process's read: `id_key` is an absolute path, worked
    # out once per read, not per row; not pickled (a worker makes its own)
    _row_helpers: tuple[Callable[[int], str], PathResolver] | None = None

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_row_helpers"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _copy=True)  # a worker's copy: a spool is not its own

    def __del__(self):
        if self.spooled and not self.__dict__.get("_copy"):
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    def _row(self, record: dict, rowno: int) -> dict:
        """A row dict in the output schema from one input record (a dict of column values)."""
        if self._row_helpers is None:
            self._row_helpers = (row_ids(self.id_key), PathResolver(self.base_dir))
        ids, resolve = self._row_helpers
        raw_id = record.get(self._id_col) if self._id_col else None
        row = {
            "id": str(raw_id) if raw_id is not None else ids(rowno),
            "source": self.source_text,
            "image": image_value(record.get(self.options.image_col), self.base_dir, resolve),
            "caption": caption_value(record.get(self.options.text_col)),
        }
        names = self._output_names
        for name, value in record.items():
            out = names.get(name, ...)
            if out is ...:
                out = self._passthrough_name(name)
            if out is not None:
                row[out] = value
        for name in self._lineage:  # keep lineage from an earlier mmtok run
            value = record.get(name)
            if isinstance(value, str):
                row[name] = value
        if self._dirty_names and not self._dirty_names.isdisjoint(record):
            dirty = sorted(valid_text(n) for n in self._dirty_names.intersection(record))
            add_warning(row, f"column names not valid UTF-8, made valid with U+FFFD: {dirty}")
        return row

    def _bad_row(self, record: Any, key: str | int, message: str) -> BadRecord:
        """A bad_record reject that keeps the input's own id and columns when it has them."""
        known: dict[str, Any] = {}
        if isinstance(record, dict):
            raw_id = record.get(self._id_col) if self._id_col else None
            if isinstance(raw_id, str | int):
                known["id"] = str(raw_id)
            caption = record.get(self.options.text_col)
            if isinstance(caption, str):
                known["caption"] = caption
            for name, value in record.items():
                out = self._passthrough_name(name)
                if out is not None:
                    known[out] = value
        bad = self._bad(key, message)
        bad.row.update(known)
        return bad
