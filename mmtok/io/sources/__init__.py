"""Sources: read JSON Lines, JSON arrays, CSV/TSV, Parquet, WebDataset tars, image folders,
mmtok output folders and stdin as a stream of Arrow batches in the row schema of
`mmtok.io.schema`.

Every source is deterministic: the same input and options give the same batches in the same
order, so a resumed run can skip the batches a killed run already finished.

Dirty data never stops a read: each record becomes a row (text made valid, with a `warning`)
or a `bad_record` reject of stage "read" that says where it was and what was wrong. Clean
batches convert to Arrow in one call; only a batch that fails to convert is looked at row by
row (`base._BatchBuilder.flush`), so the common path pays nothing for the dirty one.

Modules: `base` (options, batch builder, `Source`), `values` (cells: images, captions, ids),
`jsonl`, `tabular` (CSV, Parquet), `webdataset`, `files` (folders, single images); this one
puts the inputs of a run together (`Inputs`).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from mmtok.errors import MmtokError
from mmtok.io.layout import MANIFEST_FILE, SIDE_DIR
from mmtok.io.schema import BASE_FIELDS, BASE_NAMES, unify_passthrough
from mmtok.io.sources.base import DEFAULT_TEXT_COL, READ_STAGE, ReadOptions, Source, SourceBatch
from mmtok.io.sources.files import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    FolderSource,
    ImageFileSource,
    image_file_row,
)
from mmtok.io.sources.jsonl import (
    JsonArraySource,
    JsonLinesSource,
    StdinSource,
    looks_like_json_document,
)
from mmtok.io.sources.spool import STREAM_ENDINGS, is_stream, spool
from mmtok.io.sources.tabular import CsvSource, ParquetSource
from mmtok.io.sources.values import caption_value, image_value, resolve_image_path, row_id
from mmtok.io.sources.webdataset import WDS_IMAGE_EXTENSIONS, WebDatasetSource

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "READ_STAGE",
    "WDS_IMAGE_EXTENSIONS",
    "CsvSource",
    "FolderSource",
    "ImageFileSource",
    "Inputs",
    "JsonArraySource",
    "JsonLinesSource",
    "ParquetSource",
    "ReadOptions",
    "Source",
    "SourceBatch",
    "StdinSource",
    "WebDatasetSource",
    "caption_value",
    "image_file_row",
    "image_value",
    "output_folder_parts",
    "resolve_image_path",
    "row_id",
]

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
    if is_stream(path):
        return [_stream_source(path, options)]
    name = p.name.lower().removesuffix(".gz")
    if name.endswith(".json") and looks_like_json_document(path):
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
    if options.videos and name.rsplit(".", 1)[-1] in VIDEO_EXTENSIONS:
        return [ImageFileSource(path, options)]  # one row, the video's path in `image`
    raise MmtokError(
        f"cannot tell the format of {path}",
        hint="inputs are .jsonl/.ndjson/.json(.gz), .csv/.tsv, .parquet, .tar WebDataset shards, "
        "image files, a folder of images, an mmtok output folder, or - for JSON Lines on stdin",
    )


def _stream_source(path: str, options: ReadOptions) -> Source:
    """A pipe (`<(zcat rows.jsonl.gz)`, a named pipe, /dev/stdin) copied to a temporary file
    and read as the file its name, or its first bytes, say it is (`spool`)."""
    name = os.path.basename(path)
    if "." in name and not name.lower().endswith(STREAM_ENDINGS):
        raise MmtokError(
            f"{path} is a pipe, and its name is not one of a data format",
            hint="pipes carry .jsonl/.ndjson/.json(.gz), .csv/.tsv, .parquet or .tar data; "
            "image and video files are read from disk",
        )
    with open(path, "rb") as stream:
        copy = spool(stream, name)
    try:
        (source,) = _source_for(copy, options)
    except BaseException as e:
        os.unlink(copy)
        if isinstance(e, MmtokError):  # it names the pipe, not its copy
            raise MmtokError(str(e).replace(copy, path), hint=e.hint) from None
        raise
    source.spooled_from(path)
    return source


@dataclass
class Inputs:
    """All inputs of a run, in order, with the one schema their rows share."""

    paths: list[str]
    options: ReadOptions = field(default_factory=ReadOptions)
    workers: int = 1  # processes the schema scan of big JSON Lines files may use

    def __post_init__(self):
        from mmtok.engine.process import block_pandas, is_cli_process

        if is_cli_process():  # before the first conversion of Python values to Arrow
            block_pandas()
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
        if self.workers > 1:
            from mmtok.io.sources.scan_pool import scan_in_parallel

            scan_in_parallel(self.sources, self.workers)
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
        if warned := sum(s.stats.rows_with_warning for s in self.sources):
            totals["rows_with_warning"] = warned
        return totals

    def problems(self) -> list[str]:
        """After a pass: a line per input that gave no usable row, saying what was probably
        wrong (the format, or the column), and per input whose rows needed repairs. Empty when
        every input gave clean rows."""
        lines = []
        for source in self.sources:
            stats, name = source.stats, source.display
            if stats.rows + stats.bad_records == 0 and stats.read_before:
                continue  # read by the run this one resumed: its rows are in the output
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
            if n := stats.rows_with_warning:
                lines.append(
                    f"{name}: {n:,} {'row' if n == 1 else 'rows'} kept with repairs (text that "
                    "was not valid UTF-8, ...): see the `warning` column"
                )
        return lines
