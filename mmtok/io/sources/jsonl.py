"""JSON Lines, JSON array files (LLaVA-style) and JSON Lines on stdin.

A JSON Lines read is the hot path of every command: lines come a chunk at a time and the
common record (an object of planned keys, a path, a text caption) becomes a row in place
(`JsonLinesSource.batches`); every other line takes the general rule (`records`), which the
tests hold the fast path to."""

from __future__ import annotations

import gzip
import io
import json
import os
import sys
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import IO, Any

import pyarrow as pa

from mmtok.io.encoding import is_valid_text, valid_text
from mmtok.io.schema import BASE_NAMES
from mmtok.io.sources.base import (
    BadRecord,
    ReadOptions,
    Slice,
    Source,
    SourceBatch,
    _BatchBuilder,
    byte_slices,
)
from mmtok.io.sources.spool import spool
from mmtok.io.sources.values import (
    MESSAGE_TEXT,
    READ_ERRORS,
    RecordError,
    add_warning,
    row_id_prefix,
)


def open_text(path: str) -> io.TextIOBase:
    """Text with a UTF-8 BOM dropped; bytes that are not UTF-8 kept as surrogate escapes, so a
    path keeps its bytes and other text is made valid (with a warning) when it becomes a row."""
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig", errors="surrogateescape", newline="")
    return open(path, encoding="utf-8-sig", errors="surrogateescape", newline="")  # noqa: SIM115


_INT64 = (-(1 << 63), 1 << 63)


class _BigInt(int):
    """An integer outside int64 (the scan's decoder marks them: `_scan_json`)."""


def _int_or_big(text: str) -> int:
    value = int(text)
    return value if _INT64[0] <= value < _INT64[1] else _BigInt(value)


# The scan needs only each value's JSON kind: its own decoder marks integers outside int64
# (kept as text), so the kind is the value's type (`_TYPE_KINDS`), and a record whose keys and
# types were seen before costs two tuples and a set lookup. It accepts what `json.loads`
# accepts, so the scan sees the records that are read later.
_scan_decoder = json.JSONDecoder(parse_int=_int_or_big)
_TYPE_KINDS = {
    type(None): "null", bool: "bool", int: "int", _BigInt: "bigint", float: "float",
    str: "str", dict: "json", list: "json",
}  # fmt: skip


_SHAPES = 4096  # record shapes the scan remembers (memory stays bounded)


_scan_raw = _scan_decoder.raw_decode
_JSON_SPACE = " \t\n\r"


def _scan_json(text: str) -> Any:
    """`JSONDecoder.decode` without its two regex calls: JSON's own whitespace stripped, then
    the whole rest must be one value."""
    body = text.strip(_JSON_SPACE)
    try:
        value, end = _scan_raw(body)
    except (RecursionError, ValueError) as e:
        return Unparsed(str(e), text)
    return value if end == len(body) else Unparsed("Extra data", text)


_KIND_TYPES = {
    frozenset({"str"}): pa.string(),
    frozenset({"int"}): pa.int64(),
    frozenset({"float"}): pa.float64(),
    frozenset({"int", "float"}): pa.float64(),
    frozenset({"bool"}): pa.bool_(),
}


@dataclass
class ScanPart:
    """What the scan of a part of a JSON Lines file found (`JsonLinesSource.scan_part`):
    keys in the order they first appear, (key, type of a value) pairs, records and lines, and
    the byte offset and lines before (from the part's start) of every `every`-th record."""

    keys: dict[str, None]
    pairs: set[tuple[str, type]]
    count: int
    lines: int
    every: int
    offsets: array
    befores: array
    unreadable: bool


