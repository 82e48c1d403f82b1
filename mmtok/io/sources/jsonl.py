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
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from mmtok.io.encoding import is_valid_text, valid_text
from mmtok.io.sources.base import BadRecord, ReadOptions, Source
from mmtok.io.sources.values import MESSAGE_TEXT, READ_ERRORS, RecordError, add_warning


def open_text(path: str) -> io.TextIOBase:
    """Text with a UTF-8 BOM dropped; bytes that are not UTF-8 kept as surrogate escapes, so a
    path keeps its bytes and other text is made valid (with a warning) when it becomes a row."""
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig", errors="surrogateescape", newline="")
    return open(path, encoding="utf-8-sig", errors="surrogateescape", newline="")  # noqa: SIM115


_INT64 = (-(1 << 63), 1 << 63)


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int" if _INT64[0] <= value < _INT64[1] else "bigint"  # bigint: kept as text
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    return "json"


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


class JsonLinesSource(Source):
    kind = "jsonl"
    unit = "line"

    def _parsed(self) -> Iterator[tuple[int, Any]]:
        """(line number, parsed JSON or `Unparsed`) for every non-blank line; a file that
        cannot be read to its end ends with one `Unparsed` for the rest."""
        lineno = 0
        with open_text(self.path) as f:
            try:
                for lineno, line in enumerate(f, start=1):  # noqa: B007 - read after the loop
                    if line.strip():
                        yield lineno, parse_json(line)
            except READ_ERRORS as e:
                message = f"the file cannot be read after line {lineno} ({e}); the rest is unread"
                yield lineno + 1, Unparsed(message, "")

    def _scan(self) -> None:
        """One pass over the file: passthrough column types (JSON has no schema) and row count."""
        if hasattr(self, "_fields"):
            return
        kinds: dict[str, set[str]] = {}
        count = 0
        for _, record in self._parsed():
            count += 1
            if not isinstance(record, dict):
                continue
            for key, value in record.items():
                kinds.setdefault(key, set()).add(_json_kind(value))
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

    def records(self) -> Iterator[tuple[dict | BadRecord, int | str]]:
        self._scan()
        for rowno, (lineno, record) in enumerate(self._parsed()):
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

    def _parsed(self) -> Iterator[tuple[int, Any]]:
        try:
            with open_text(self.path) as f:
                document = parse_json(f.read())
        except READ_ERRORS as e:
            document = Unparsed(f"the file cannot be read ({e})", "")
        if isinstance(document, Unparsed):
            document.text = document.text[:MESSAGE_TEXT]
            yield 0, document
        elif isinstance(document, list):
            yield from enumerate(document)
        else:
            yield 0, document

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

    def __del__(self):
        with contextlib.suppress(OSError):
            os.unlink(self.path)
