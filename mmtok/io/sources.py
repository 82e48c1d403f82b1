"""Sources: read JSON Lines, CSV/TSV, Parquet, WebDataset tars, image folders and stdin as a
stream of Arrow batches in the row schema of `mmtok.io.schema`.

Every source is deterministic: the same input and options give the same batches in the same
order, so a resumed run can skip the batches a killed run already finished.
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
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mmtok.errors import MmtokError
from mmtok.io.schema import BASE_FIELDS, BASE_NAMES, make_rejects, unify_passthrough
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
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# WebDataset's rule: the key is everything before the first dot of the file name.
_WDS_KEY = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")


@dataclass(frozen=True)
class ReadOptions:
    image_col: str = "image"
    text_col: str = "caption"
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
    """A stable id for a row without an id column: hash of (source file, row number or key)."""
    return hashlib.blake2b(f"{source}\0{key}".encode(), digest_size=10).hexdigest()


def resolve_image_path(value: str, base_dir: str) -> str:
    """Relative paths resolve against the input file's folder; URLs are kept as given."""
    if value.startswith("file://"):
        return value[len("file://") :]
    if _URI.match(value):
        return value
    return os.path.normpath(os.path.join(base_dir, os.path.expanduser(value)))


class _RecordError(ValueError):
    """A record that cannot become a row (stage "read", reason bad_record)."""


def image_value(value: Any, base_dir: str) -> dict | None:
    """Normalize an image cell (path, data URI, bytes, or {path, bytes}) to the image struct."""
    if value is None:
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        return {"path": None, "bytes": bytes(value)}
    if isinstance(value, str):
        if value == "":
            return None
        if value.startswith("data:"):
            _, _, payload = value.partition(",")
            try:
                return {"path": None, "bytes": base64.b64decode(payload, validate=True)}
            except (binascii.Error, ValueError) as e:
                raise _RecordError(f"image data URI is not valid base64: {e}") from None
        return {"path": resolve_image_path(value, base_dir), "bytes": None}
    if isinstance(value, dict):
        path, data = value.get("path"), value.get("bytes")
        if isinstance(data, str):
            try:
                data = base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError) as e:
                raise _RecordError(f"image bytes are not valid base64: {e}") from None
        if data is None and not path:
            return None
        return {"path": resolve_image_path(path, base_dir) if path else None, "bytes": data}
    raise _RecordError(f"image value of type {type(value).__name__} is neither a path nor bytes")


def caption_value(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False) if isinstance(value, list | dict) else str(value)


@dataclass
class BadRecord:
    """A record that cannot become a row: it becomes a `bad_record` reject of stage "read"."""

    row: dict  # what is known of it: at least id and source
    message: str


class _BatchBuilder:
    """Accumulates rows and read rejects as Python values; emits conformed Arrow batches."""

    def __init__(self, schema: pa.Schema, options: ReadOptions):
        self.schema, self.options = schema, options
        # Passthrough columns that inputs disagree on are text: other values become JSON text.
        self.text_columns = [
            f.name for f in schema if f.type == pa.string() and f.name not in BASE_NAMES
        ]
        self.rows: list[dict] = []
        self.bad: list[tuple[dict, str]] = []
        self.image_bytes = 0

    def add(self, row: dict) -> SourceBatch | None:
        for name in self.text_columns:
            value = row.get(name)
            if value is not None and not isinstance(value, str):
                row[name] = caption_value(value)
        self.rows.append(row)
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
        rows = pa.Table.from_pylist(self.rows, schema=self.schema)  # missing keys become nulls
        rejected = None
        if self.bad:
            bad_rows = pa.Table.from_pylist([r for r, _ in self.bad], schema=self.schema)
            rejected = make_rejects(
                bad_rows,
                READ_STAGE,
                [Reason.BAD_RECORD.value] * len(self.bad),
                [m for _, m in self.bad],
            )
        self.rows, self.bad, self.image_bytes = [], [], 0
        return SourceBatch(rows, rejected)


