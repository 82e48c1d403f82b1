"""Sources: read JSON Lines, JSON arrays, CSV/TSV, Parquet, WebDataset tars, image folders,
mmtok output folders and stdin as a stream of Arrow batches in the row schema of
`mmtok.io.schema`.

Every source is deterministic: the same input and options give the same batches in the same
order, so a resumed run can skip the batches a killed run already finished.

Dirty data never stops a read: each record becomes a row (text made valid, with a `warning`)
or a `bad_record` reject of stage "read" that says where it was and what was wrong. Clean
batches convert to Arrow in one call; only a batch that fails to convert is looked at row by
row (`_BatchBuilder.flush`), so the common path pays nothing for the dirty one.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import csv
import glob
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

import pyarrow as pa
import pyarrow.parquet as pq

from mmtok.errors import MmtokError
from mmtok.io.encoding import FILE_URI, is_valid_text, local_path, name_text, path_text, valid_text
from mmtok.io.layout import MANIFEST_FILE, SIDE_DIR
from mmtok.io.schema import (
    BASE_FIELDS,
    BASE_NAMES,
    LINEAGE_NAMES,
    make_rejects,
    unify_passthrough,
)
from mmtok.io.tar import Damage, tar_members
from mmtok.reasons import Reason

READ_STAGE = "read"
IMAGE_EXTENSIONS = frozenset(
    [
        "jpg",
        "jpeg",
        "jpe",
        "jfif",
        "png",
        "webp",
        "gif",
        "bmp",
        "tif",
        "tiff",
        "avif",
        "heic",
        "heif",
        "jp2",
        "j2k",
        "ico",
        "svg",
        "ppm",
        "pgm",
        "pbm",
        "tga",
    ]
)
WDS_IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")
DEFAULT_TEXT_COL = "caption"
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# WebDataset's rule: the key is everything before the first dot of the file name.
_WDS_KEY = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")
# A CSV field may be a long caption; far beyond this it is an unclosed quote eating the file.
_CSV_FIELD_LIMIT = 1 << 30
_MESSAGE_TEXT = 500  # characters of a bad record quoted in its reject message
# What `pa.Table.from_pylist` raises for values that do not fit the schema.
_CONVERSION_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, UnicodeEncodeError)


@dataclass(frozen=True)
class ReadOptions:
    image_col: str = "image"
    text_col: str = DEFAULT_TEXT_COL
    id_col: str | None = None  # None: the input's `id` column if it has one, else a hash
    batch_rows: int = 256
    batch_bytes: int = 32 << 20  # cut a batch early when its image bytes reach this


@dataclass
class SourceBatch:
    rows: pa.Table
    rejected: pa.Table | None = None  # records that could not be parsed (stage "read")

    @property
    def num_records(self) -> int:
        return self.rows.num_rows + (self.rejected.num_rows if self.rejected is not None else 0)


def row_id(source: str, key: str | int) -> str:
    """A stable id for a row without an id column: hash of (source file, row number or key).

    `surrogatepass` so names that are not UTF-8 hash too (valid text hashes as before)."""
    return hashlib.blake2b(
        f"{source}\0{key}".encode("utf-8", "surrogatepass"), digest_size=10
    ).hexdigest()


def resolve_image_path(value: str, base_dir: str) -> str:
    """Relative paths resolve against the input file's folder; URLs are kept as given; a path
    that is not UTF-8 becomes a `file:` URI of its bytes (see `mmtok.io.encoding`)."""
    if ":" in value[:32]:  # a cheap test first: most values are plain paths
        if value[:5].lower() == "file:":
            return path_text(local_path(value))
        if _URI.match(value):
            return value
    return path_text(os.path.normpath(os.path.join(base_dir, os.path.expanduser(value))))


class _RecordError(ValueError):
    """A record that cannot become a row (stage "read", reason bad_record)."""


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise _RecordError(f"{what} is not valid base64: {e}") from None


_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def data_uri_bytes(uri: str) -> bytes:
    """The bytes of a `data:` URI (RFC 2397): base64 after `;base64`, else percent-encoded.
    The scheme and the `;base64` marker are case-insensitive (RFC 3986 3.1, RFC 2397 3)."""
    header, comma, payload = uri.partition(",")
    if not comma:
        raise _RecordError("image data URI has no ',' before its data")
    if header.lower().endswith(";base64"):
        return _b64(payload, "image data URI")
    if _BAD_PERCENT.search(payload):
        raise _RecordError("image data URI has a '%' that is not a percent-encoded byte")
    return unquote_to_bytes(payload)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def image_value(value: Any, base_dir: str) -> dict | None:
    """Normalize an image cell (path, data URI, bytes, or {path, bytes}) to the image struct."""
    if value is None:
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        return {"path": None, "bytes": bytes(value)}
    if isinstance(value, str):
        if value == "":
            return None
        if value[4:5] == ":" and value[:4].lower() == "data":
            return {"path": None, "bytes": data_uri_bytes(value)}
        return {"path": resolve_image_path(value, base_dir), "bytes": None}
    if isinstance(value, dict):
        path, data = value.get("path"), value.get("bytes")
        if isinstance(data, str):
            is_uri = data[:5].lower() == "data:"
            data = data_uri_bytes(data) if is_uri else _b64(data, "image bytes")
        elif isinstance(data, bytearray | memoryview):
            data = bytes(data)
        elif data is not None and not isinstance(data, bytes):
            raise _RecordError(f"image bytes of type {type(data).__name__}: {_short(data)}")
        if path is not None and not isinstance(path, str):
            raise _RecordError(f"image path of type {type(path).__name__}: {_short(path)}")
        if data is None and not path:
            return None
        return {"path": resolve_image_path(path, base_dir) if path else None, "bytes": data}
    raise _RecordError(f"image value of type {type(value).__name__} is neither a path nor bytes")


def caption_value(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False) if isinstance(value, list | dict) else str(value)


def _valid_value(value: Any) -> Any:
    """`value` with lone surrogates replaced in every string it holds (keys included)."""
    if isinstance(value, str):
        return valid_text(value)
    if isinstance(value, dict):
        return {_valid_value(k): _valid_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_valid_value(v) for v in value]
    return value


def add_warning(row: dict, warning: str) -> None:
    row["warning"] = f"{row['warning']}; {warning}" if row.get("warning") else warning


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
    first_bad: str | None = None


class _BatchBuilder:
    """Accumulates rows and read rejects as Python values; emits conformed Arrow batches."""

    def __init__(self, schema: pa.Schema, options: ReadOptions, text_columns: list[str], unit: str):
        self.schema, self.options, self.unit = schema, options, unit
        # Passthrough columns that inputs disagree on are text: other values become JSON text.
        self.text_columns = text_columns
        self.rows: list[dict] = []
        self.where: list[int | str] = []  # a number of `unit`s, or a description
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

    def reject(self, row: dict, message: str) -> SourceBatch | None:
        self.bad.append((row, message))
        return self._maybe_flush()

    def _maybe_flush(self) -> SourceBatch | None:
        full = len(self.rows) + len(self.bad) >= self.options.batch_rows
        if full or self.image_bytes >= self.options.batch_bytes:
            return self.flush()
        return None

    def flush(self) -> SourceBatch | None:
        if not self.rows and not self.bad:
            return None
        try:
            rows = pa.Table.from_pylist(self.rows, schema=self.schema)  # missing keys: nulls
        except _CONVERSION_ERRORS:
            rows = self._one_by_one()  # a dirty batch: find the rows, repair or reject them
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
            self.stats.bad_records += len(self.bad)
            self.stats.first_bad = self.stats.first_bad or self.bad[0][1]
        self.stats.rows += rows.num_rows
        self.stats.rows_without_image += rows.column("image").null_count
        self.rows, self.where, self.bad, self.image_bytes = [], [], [], 0
        return SourceBatch(rows, rejected)

    def place(self, where: int | str) -> str:
        return where if isinstance(where, str) else f"{self.unit} {where}"

    def _one_by_one(self) -> pa.Table:
        kept = []
        for row, where in zip(self.rows, self.where, strict=True):
            problems = self._repair(row)
            if problems:
                self.bad.append((row, f"{self.place(where)}: {'; '.join(problems)}"))
            else:
                kept.append(row)
        return pa.Table.from_pylist(kept, schema=self.schema)

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
            except UnicodeEncodeError:
                value = _valid_value(value)
                repaired.append(f.name)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
                if f.type == pa.string():  # a text column: any value fits as its JSON text
                    value = caption_value(value)
            try:
                pa.array([value], f.type)
                row[f.name] = value
            except _CONVERSION_ERRORS as e:
                problems.append(f"column {f.name!r}: {_short(value)} does not fit {f.type} ({e})")
                row[f.name] = None
        if repaired:
            add_warning(
                row,
                "text that was not valid UTF-8 (lone surrogates or bad bytes) replaced with "
                f"U+FFFD in {', '.join(repaired)}",
            )
        return problems


class Source:
    """One input: a file or folder. Subclasses read it row by row or batch by batch."""

    kind = "?"
    unit = "row"  # what `where` counts in reject messages: line, row, item, ...

    def __init__(self, path: str, options: ReadOptions, display: str | None = None):
        self.path = path
        self.display = display or path
        self.source_text = (
            self.display
            if is_valid_text(self.display)
            else path_text(os.path.abspath(self.display))
        )
        self.options = options
        self.base_dir = os.path.dirname(os.path.abspath(path))
        self.notes: dict[str, int] = {}
        self.stats = ReadStats()
        self._output_names: dict[str, str | None] = {}
        self._lineage: tuple[str, ...] = ()  # base columns of an earlier mmtok run, as text
        self._dirty_names: frozenset[str] = frozenset()

    @property
    def id_key(self) -> str:
        """What row ids hash: the absolute path, so the same file gives the same ids."""
        return os.path.abspath(self.path) if self.display == self.path else self.display

    def passthrough_fields(self) -> list[pa.Field]:
        return []

    def columns(self) -> list[str] | None:
        """The input's column names, for checking --text-col; None: the source has no columns
        of its own (a folder) or cannot tell without reading it all (a tar shard)."""
        return None

    def count_rows(self) -> int | None:
        return None

    def records(self) -> Iterator[tuple[dict | BadRecord, int | str]]:
        """Rows in the output schema as dicts, or `BadRecord`s, in input order, each with
        where it was: a number of `unit`s (line 12), or a description (sample abc)."""
        raise NotImplementedError

    def batches(self, schema: pa.Schema) -> Iterator[SourceBatch]:
        own = {f.name: f.type for f in self.passthrough_fields()}
        text_columns = [
            f.name
            for f in schema
            if f.type == pa.string() and f.name in own and own[f.name] != pa.string()
        ]
        builder = _BatchBuilder(schema, self.options, text_columns, self.unit)
        self.stats = builder.stats
        for record, where in self.records():
            if isinstance(record, BadRecord):
                batch = builder.reject(record.row, f"{builder.place(where)}: {record.message}")
            else:
                batch = builder.add(record, where)
            if batch:
                yield batch
        if batch := builder.flush():
            yield batch

    def fingerprint(self) -> dict:
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

    def _row(self, record: dict, rowno: int) -> dict:
        """A row dict in the output schema from one input record (a dict of column values)."""
        raw_id = record.get(self._id_col) if self._id_col else None
        row = {
            "id": str(raw_id) if raw_id is not None else row_id(self.id_key, rowno),
            "source": self.source_text,
            "image": image_value(record.get(self.options.image_col), self.base_dir),
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


# --- JSON Lines and JSON arrays -------------------------------------------------------------


def _open_text(path: str) -> io.TextIOBase:
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
class _Unparsed:
    """A record that is not a JSON object: why, and its text."""

    message: str
    text: str


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        return _Unparsed("JSON nested too deeply to parse (RecursionError)", text)
    except ValueError as e:
        return _Unparsed(str(e), text)


class JsonLinesSource(Source):
    kind = "jsonl"
    unit = "line"

    def _parsed(self) -> Iterator[tuple[int, Any]]:
        """(line number, parsed JSON or `_Unparsed`) for every non-blank line."""
        with _open_text(self.path) as f:
            for lineno, line in enumerate(f, start=1):
                if line.strip():
                    yield lineno, _parse_json(line)

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
                    raise _RecordError(f"column {key!r}: JSON nested too deeply") from None
        return record

    def records(self) -> Iterator[tuple[dict | BadRecord, int | str]]:
        self._scan()
        for rowno, (lineno, record) in enumerate(self._parsed()):
            where = lineno
            try:
                if isinstance(record, _Unparsed):
                    text = valid_text(record.text.strip())[:_MESSAGE_TEXT]
                    raise _RecordError(f"{record.message}; text: {text}")
                if not isinstance(record, dict):
                    raise _RecordError(f"a JSON {type(record).__name__}, not an object")
                row = self._row(self._coerce(record), rowno)
                if not self._known.issuperset(record):  # lines appended after the scan
                    late = sorted(valid_text(k) for k in record if k not in self._known)
                    add_warning(row, f"columns not in the scan of the file dropped: {late}")
                yield row, where
            except _RecordError as e:
                yield self._bad_row(record, rowno, str(e)), where


class JsonArraySource(JsonLinesSource):
    """A `.json` file holding one array of objects (LLaVA-style), or one object."""

    kind = "json"
    unit = "item"

    def _parsed(self) -> Iterator[tuple[int, Any]]:
        with _open_text(self.path) as f:
            document = _parse_json(f.read())
        if isinstance(document, _Unparsed):
            document.text = document.text[:_MESSAGE_TEXT]
            yield 0, document
        elif isinstance(document, list):
            yield from enumerate(document)
        else:
            yield 0, document

    def hint(self) -> str:
        return "is it a JSON array of objects?"


def _looks_like_json_document(path: str) -> bool:
    """A `.json` file that is not JSON Lines: an array, or an object spread over lines."""
    with _open_text(path) as f:
        head = f.read(1 << 16).lstrip()
        if head.startswith("["):
            return True
        if not head.startswith("{"):
            return False
        f.seek(0)
        first = f.readline()
    return isinstance(_parse_json(first), _Unparsed)


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


# --- CSV / TSV ----------------------------------------------------------------------------


def _csv_rows(f: io.TextIOBase, delimiter: str) -> Iterator[tuple[int, list[str] | str]]:
    """(line number, fields) per record, or (line number, error) for one the parser refuses;
    the parser goes on after an error."""
    csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
    reader = csv.reader(f, delimiter=delimiter)
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            yield reader.line_num, f"CSV error: {e}"
            continue
        yield reader.line_num, values


class CsvSource(Source):
    kind = "csv"
    unit = "line"

    def __init__(self, path: str, options: ReadOptions):
        super().__init__(path, options)
        self.delimiter = "\t" if ".tsv" in path.lower() else ","
        with _open_text(self.path) as f:
            header = next(_csv_rows(f, self.delimiter), (0, None))[1]
        if not header or isinstance(header, str):
            raise MmtokError(f"{path}: no CSV header line" + (f" ({header})" if header else ""))
        self.header = [valid_text(h) for h in header]
        self._id_col = self._find_id_col(self.header)
        self._set_lineage({n: True for n in self.header})
        self._require_image_col(self.header)

    def passthrough_fields(self) -> list[pa.Field]:
        names = [self._passthrough_name(n) for n in self.header]
        return [pa.field(n, pa.string()) for n in names if n is not None]

    def columns(self) -> list[str] | None:
        return self.header

    def count_rows(self) -> int | None:
        with _open_text(self.path) as f:
            return sum(1 for _ in _csv_rows(f, self.delimiter)) - 1

    def hint(self) -> str:
        return "is it comma-separated (.csv) or tab-separated (.tsv) with a header line?"

    def records(self) -> Iterator[tuple[dict | BadRecord, int | str]]:
        with _open_text(self.path) as f:
            rows = _csv_rows(f, self.delimiter)
            next(rows)
            for rowno, (lineno, values) in enumerate(rows):
                where = lineno
                if isinstance(values, str):
                    yield self._bad(rowno, values), where
                    continue
                if len(values) != len(self.header):
                    text = valid_text(self.delimiter.join(values))[:_MESSAGE_TEXT]
                    message = f"{len(values)} fields, the header has {len(self.header)}"
                    yield self._bad(rowno, f"{message}; text: {text}"), where
                    continue
                record = dict(zip(self.header, values, strict=True))
                try:
                    yield self._row(record, rowno), where
                except _RecordError as e:
                    yield self._bad_row(record, rowno, str(e)), where


# --- Parquet ------------------------------------------------------------------------------


class ParquetSource(Source):
    kind = "parquet"

    def __init__(self, path: str, options: ReadOptions):
        super().__init__(path, options)
        try:
            self.file = pq.ParquetFile(path)
        except (OSError, pa.ArrowException) as e:
            raise MmtokError(f"cannot read Parquet file {path}: {e}") from None
        names = self.file.schema_arrow.names
        self._id_col = self._find_id_col(names)
        self._set_lineage({f.name: f.type == pa.string() for f in self.file.schema_arrow})
        self._require_image_col(names)

    def passthrough_fields(self) -> list[pa.Field]:
        fields = []
        for f in self.file.schema_arrow:
            name = self._passthrough_name(f.name)
            if name is not None:
                fields.append(pa.field(name, f.type))
        return fields

    def columns(self) -> list[str] | None:
        return self.file.schema_arrow.names

    def count_rows(self) -> int | None:
        return self.file.metadata.num_rows

    def records(self) -> Iterator[tuple[dict | BadRecord, int | str]]:
        rowno = 0
        try:
            for record_batch in self.file.iter_batches(batch_size=self.options.batch_rows):
                for record in record_batch.to_pylist():
                    try:
                        yield self._row(record, rowno), rowno
                    except _RecordError as e:
                        yield self._bad_row(record, rowno, str(e)), rowno
                    rowno += 1
        except (OSError, pa.ArrowException) as e:
            message = f"cannot read Parquet file {self.path} after row {rowno}: {e}"
            raise MmtokError(message) from None


# --- WebDataset ---------------------------------------------------------------------------


class WebDatasetSource(Source):
    """A WebDataset tar shard: members grouped by key; `<key>.jpg|png|webp` + `.txt` or `.json`.

    A damaged shard keeps every sample it can read; each damaged stretch is one `bad_record`
    reject that gives its byte offset (see `mmtok.io.tar`)."""

    kind = "webdataset"

    def passthrough_fields(self) -> list[pa.Field]:
        return [pa.field("key", pa.string()), pa.field("json", pa.string())]

    def hint(self) -> str:
        return "is it a WebDataset tar shard (<key>.jpg + <key>.txt members)?"

    def _sample_row(self, key: str, members: dict[str, bytes]) -> dict:
        image_ext = next((e for e in WDS_IMAGE_EXTENSIONS if e in members), None)
        key_text, bad_name = name_text(os.fsencode(key))
        warnings = []
        meta_text = caption = None
        if "json" in members:
            meta_text, bad = _utf8(members["json"])
            warnings += [f"{key_text}.json {bad}"] if bad else []
        if "txt" in members:
            caption, bad = _utf8(members["txt"])
            warnings += [f"{key_text}.txt {bad}"] if bad else []
        if caption is None and meta_text is not None:
            meta = _parse_json(meta_text)
            if isinstance(meta, _Unparsed):
                raise _RecordError(f"{key_text}.json is not valid JSON: {meta.message}")
            if isinstance(meta, dict):
                caption = caption_value(meta.get(self.options.text_col))
        row = {
            "id": row_id(self.id_key, key),
            "source": self.source_text,
            "image": {"path": None, "bytes": members[image_ext]} if image_ext else None,
            "caption": caption,
            "key": key_text,
            "json": meta_text,
        }
        for warning in [bad_name, *warnings]:
            if warning:
                add_warning(row, warning)
        return row

    def _events(self) -> Iterator[tuple[str, dict[str, bytes]] | tuple[Damage, str | None]]:
        """(key, members) per sample, and (damage, key of the last member before it)."""
        key, members, ignored = None, {}, 0
        with open(self.path, "rb") as f:
            for event in tar_members(f):
                if isinstance(event, Damage):
                    # The sample being read stays open: members after a resync with the same
                    # key still join it, so a key never gives two rows.
                    yield event, key
                    continue
                match = _WDS_KEY.match(os.fsdecode(event.name))
                if not match:
                    ignored += 1  # no extension: not part of a sample
                    continue
                member_key, ext = match.group(1), match.group(2).lower()
                if member_key != key and key is not None:
                    yield key, members
                    members = {}
                key = member_key
                members[ext] = event.data
        if key is not None:
            yield key, members
        self.notes["ignored_tar_members"] = ignored

    def records(self) -> Iterator[tuple[dict | BadRecord, int | str]]:
        for first, second in self._events():
            if isinstance(first, Damage):
                after = f"after sample {valid_text(second)!r}" if second else "before any sample"
                message = f"tar shard damaged {after}: {first.message}"
                yield self._bad(f"#damage@{first.offset}", message), f"byte {first.offset}"
                continue
            key, members = first, second
            key_text = valid_text(key)
            try:
                yield self._sample_row(key, members), f"sample {key_text}"
            except _RecordError as e:
                yield self._bad(key, str(e), key=key_text), f"sample {key_text}"


def _utf8(data: bytes) -> tuple[str, str | None]:
    """Text from bytes, and a warning when they were not valid UTF-8."""
    try:
        return data.decode(), None
    except UnicodeDecodeError:
        return data.decode(errors="replace"), "is not valid UTF-8: bad bytes replaced with U+FFFD"


# --- Folder of images ---------------------------------------------------------------------


class FolderSource(Source):
    """Every image file under a folder (recursive, sorted); caption from `<stem>.txt` beside it."""

    kind = "folder"

    def __init__(self, path: str, options: ReadOptions):
        super().__init__(path, options)
        self.base_dir = os.path.abspath(path)
        self._files: list[str] | None = None

    @property
    def id_key(self) -> str:
        return self.base_dir

    def files(self) -> list[str]:
        if self._files is None:
            found, ignored = [], 0
            for root, dirs, names in os.walk(self.path):
                dirs.sort()
                for name in sorted(names):
                    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
                    if ext in IMAGE_EXTENSIONS:
                        found.append(os.path.relpath(os.path.join(root, name), self.path))
                    elif ext != "txt":
                        ignored += 1
            self._files = found
            self.notes["ignored_non_image_files"] = ignored
        return self._files

    def count_rows(self) -> int | None:
        return len(self.files())

    def hint(self) -> str:
        return f"no image files found (extensions: {', '.join(WDS_IMAGE_EXTENSIONS)}, ...)"

    def fingerprint(self) -> dict:
        files = self.files()
        digest = hashlib.sha256(os.fsencode("\n".join(files))).hexdigest()
        return {
            "path": self.source_text,
            "kind": self.kind,
            "files": len(files),
            "listing_sha256": digest,
        }

    def records(self) -> Iterator[tuple[dict | BadRecord, int | str]]:
        for rel in self.files():
            path = os.path.join(self.base_dir, rel)
            yield image_file_row(path, row_id(self.id_key, rel), self.source_text), f"file {rel}"


def image_file_row(path: str, id_: str, source: str) -> dict:
    """A row for one image file; the caption comes from `<stem>.txt` beside it, if any."""
    sidecar = os.path.splitext(path)[0] + ".txt"
    caption = warning = None
    if os.path.isfile(sidecar):
        with open(sidecar, "rb") as f:
            caption, bad = _utf8(f.read())
        caption = caption.strip()
        warning = f"caption file {bad}" if bad else None
    text = path_text(path)
    row = {"id": id_, "source": source, "image": {"path": text, "bytes": None}, "caption": caption}
    if text.startswith(FILE_URI):
        add_warning(row, "the file name is not UTF-8: its path is kept as a percent-encoded URI")
    if warning:
        add_warning(row, warning)
    return row


class ImageFileSource(Source):
    """One image file given on the command line (or matched by a glob): one row."""

    kind = "image"

    def count_rows(self) -> int | None:
        return 1

    def records(self) -> Iterator[tuple[dict | BadRecord, int | str]]:
        path = os.path.abspath(self.path)
        yield image_file_row(path, row_id(path, 0), self.source_text), "file"


# --- Putting inputs together --------------------------------------------------------------

_GLOB_CHARS = re.compile(r"[*?\[]")


def output_folder_parts(folder: Path) -> list[Path] | None:
    """The row shards of an mmtok output folder, old layout (`manifest.json` at the top) or new
    (`__mmtok__/manifest.json`, see `mmtok.io.layout`); None when `folder` is not one."""
    for manifest in (folder / SIDE_DIR / MANIFEST_FILE, folder / MANIFEST_FILE):
        if manifest.is_file():
            break
    else:
        return None
    try:
        with open(manifest, encoding="utf-8") as f:
            files = json.load(f).get("files", [])
        names = [e["name"] for e in files if e.get("kind") == "rows"]
    except (OSError, ValueError, AttributeError, KeyError, TypeError) as e:
        raise MmtokError(f"{manifest}: not a readable mmtok manifest ({e})") from None
    parts = [folder / name for name in names]
    if missing := [str(p) for p in parts if not p.is_file()]:
        raise MmtokError(f"{folder}: the manifest lists files that are missing: {missing[:3]}")
    return parts


def _source_for(path: str, options: ReadOptions) -> list[Source]:
    p = Path(path)
    if p.is_dir():
        parts = output_folder_parts(p)
        if parts is not None:
            return [ParquetSource(str(part), options) for part in parts]
        return [FolderSource(path, options)]
    if not p.exists():
        raise MmtokError(f"input not found: {path}")
    name = p.name.lower().removesuffix(".gz")
    if name.endswith(".json") and _looks_like_json_document(path):
        return [JsonArraySource(path, options)]
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return [JsonLinesSource(path, options)]
    if name.endswith((".csv", ".tsv")):
        return [CsvSource(path, options)]
    if name.endswith(".parquet"):
        return [ParquetSource(path, options)]
    if name.endswith((".tar", ".tgz", ".tar.gz")) or p.name.lower().endswith(".tar.gz"):
        return [WebDatasetSource(path, options)]
    if name.rsplit(".", 1)[-1] in IMAGE_EXTENSIONS:
        return [ImageFileSource(path, options)]
    raise MmtokError(
        f"cannot tell the format of {path}",
        hint="inputs are .jsonl/.ndjson/.json(.gz), .csv/.tsv, .parquet, .tar WebDataset shards, "
        "image files, a folder of images, an mmtok output folder, or - for JSON Lines on stdin",
    )


@dataclass
class Inputs:
    """All inputs of a run, in order, with the one schema their rows share."""

    paths: list[str]
    options: ReadOptions = field(default_factory=ReadOptions)

    def __post_init__(self):
        if not self.paths:
            raise MmtokError("no input given")
        self.sources: list[Source] = []
        for path in self.paths:
            if path == "-":
                self.sources.append(StdinSource(self.options))
            elif _GLOB_CHARS.search(path) and not os.path.exists(path):
                matches = sorted(glob.glob(path, recursive=True))
                if not matches:
                    raise MmtokError(f"no file matches {path}")
                for match in matches:
                    self.sources.extend(_source_for(match, self.options))
            else:
                self.sources.extend(_source_for(path, self.options))
        self._check_text_col()
        self.schema = self._schema()

    def _check_text_col(self) -> None:
        """A --text-col that no input has is a typo, not a column of nulls. Checked when every
        input has columns of its own (a tar shard's .json members are not known before reading;
        a folder's captions come from .txt files)."""
        text_col = self.options.text_col
        columns = [s.columns() for s in self.sources]
        if text_col == DEFAULT_TEXT_COL or any(c is None for c in columns):
            return
        if not any(text_col in c for c in columns if c is not None):
            seen = sorted({n for c in columns if c is not None for n in c})
            raise MmtokError(
                f"no input has a column {text_col!r} (--text-col); columns: {seen}",
                hint="choose the caption column with --text-col",
            )

    def _schema(self) -> pa.Schema:
        by_name: dict[str, list[pa.Field]] = {}
        for source in self.sources:
            for f in source.passthrough_fields():
                by_name.setdefault(f.name, []).append(f)
        fields = list(BASE_FIELDS)
        for name, seen in by_name.items():
            if name in BASE_NAMES:
                continue
            unified = unify_passthrough(seen)
            nested = [f for f in seen if pa.types.is_nested(f.type) and f.type != unified.type]
            if nested:
                raise MmtokError(
                    f"column {name!r} has incompatible types across inputs: "
                    + ", ".join(sorted({str(f.type) for f in seen}))
                )
            fields.append(unified)
        return pa.schema(fields)

    def count_rows(self) -> int | None:
        counts = [s.count_rows() for s in self.sources]
        return None if any(c is None for c in counts) else sum(counts)

    def batches(self) -> Iterator[SourceBatch]:
        for source in self.sources:
            yield from source.batches(self.schema)

    def fingerprint(self) -> tuple[str, list[dict]]:
        parts = [s.fingerprint() for s in self.sources]
        digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
        return digest, parts

    def notes(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for source in self.sources:
            for k, v in source.notes.items():
                totals[k] = totals.get(k, 0) + v
        return totals

    def problems(self) -> list[str]:
        """After a pass: one line per input that gave no usable row, saying what was probably
        wrong (the format, or the column). Empty when every input gave rows."""
        lines = []
        for source in self.sources:
            stats, name = source.stats, source.display
            if stats.rows + stats.bad_records == 0:
                lines.append(f"{name}: no rows read; {source.hint()}")
            elif stats.rows == 0:
                lines.append(
                    f"{name}: all {stats.bad_records:,} records were rejected as bad_record "
                    f"(first: {stats.first_bad[:200] if stats.first_bad else ''}); "
                    f"{source.hint()}"
                )
            elif stats.rows_without_image == stats.rows and source.kind != "webdataset":
                lines.append(
                    f"{name}: no row has a value in the image column "
                    f"{self.options.image_col!r}; is it the right column (--image-col)?"
                )
            elif stats.rows_without_image == stats.rows:
                lines.append(f"{name}: no sample has an image member; {source.hint()}")
        return lines
