"""JSON Lines, JSON array files (LLaVA-style) and JSON Lines on stdin."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import pyarrow as pa

from mmtok.io.encoding import is_valid_text, valid_text
from mmtok.io.sources.base import BadRecord, ReadOptions, Slice, Source, byte_slices
from mmtok.io.sources.values import MESSAGE_TEXT, READ_ERRORS, RecordError, add_warning


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
class Unparsed:
    """A record that is not a JSON object: why, and its text."""

    message: str
    text: str


def parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        return Unparsed("JSON nested too deeply to parse (RecursionError)", text)
    except ValueError as e:
        return Unparsed(str(e), text)


_BOM = b"\xef\xbb\xbf"


def _decoded_lines(f: IO[bytes], offset: int, stop: int | None) -> Iterator[tuple[int, int, str]]:
    """(byte offset of the line, offset after it, its text) from `offset` to `stop` (None: the
    end). Lines end at \\n, \\r\\n or a lone \\r, as in text mode; bytes that are not UTF-8 are
    kept as surrogate escapes, so a path keeps its bytes and other text is made valid (with a
    warning) when it becomes a row."""
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
                message = f"the file cannot be read after line {lineno} ({e}); the rest is unread"
                yield lineno + 1, Unparsed(message, ""), offset

    def _scan(self) -> None:
        """One pass over the file: passthrough column types (JSON has no schema), row count,
        and where every `batch_rows`-th record starts (the places slices may cut)."""
        if hasattr(self, "_fields"):
            return
        keys: dict[str, None] = {}  # in the order they first appear
        pairs: set[tuple[str, type]] = set()  # (key, type of a value)
        shapes: set[tuple[tuple, tuple]] = set()  # (keys, types of their values) of a record
        count = 0
        marks: list[tuple[int, int, int]] = []  # (byte offset, row number, lines before)
        unreadable = False
        batch_rows = self.options.batch_rows
        for lineno, record, offset in self._parsed(parse=_scan_json):
            if count % batch_rows == 0:
                marks.append((offset, count, lineno - 1))
            count += 1
            if type(record) is not dict:
                unreadable = unreadable or (isinstance(record, Unparsed) and not record.text)
                continue
            shape = (tuple(record), tuple(map(type, record.values())))
            if shape not in shapes:  # rows mostly repeat a few shapes: each is looked at once
                if len(shapes) < _SHAPES:
                    shapes.add(shape)
                keys.update(dict.fromkeys(shape[0]))
                pairs.update(zip(*shape, strict=True))
        kinds: dict[str, set[str]] = {key: set() for key in keys}
        for key, kind in pairs:
            kinds[key].add(_TYPE_KINDS[kind])
        # a file read whole: gzip cannot seek, and an unreadable file is read as it reads
        self._marks = [] if unreadable or self.path.endswith(".gz") else marks
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
        self._count = count

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
            where = lineno
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
                yield row, where
            except RecordError as e:
                yield self._bad_row(record, rowno, str(e)), where


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
        with tempfile.NamedTemporaryFile(
            prefix="mmtok-stdin-", suffix=".jsonl", delete=False
        ) as spool:
            shutil.copyfileobj(sys.stdin.buffer, spool)
        super().__init__(spool.name, options, display="<stdin>")
        self.base_dir = os.getcwd()  # relative paths on stdin are relative to where mmtok runs

    def fingerprint(self) -> dict:
        with open(self.path, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        return {"path": self.display, "kind": self.kind, "sha256": digest}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _copy=True)  # a worker's copy: the spool is not its own

    def __del__(self):
        if not self.__dict__.get("_copy"):
            with contextlib.suppress(OSError):
                os.unlink(self.path)