class Source:
    """One input: a file or folder. Subclasses read it row by row or batch by batch."""

    kind = "?"

    def __init__(self, path: str, options: ReadOptions, display: str | None = None):
        self.path = path
        self.display = display or path
        self.options = options
        self.base_dir = os.path.dirname(os.path.abspath(path))
        self.notes: dict[str, int] = {}
        self._output_names: dict[str, str | None] = {}

    @property
    def id_key(self) -> str:
        """What row ids hash: the absolute path, so the same file gives the same ids."""
        return os.path.abspath(self.path) if self.display == self.path else self.display

    def passthrough_fields(self) -> list[pa.Field]:
        return []

    def count_rows(self) -> int | None:
        return None

    def records(self) -> Iterator[dict | BadRecord]:
        """Rows in the output schema as dicts, or `BadRecord`s, in input order."""
        raise NotImplementedError

    def batches(self, schema: pa.Schema) -> Iterator[SourceBatch]:
        builder = _BatchBuilder(schema, self.options)
        for record in self.records():
            if isinstance(record, BadRecord):
                batch = builder.reject(record.row, record.message)
            else:
                batch = builder.add(record)
            if batch:
                yield batch
        if batch := builder.flush():
            yield batch

    def fingerprint(self) -> dict:
        st = os.stat(self.path)
        return {
            "path": self.display,
            "kind": self.kind,
            "bytes": st.st_size,
            "mtime_ns": st.st_mtime_ns,
        }

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

    def _bad(self, key: str | int, message: str, **known) -> BadRecord:
        return BadRecord({"id": row_id(self.id_key, key), "source": self.display, **known}, message)

    def _passthrough_name(self, name: str) -> str | None:
        """Output name of an input column, or None when it is one of the role columns.

        Called for every column of every row, so each name is worked out once per source.
        """
        out = self._output_names.get(name, ...)
        if out is ...:
            if name in (self.options.image_col, self.options.text_col, self._id_col):
                out = None
            elif name in ("id", "image", "caption"):
                out = f"{name}_input"  # a reserved name used for something else in this input
            else:
                out = name
            self._output_names[name] = out
        return out

    def _row(self, record: dict, rowno: int) -> dict:
        """A row dict in the output schema from one input record (a dict of column values)."""
        raw_id = record.get(self._id_col) if self._id_col else None
        row = {
            "id": str(raw_id) if raw_id is not None else row_id(self.id_key, rowno),
            "source": self.display,
            "image": image_value(record.get(self.options.image_col), self.base_dir),
            "caption": caption_value(record.get(self.options.text_col)),
        }
        for name, value in record.items():
            out = self._passthrough_name(name)
            if out is not None:
                row[out] = value
        if isinstance(record.get("source"), str):
            row["source"] = record["source"]  # keep lineage from an earlier mmtok run
        return row


# --- JSON Lines ---------------------------------------------------------------------------


def _open_text(path: str) -> io.TextIOBase:
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="replace", newline="")
    return open(path, encoding="utf-8", errors="replace", newline="")  # noqa: SIM115


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
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