class ScanTotals:
    """The parts of one file's scan added in file order: what a scan of the whole file would
    have found, with the slice marks at every `batch_rows`-th record of the file."""

    def __init__(self, batch_rows: int):
        self.batch_rows = batch_rows
        self.keys: dict[str, None] = {}
        self.pairs: set[tuple[str, type]] = set()
        self.count = self.lines = 0
        self.marks: list[tuple[int, int, int]] = []  # (byte offset, row number, lines before)
        self.unreadable = False

    def add(self, part: ScanPart) -> None:
        first = -self.count % self.batch_rows  # the part's first record that starts a batch
        if first % part.every or self.batch_rows % part.every:
            raise ValueError("a part's marks do not fall on the file's batches")
        for i in range(first, part.count, self.batch_rows):
            j = i // part.every
            self.marks.append((part.offsets[j], self.count + i, self.lines + part.befores[j]))
        self.keys.update(part.keys)
        self.pairs |= part.pairs
        self.count += part.count
        self.lines += part.lines
        self.unreadable = self.unreadable or part.unreadable


@dataclass
class Unparsed:
    """A record that is not a JSON object: why, and its text."""

    message: str
    text: str


def _unreadable(lineno: int, error: BaseException) -> Unparsed:
    """The record for the rest of a file that cannot be read after line `lineno`."""
    message = f"the file cannot be read after line {lineno} ({error}); the rest is unread"
    return Unparsed(message, "")


def parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        return Unparsed("JSON nested too deeply to parse (RecursionError)", text)
    except ValueError as e:
        return Unparsed(str(e), text)


_BOM = b"\xef\xbb\xbf"
# `json.loads` of a line is this at index 0 when the line starts with its value and only JSON
# whitespace follows it (`batches` checks both; any other line takes `parse_json` itself).
_read_scan = json.JSONDecoder().scan_once
_NOT_PARSED = object()
_NO_PLAN = object()
_BLANK = object()  # a blank line in the scan (not a record)


def _raw_lines(f: IO[bytes], hint: int) -> tuple[list[bytes], BaseException | None]:
    """The next lines of `f` (each with its line end), until they hold more than `hint` bytes
    (at least one line), and the read error that stopped them early, if any: the lines before
    an error are kept, as a line by line read keeps them."""
    if hint > 0 and not isinstance(f, gzip.GzipFile):  # `readlines` of a plain file runs in C
        try:
            at: int | None = f.tell()
        except OSError:
            at = None  # a pipe
        try:
            return f.readlines(hint), None
        except READ_ERRORS as e:
            if at is None:
                return [], e
            try:
                f.seek(at)  # read the chunk again line by line, to keep the lines before
            except READ_ERRORS as e:
                return [], e
    lines: list[bytes] = []
    size = 0
    try:
        for raw in f:
            lines.append(raw)
            size += len(raw)
            if size > hint:  # as `readlines` counts
                break
    except READ_ERRORS as e:
        return lines, e
    return lines, None


_CHUNK = 1 << 20  # bytes of lines decoded at a time: memory stays bounded, per-line calls few


def _line_chunks(
    f: IO[bytes], offset: int, stop: int | None
) -> Iterator[tuple[list[int], list[str], int]]:
    """The lines of `_decoded_lines`, a chunk at a time: (byte offsets of the lines, their
    texts, the offset after the last). A read error is raised after the lines before it."""
    while True:
        # up to `stop`, then one line more: the line by line read looked at the line after
        # its slice too (and a failed read of it is a reject, as it was)
        hint = _CHUNK if stop is None else min(_CHUNK, stop - offset)
        raw, error = _raw_lines(f, hint)
        cut = False  # a line from `stop` on was read: it is the next slice's
        if raw:
            starts = list(accumulate(map(len, raw), initial=offset))
            end = starts.pop()
            if offset == 0 and raw[0].startswith(_BOM):
                raw[0] = raw[0][3:]
            if b"\r" in b"".join(raw):  # a lone \r ends a line too: the line by line rule
                starts, texts, end, cut = _split_cr(raw, starts, end, stop)
            else:
                if stop is not None and end > stop:
                    at = bisect_left(starts, stop)
                    if at < len(starts):
                        raw, starts, end, cut = raw[:at], starts[:at], starts[at], True
                texts = [r.decode("utf-8", "surrogateescape") for r in raw]
            if texts:
                yield starts, texts, end
            offset = end
        if cut:
            return
        if error is not None:
            raise error
        if not raw:
            return