class JsonLinesSource(Source):
    kind = "jsonl"

    def _scan(self) -> None:
        """One pass over the file: passthrough column types (JSON has no schema) and row count."""
        if hasattr(self, "_fields"):
            return
        kinds: dict[str, set[str]] = {}
        names: set[str] = set()
        count = 0
        with _open_text(self.path) as f:
            for line in f:
                if not line.strip():
                    continue
                count += 1
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(record, dict):
                    continue
                names.update(record)
                for key, value in record.items():
                    kinds.setdefault(key, set()).add(_json_kind(value))
        if names:  # a column no row has is a typo in a flag, not a property of every row
            self._require_image_col(sorted(names))
        self._id_col = self._find_id_col(sorted(names)) if names else self.options.id_col
        self._kinds = {k: frozenset(v - {"null"}) for k, v in kinds.items()}
        self._fields = []
        for key in kinds:
            out = self._passthrough_name(key)
            if out is not None:
                self._fields.append(pa.field(out, _KIND_TYPES.get(self._kinds[key], pa.string())))
        self._count = count

    def passthrough_fields(self) -> list[pa.Field]:
        self._scan()
        return self._fields

    def count_rows(self) -> int | None:
        self._scan()
        return self._count

    def _coerce(self, record: dict) -> dict:
        # Columns with mixed JSON types become strings holding the JSON text: nothing is lost.
        for key, value in record.items():
            if value is None or isinstance(value, str) or self._passthrough_name(key) is None:
                continue
            if self._kinds.get(key) not in _KIND_TYPES:
                record[key] = json.dumps(value, ensure_ascii=False)
        return record

    def records(self) -> Iterator[dict | BadRecord]:
        self._scan()
        rowno = 0
        with _open_text(self.path) as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    if not isinstance(record, dict):
                        raise _RecordError(f"a JSON {type(record).__name__}, not an object")
                    yield self._row(self._coerce(record), rowno)
                except (ValueError, _RecordError) as e:
                    yield self._bad(rowno, f"line {lineno}: {e}; text: {line.strip()[:500]}")
                rowno += 1


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


class CsvSource(Source):
    kind = "csv"

    def __init__(self, path: str, options: ReadOptions):
        super().__init__(path, options)
        self.delimiter = "\t" if ".tsv" in path.lower() else ","
        with _open_text(self.path) as f:
            header = next(csv.reader(f, delimiter=self.delimiter), None)
        if not header:
            raise MmtokError(f"{path}: empty CSV file (no header line)")
        self.header = header
        self._id_col = self._find_id_col(header)
        self._require_image_col(header)

    def passthrough_fields(self) -> list[pa.Field]:
        names = [self._passthrough_name(n) for n in self.header]
        return [pa.field(n, pa.string()) for n in names if n is not None]

    def count_rows(self) -> int | None:
        with _open_text(self.path) as f:
            return sum(1 for _ in csv.reader(f, delimiter=self.delimiter)) - 1

    def records(self) -> Iterator[dict | BadRecord]:
        with _open_text(self.path) as f:
            reader = csv.reader(f, delimiter=self.delimiter)
            next(reader)
            for rowno, values in enumerate(reader):
                try:
                    if len(values) != len(self.header):
                        raise _RecordError(
                            f"{len(values)} fields, the header has {len(self.header)}"
                        )
                    yield self._row(dict(zip(self.header, values, strict=True)), rowno)
                except _RecordError as e:
                    text = self.delimiter.join(values)[:500]
                    yield self._bad(rowno, f"line {reader.line_num}: {e}; text: {text}")


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
        self._require_image_col(names)

    def passthrough_fields(self) -> list[pa.Field]:
        fields = []
        for f in self.file.schema_arrow:
            name = self._passthrough_name(f.name)
            if name is not None and name != "source":
                fields.append(pa.field(name, f.type))
        return fields

    def count_rows(self) -> int | None:
        return self.file.metadata.num_rows

    def records(self) -> Iterator[dict | BadRecord]:
        rowno = 0
        try:
            for record_batch in self.file.iter_batches(batch_size=self.options.batch_rows):
                for record in record_batch.to_pylist():
                    try:
                        yield self._row(record, rowno)
                    except _RecordError as e:
                        yield self._bad(rowno, f"row {rowno}: {e}")
                    rowno += 1
        except (OSError, pa.ArrowException) as e:
            message = f"cannot read Parquet file {self.path} after row {rowno}: {e}"
            raise MmtokError(message) from None


# --- WebDataset ---------------------------------------------------------------------------