def _split_cr(
    raw: list[bytes], starts: list[int], end: int, stop: int | None
) -> tuple[list[int], list[str], int, bool]:
    """`_line_chunks` of a chunk with a \\r in it: lines end at \\n, \\r\\n or a lone \\r, as
    in text mode (and the last item: whether a line from `stop` on was cut off)."""
    out_starts: list[int] = []
    texts: list[str] = []
    ends = [*starts[1:], end]
    for line, offset, after in zip(raw, starts, ends, strict=True):
        if stop is not None and offset >= stop:
            return out_starts, texts, offset, True
        if b"\r" in line and (not line.endswith(b"\r\n") or line.count(b"\r") > 1):
            at = after - len(line)
            for piece in line.splitlines(keepends=True):
                if stop is not None and at >= stop:  # a slice may start at a lone \r
                    return out_starts, texts, at, True
                out_starts.append(at)
                texts.append(piece.decode("utf-8", "surrogateescape"))
                at += len(piece)
        else:
            out_starts.append(offset)
            texts.append(line.decode("utf-8", "surrogateescape"))
    return out_starts, texts, end, False


def _decoded_lines(f: IO[bytes], offset: int, stop: int | None) -> Iterator[tuple[int, int, str]]:
    """(byte offset of the line, offset after it, its text) from `offset` to `stop` (None: the
    end). Lines end at \\n, \\r\\n or a lone \\r, as in text mode; bytes that are not UTF-8 are
    kept as surrogate escapes, so a path keeps its bytes and other text is made valid (with a
    warning) when it becomes a row. One line at a time (CSV reads records across lines and
    knows its own end); `_line_chunks` gives the same lines a chunk at a time."""
    for raw in f:
        if stop is not None and offset >= stop:
            return
        end = offset + len(raw)
        if offset == 0 and raw.startswith(_BOM):
            raw = raw[3:]
        if b"\r" in raw and (not raw.endswith(b"\r\n") or raw.count(b"\r") > 1):
            at = end - len(raw)
            for piece in raw.splitlines(keepends=True):
                if stop is not None and at >= stop:  # a slice may start at a lone \r
                    return
                yield at, at + len(piece), piece.decode("utf-8", "surrogateescape")
                at += len(piece)
        else:
            yield offset, end, raw.decode("utf-8", "surrogateescape")
        offset = end


def _seek_chunks(
    f: IO[bytes], start: int, stop: int | None
) -> Iterator[tuple[list[int], list[str], int]]:
    """`_line_chunks` from `start`: a failed seek is a read error of the first chunk."""
    if start:
        f.seek(start)
    yield from _line_chunks(f, start, stop)


def open_binary(path: str) -> IO[bytes]:
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")  # noqa: SIM115