class WebDatasetSource(Source):
    """A WebDataset tar shard: members grouped by key; `<key>.jpg|png|webp` + `.txt` or `.json`."""

    kind = "webdataset"

    def passthrough_fields(self) -> list[pa.Field]:
        return [pa.field("key", pa.string()), pa.field("json", pa.string())]

    def _row(self, key: str, members: dict[str, bytes]) -> dict:
        image_ext = next((e for e in WDS_IMAGE_EXTENSIONS if e in members), None)
        meta_text = members["json"].decode("utf-8", errors="replace") if "json" in members else None
        caption = members["txt"].decode("utf-8", errors="replace") if "txt" in members else None
        if caption is None and meta_text is not None:
            try:
                meta = json.loads(meta_text)
            except ValueError as e:
                raise _RecordError(f"{key}.json is not valid JSON: {e}") from None
            if isinstance(meta, dict):
                caption = caption_value(meta.get(self.options.text_col))
        return {
            "id": row_id(self.id_key, key),
            "source": self.display,
            "image": {"path": None, "bytes": members[image_ext]} if image_ext else None,
            "caption": caption,
            "key": key,
            "json": meta_text,
        }

    def _samples(self) -> Iterator[tuple[str, dict[str, bytes]]]:
        key, members = None, {}
        with tarfile.open(self.path, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                match = _WDS_KEY.match(member.name)
                if not match:
                    continue
                member_key, ext = match.group(1), match.group(2).lower()
                if member_key != key and key is not None:
                    yield key, members
                    members = {}
                key = member_key
                members[ext] = tar.extractfile(member).read()
        if key is not None:
            yield key, members

    def records(self) -> Iterator[dict | BadRecord]:
        samples = self._samples()
        index = 0
        while True:
            try:
                key, members = next(samples)
            except StopIteration:
                return
            except (tarfile.TarError, EOFError, OSError) as e:
                # A truncated shard (an interrupted download): keep what came before, say where.
                yield self._bad(
                    f"#truncated-after-{index}", f"tar shard unreadable after sample {index}: {e}"
                )
                return
            try:
                yield self._row(key, members)
            except _RecordError as e:
                yield self._bad(key, str(e), key=key)
            index += 1


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

    def fingerprint(self) -> dict:
        files = self.files()
        digest = hashlib.sha256("\n".join(files).encode()).hexdigest()
        return {
            "path": self.display,
            "kind": self.kind,
            "files": len(files),
            "listing_sha256": digest,
        }

    def records(self) -> Iterator[dict | BadRecord]:
        for rel in self.files():
            yield image_file_row(
                os.path.join(self.base_dir, rel), row_id(self.id_key, rel), self.display
            )


def image_file_row(path: str, id_: str, source: str) -> dict:
    """A row for one image file; the caption comes from `<stem>.txt` beside it, if any."""
    sidecar = os.path.splitext(path)[0] + ".txt"
    caption = None
    if os.path.isfile(sidecar):
        with open(sidecar, encoding="utf-8", errors="replace") as f:
            caption = f.read().strip()
    return {"id": id_, "source": source, "image": {"path": path, "bytes": None}, "caption": caption}


class ImageFileSource(Source):
    """One image file given on the command line (or matched by a glob): one row."""

    kind = "image"

    def count_rows(self) -> int | None:
        return 1

    def records(self) -> Iterator[dict | BadRecord]:
        path = os.path.abspath(self.path)
        yield image_file_row(path, row_id(path, 0), self.display)


# --- Putting inputs together --------------------------------------------------------------

_GLOB_CHARS = re.compile(r"[*?\[]")


def _source_for(path: str, options: ReadOptions) -> list[Source]:
    p = Path(path)
    if p.is_dir():
        manifest = p / "__mmtok__" / "manifest.json"  # the new layout (mmtok.io.layout)
        if not manifest.exists():
            manifest = p / "manifest.json"
        if manifest.exists():
            with open(manifest) as f:
                names = [
                    e["name"] for e in json.load(f).get("files", []) if e.get("kind") == "rows"
                ]
            return [ParquetSource(str(p / n), options) for n in names]
        return [FolderSource(path, options)]
    if not p.exists():
        raise MmtokError(f"input not found: {path}")
    name = p.name.lower().removesuffix(".gz")
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
        self.schema = self._schema()

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