class JsonLinesSource(Source):
    kind = "jsonl"
    unit = "line"

    def _parsed(
        self, part: Slice | None = None, parse: Callable[[str], Any] = parse_json
    ) -> Iterator[tuple[int, Any, int]]:
        """(line number, parsed JSON or `Unparsed`, byte offset of the line) for every
        non-blank line of the file, or of one slice of it; a file that cannot be read to its
        end ends with one `Unparsed` for the rest. `parse`: how a line is decoded."""
        start, stop, lineno = (0, None, 0)
        if part is not None:
            start, stop, lineno = part.start, part.stop, part.first_line
        offset = start
        with open_binary(self.path) as f:
            try:
                if start:
                    f.seek(start)
                for offset, _, line in _decoded_lines(f, start, stop):
                    lineno += 1
                    if line.strip():
                        yield lineno, parse(line), offset
            except READ_ERRORS as e:
                yield lineno + 1, _unreadable(lineno, e), offset

    def _scan_chunks(
        self, start: int = 0, stop: int | None = None
    ) -> Iterator[tuple[list[Any], Sequence[int], Sequence[int], list[str]]]:
        """`_parsed(parse=_scan_json)` of the lines from byte `start` to `stop`, a chunk of
        lines at a time, as (records, the byte offset of each, the lines before each from
        `start`, the chunk's lines); a line that starts with its value and ends after it is
        decoded at once (as `batches` does), any other by `_scan_json`."""
        lineno, offset = 0, start
        scan_once = _scan_decoder.scan_once
        with open_binary(self.path) as f:
            chunks = _seek_chunks(f, start, stop)
            while True:
                try:
                    chunk = next(chunks, None)
                except READ_ERRORS as e:
                    yield [_unreadable(lineno, e)], [offset], [lineno], []
                    return
                if chunk is None:
                    return
                starts, lines, _ = chunk
                records: list[Any] = []
                append = records.append
                blank = False
                for line in lines:
                    try:
                        value, end = scan_once(line, 0)
                    except (StopIteration, ValueError, RecursionError):
                        if not line.strip():
                            blank = True
                            value = _BLANK
                        else:
                            value = _scan_json(line)
                    else:
                        rest = line[end:]
                        if rest != "\n" and rest.strip(_JSON_SPACE):
                            value = _scan_json(line)
                    append(value)
                if blank:  # records are the lines that are not blank
                    kept = [i for i, r in enumerate(records) if r is not _BLANK]
                    records = [records[i] for i in kept]
                    yield records, [starts[i] for i in kept], [lineno + i for i in kept], lines
                else:
                    yield records, starts, range(lineno, lineno + len(lines)), lines
                lineno += len(lines)
                offset = starts[-1]

    def scan_part(self, start: int = 0, stop: int | None = None, every: int = 1) -> ScanPart:
        """One pass over the lines from byte `start` to `stop` (a cut after a line end, or
        the whole file): their keys and value types, and where every `every`-th record is."""
        keys: dict[str, None] = {}  # in the order they first appear
        pairs: set[tuple[str, type]] = set()  # (key, type of a value)
        shapes: set[tuple] = set()  # (*keys, *types of their values) of a record
        count = lines = 0
        offsets, befores = array("q"), array("q")
        unreadable = False
        for records, at, before, chunk_lines in self._scan_chunks(start, stop):
            if every == 1:
                offsets.extend(at[: len(records)])
                befores.extend(before)
            else:
                for i in range(-count % every, len(records), every):
                    offsets.append(at[i])
                    befores.append(before[i])
            count += len(records)
            lines += len(chunk_lines)
            for record in records:
                if type(record) is not dict:
                    unreadable = unreadable or (isinstance(record, Unparsed) and not record.text)
                    continue
                # keys then the types of their values: one tuple (half keys, half types)
                shape = (*record, *map(type, record.values()))
                if shape not in shapes:  # rows mostly repeat a few shapes: each is seen once
                    if len(shapes) < _SHAPES:
                        shapes.add(shape)
                    half = len(shape) // 2
                    keys.update(dict.fromkeys(shape[:half]))
                    pairs.update(zip(shape[:half], shape[half:], strict=True))
        return ScanPart(keys, pairs, count, lines, every, offsets, befores, unreadable)

    def _scan(self) -> None:
        """One pass over the file: passthrough column types (JSON has no schema), row count,
        and where every `batch_rows`-th record starts (the places slices may cut). A big file
        may have been scanned in parts by other processes instead (`scan_in_parallel`)."""
        if hasattr(self, "_fields"):
            return
        scan = ScanTotals(self.options.batch_rows)
        scan.add(self.scan_part(every=self.options.batch_rows))
        self.use_scan(scan)

    def use_scan(self, scan: ScanTotals) -> None:
        """Take what the scan of the whole file found (`_scan`)."""
        kinds: dict[str, set[str]] = {key: set() for key in scan.keys}
        for key, kind in scan.pairs:
            kinds[key].add(_TYPE_KINDS[kind])
        # a file read whole: gzip cannot seek, and an unreadable file is read as it reads
        self._marks = [] if scan.unreadable or self.path.endswith(".gz") else scan.marks
        names = sorted(valid_text(k) for k in kinds)
        if names:  # a column no row has is a typo in a flag, not a property of every row
            self._require_image_col(names)
        self._id_col = self._find_id_col(names) if names else self.options.id_col
        self._columns = names
        self._kinds = {k: frozenset(v - {"null"}) for k, v in kinds.items()}
        self._set_lineage({k: v <= {"str"} for k, v in self._kinds.items()})
        self._dirty_names = frozenset(k for k in kinds if not is_valid_text(k))
        self._known = frozenset(kinds)
        self._fields, self._json_columns = [], set()
        for key in kinds:
            out = self._passthrough_name(key)
            if out is not None:
                self._fields.append(pa.field(out, _KIND_TYPES.get(self._kinds[key], pa.string())))
                if self._kinds[key] not in _KIND_TYPES:
                    self._json_columns.add(key)
        self._count = scan.count

    def slices(self, index: int, rows: int) -> list[Slice]:
        """Byte ranges of about `rows` records, cut where a record starts (`byte_slices`)."""
        self._scan()
        return byte_slices(index, self.path, self._marks, rows // self.options.batch_rows)

    def passthrough_fields(self) -> list[pa.Field]:
        self._scan()
        return self._fields

    def columns(self) -> list[str] | None:
        self._scan()
        return self._columns

    def count_rows(self) -> int | None:
        self._scan()
        return self._count

    def hint(self) -> str:
        return (
            "is it JSON Lines, one object per line? (a JSON array file is read as rows when "
            "its name ends in .json)"
        )

    def _coerce(self, record: dict) -> dict:
        # Columns with mixed JSON types become strings holding the JSON text: nothing is lost.
        for key in self._json_columns.intersection(record):
            value = record[key]
            if value is not None and not isinstance(value, str):
                try:
                    record[key] = json.dumps(value, ensure_ascii=False)
                except RecursionError:
                    raise RecordError(f"column {key!r}: JSON nested too deeply") from None
        return record

    def records(self, part: Slice | None = None) -> Iterator[tuple[dict | BadRecord, int | str]]:
        self._scan()
        first_row = part.first_row if part is not None and part.kind == "bytes" else 0
        ranged = part if part is not None and part.kind == "bytes" else None
        for rowno, (lineno, record, _) in enumerate(self._parsed(ranged), start=first_row):
            yield self._record_row(record, rowno), lineno

    def _record_row(self, record: Any, rowno: int) -> dict | BadRecord:
        """The row of one parsed line (the general rule, for any record), or its reject."""
        try:
            if isinstance(record, Unparsed):
                text = valid_text(record.text.strip())[:MESSAGE_TEXT]
                raise RecordError(f"{record.message}; text: {text}" if text else record.message)
            if not isinstance(record, dict):
                raise RecordError(f"a JSON {type(record).__name__}, not an object")
            row = self._row(self._coerce(record), rowno)
            if not self._known.issuperset(record):  # lines appended after the scan
                late = sorted(valid_text(k) for k in record if k not in self._known)
                add_warning(row, f"columns not in the scan of the file dropped: {late}")
            return row
        except RecordError as e:
            return self._bad_row(record, rowno, str(e))

    def batches(self, schema: pa.Schema, part: Slice | None = None) -> Iterator[SourceBatch]:
        """`Source.batches` of `records`, with the common record made a row in place: a line
        that is one JSON object whose keys (in order) were planned (`_plan`: no repair, no
        coercion, no warning) and whose image is null or a path and caption null or text.
        Any other line takes `_record_row`, so the batches are the same (tested against it)."""
        self._scan()
        builder = self._builder(schema, part)
        start, stop, lineno, rowno = 0, None, 0, 0
        if part is not None and part.kind == "bytes":
            start, stop, lineno, rowno = part.start, part.stop, part.first_line, part.first_row
        plans: dict[tuple, tuple | None] = {}
        image_col, text_col = self.options.image_col, self.options.text_col
        id_col = self._id_col or None
        source = self.source_text
        assert self._row_helpers is not None  # set by `_builder`
        resolve = self._row_helpers[1]  # the general rule's too: one cache of folders
        prefixes = resolve._prefixes  # the folders it has resolved: read here, filled by it
        id_hash = row_id_prefix(self.id_key).copy  # `row_id` of a row number, in place
        column = dict(zip(schema.names, builder.columns, strict=True))
        add_id, add_source, add_image, add_caption, add_warning_ = (
            column[name].append for name in BASE_NAMES
        )
        where, bad, add_where = builder.where, builder.bad, builder.where.append
        pending, spill = builder.rows, builder.spill  # row dicts the general rule made
        batch_rows, batch_bytes = self.options.batch_rows, self.options.batch_bytes
        scan_once = _read_scan
        with open_binary(self.path) as f:
            chunks = _seek_chunks(f, start, stop)
            while True:
                try:
                    chunk = next(chunks, None)
                except READ_ERRORS as e:
                    if batch := self._add(builder, _unreadable(lineno, e), rowno, lineno + 1):
                        yield batch
                    break
                if chunk is None:
                    break
                for line in chunk[1]:
                    lineno += 1
                    try:
                        value, end = scan_once(line, 0)
                    except (StopIteration, ValueError, RecursionError):
                        value = _NOT_PARSED
                    else:
                        rest = line[end:]
                        if rest != "\n" and rest.strip(_JSON_SPACE):
                            value = _NOT_PARSED  # more than one value: json.loads says why
                    plan = None
                    if type(value) is dict:
                        keys = tuple(value)
                        plan = plans.get(keys, _NO_PLAN)
                        if plan is _NO_PLAN:
                            plan = self._plan(keys, builder)
                            if len(plans) < _SHAPES:
                                plans[keys] = plan
                        if plan is not None:
                            image = value.get(image_col)
                            caption = value.get(text_col)
                            if caption is not None and type(caption) is not str:
                                plan = None
                            elif (
                                type(image) is str
                                and image
                                and not (image[4:5] == ":" and image[:4].lower() == "data")
                            ):
                                # `resolve(image)` for a name in a folder seen before
                                cut = image.rfind("/") + 1
                                prefix = prefixes.get(image[:cut])
                                name = image[cut:]
                                path = None
                                if (
                                    prefix is not None
                                    and ":" not in image[:32]
                                    and image[:1] != "~"
                                    and name
                                    and name != "."
                                    and name != ".."
                                ):
                                    path = prefix + name
                                    if not path.isascii():
                                        path = None
                                try:
                                    image = {"path": path or resolve(image), "bytes": None}
                                except RecordError:
                                    plan = None  # the general rule makes it a reject
                            elif image is not None:
                                plan = None
                    elif value is _NOT_PARSED:
                        if not line.strip():
                            continue
                        value = parse_json(line)
                    if plan is None:
                        if batch := self._add(builder, value, rowno, lineno):
                            yield batch
                        rowno += 1
                        continue
                    if pending:
                        spill()
                    raw_id = value.get(id_col) if plan[1] else None
                    if raw_id is None:
                        hashed = id_hash()
                        hashed.update(b"%d" % rowno)
                        add_id(hashed.hexdigest())
                    else:
                        add_id(str(raw_id))
                    add_source(source)
                    add_image(image)
                    add_caption(caption)
                    add_warning_(None)
                    for add, key in plan[0]:
                        add(value[key])
                    for add in plan[2]:
                        add(None)
                    add_where(lineno)
                    rowno += 1
                    if len(where) + len(bad) >= batch_rows or builder.image_bytes >= batch_bytes:
                        yield builder.flush()  # type: ignore[misc]
        if batch := builder.flush():
            yield batch

    def _add(
        self, builder: _BatchBuilder, record: Any, rowno: int, lineno: int
    ) -> SourceBatch | None:
        """A record the general rule makes a row or a reject (what `Source.batches` does)."""
        row = self._record_row(record, rowno)
        if isinstance(row, BadRecord):
            return builder.reject(row.row, f"{builder.place(lineno)}: {row.message}")
        return builder.add(row, lineno)

    def _plan(self, keys: tuple, builder: _BatchBuilder) -> tuple | None:
        """How `batches` makes a row of a record with these keys, in this order: for each
        passthrough column of the schema, the key whose value it takes (the last key of that
        output name, as `_row` copies them) and the columns it has none for; and whether the
        id column is there. None when `_row` would repair, coerce or warn, or `add` convert
        (the record takes the general rule)."""
        names = frozenset(keys)
        if (
            not self._known.issuperset(names)
            or not self._json_columns.isdisjoint(names)
            or not self._dirty_names.isdisjoint(names)
            or not names.isdisjoint(self._lineage)
        ):
            return None
        sources = {}
        for key in keys:
            out = self._passthrough_name(key)
            if out is not None:
                if out in builder.text_columns:
                    return None
                sources[out] = key
        taken, empty = [], []
        for name, column in zip(builder.schema.names, builder.columns, strict=True):
            if name in BASE_NAMES:
                continue
            if name in sources:
                taken.append((column.append, sources[name]))
            else:
                empty.append(column.append)
        return tuple(taken), bool(self._id_col) and self._id_col in names, tuple(empty)


class JsonArraySource(JsonLinesSource):
    """A `.json` file holding one array of objects (LLaVA-style), or one object."""

    kind = "json"
    unit = "item"

    def _parsed(
        self, part: Slice | None = None, parse: Callable[[str], Any] = parse_json
    ) -> Iterator[tuple[int, Any, int]]:
        try:
            with open_text(self.path) as f:
                document = parse(f.read())
        except READ_ERRORS as e:
            document = Unparsed(f"the file cannot be read ({e})", "")
        if isinstance(document, Unparsed):
            document.text = document.text[:MESSAGE_TEXT]
            yield 0, document, 0
        elif isinstance(document, list):
            for item, value in enumerate(document):
                yield item, value, 0
        else:
            yield 0, document, 0

    batches = Source.batches  # the items of one parsed document: no lines to read fast

    def _scan_chunks(
        self, start: int = 0, stop: int | None = None
    ) -> Iterator[tuple[list[Any], Sequence[int], Sequence[int], list[str]]]:
        items = list(self._parsed(parse=_scan_json))  # one document: scanned whole
        yield [r for _, r, _ in items], [at for *_, at in items], [n - 1 for n, *_ in items], []

    def slices(self, index: int, rows: int) -> list[Slice]:
        self._scan()
        return [Slice(index, self.path, "whole")]

    def hint(self) -> str:
        return "is it a JSON array of objects?"


def looks_like_json_document(path: str) -> bool:
    """A `.json` file that is not JSON Lines: an array, or an object spread over lines."""
    try:
        with open_text(path) as f:
            head = f.read(1 << 16).lstrip()
            if head.startswith("["):
                return True
            if not head.startswith("{"):
                return False
            f.seek(0)
            first = f.readline()
    except READ_ERRORS:
        return False  # read as JSON Lines, whose reader reports what cannot be read
    return isinstance(parse_json(first), Unparsed)


class StdinSource(JsonLinesSource):
    """JSON Lines on standard input, spooled to a temporary file so it can be scanned."""

    kind = "stdin"

    def __init__(self, options: ReadOptions):
        super().__init__(spool(sys.stdin.buffer, ".jsonl"), options, display="<stdin>")
        self.spooled = True
        self.base_dir = os.getcwd()  # relative paths on stdin are relative to where mmtok runs
