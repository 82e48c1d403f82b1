"""CSV/TSV and Parquet files: inputs with a header of column names."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import IO

import pyarrow as pa

from mmtok.errors import MmtokError
from mmtok.io.encoding import is_valid_text, valid_text
from mmtok.io.sources.base import BadRecord, ReadOptions, Slice, Source, byte_slices
from mmtok.io.sources.jsonl import _decoded_lines, open_binary
from mmtok.io.sources.values import MESSAGE_TEXT, READ_ERRORS, RecordError

# A CSV field may be a long caption; far beyond this it is an unclosed quote eating the file.
_CSV_FIELD_LIMIT = 1 << 30


def _csv_rows(
    f: IO[bytes], delimiter: str, start: int = 0, stop: int | None = None, first_line: int = 0
) -> Iterator[tuple[int, list[str] | str, int]]:
    """(line number, fields, byte offset where the record starts) per record from `start` to
    `stop`, or (line number, error, offset) for one the parser refuses; the parser goes on
    after an error, and stops after one for a file it cannot read on."""
    csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
    end = start  # where the lines consumed so far end: the next record starts there

    def lines() -> Iterator[str]:
        nonlocal end
        for _, after, text in _decoded_lines(f, start, None):
            end = after
            yield text

    if start:
        f.seek(start)
    reader = csv.reader(lines(), delimiter=delimiter)
    while True:
        if stop is not None and end >= stop:
            return
        at = end
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            yield first_line + reader.line_num, f"CSV error: {e}", at
            continue
        except READ_ERRORS as e:
            line = first_line + reader.line_num
            message = f"the file cannot be read after line {line} ({e}); the rest is unread"
            yield line + 1, message, at
            return
        yield first_line + reader.line_num, values, at


class CsvSource(Source):
    kind = "csv"
    unit = "line"

    def __init__(self, path: str, options: ReadOptions):
        super().__init__(path, options)
        self.delimiter = "\t" if ".tsv" in path.lower() else ","
        with open_binary(self.path) as f:
            header = next(_csv_rows(f, self.delimiter), (0, None))[1]
        if not header or isinstance(header, str):
            raise MmtokError(f"{path}: no CSV header line" + (f" ({header})" if header else ""))
        self.header = [valid_text(h) for h in header]
        self._id_col = self._find_id_col(self.header)
        self._set_lineage({n: True for n in self.header})
        self._require_image_col(self.header)
        self._count: int | None = None
        self._marks: list[tuple[int, int, int]] = []  # (byte offset, row number, lines before)

    def passthrough_fields(self) -> list[pa.Field]:
        names = [self._passthrough_name(n) for n in self.header]
        return [pa.field(n, pa.string()) for n in names if n is not None]

    def columns(self) -> list[str] | None:
        return self.header

    def _scan(self) -> None:
        """Count the records, noting where every `batch_rows`-th one starts."""
        if self._count is not None:
            return
        count, marks, line, unreadable = -1, [], 0, False
        with open_binary(self.path) as f:
            for lineno, values, offset in _csv_rows(f, self.delimiter):
                if count >= 0 and count % self.options.batch_rows == 0:
                    marks.append((offset, count, line))
                count += 1
                line = lineno
                unreadable = unreadable or (isinstance(values, str) and "unread" in values)
        self._count = count
        self._marks = [] if unreadable or self.path.endswith(".gz") else marks

    def count_rows(self) -> int | None:
        self._scan()
        return self._count

    def slices(self, index: int, rows: int) -> list[Slice]:
        """Byte ranges of about `rows` records, cut where a record starts (a quoted field may
        hold line breaks: the cuts come from the parser, not from the lines)."""
        self._scan()
        return byte_slices(index, self.path, self._marks, rows // self.options.batch_rows)

    def hint(self) -> str:
        return "is it comma-separated (.csv) or tab-separated (.tsv) with a header line?"

    def records(self, part: Slice | None = None) -> Iterator[tuple[dict | BadRecord, int | str]]:
        ranged = part is not None and part.kind == "bytes"
        with open_binary(self.path) as f:
            if ranged:
                rows = _csv_rows(f, self.delimiter, part.start, part.stop, part.first_line)
                first = part.first_row
            else:
                rows = _csv_rows(f, self.delimiter)
                next(rows)
                first = 0
            for rowno, (lineno, values, _) in enumerate(rows, start=first):
                where = lineno
                if isinstance(values, str):
                    yield self._bad(rowno, values), where
                    continue
                if len(values) != len(self.header):
                    text = valid_text(self.delimiter.join(values))[:MESSAGE_TEXT]
                    message = f"{len(values)} fields, the header has {len(self.header)}"
                    yield self._bad(rowno, f"{message}; text: {text}"), where
                    continue
                record = dict(zip(self.header, values, strict=True))
                try:
                    yield self._row(record, rowno), where
                except RecordError as e:
                    yield self._bad_row(record, rowno, str(e)), where


# --- Parquet ------------------------------------------------------------------------------


def _parquet_file(path: str):
    """`pq.ParquetFile` of `path`; a name that is not UTF-8 (which pyarrow cannot take as
    text) is opened here and read through the file object."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(path if is_valid_text(path) else open(path, "rb"))  # noqa: SIM115


class ParquetSource(Source):
    kind = "parquet"

    def __init__(self, path: str, options: ReadOptions):

        super().__init__(path, options)
        try:
            self.file = _parquet_file(path)
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

    def __getstate__(self) -> dict:
        return {k: v for k, v in super().__getstate__().items() if k != "file"}  # reopened

    def __setstate__(self, state: dict) -> None:

        super().__setstate__(state)
        self.file = _parquet_file(self.path)

    def slices(self, index: int, rows: int) -> list[Slice]:
        """Ranges of whole row groups of about `rows` rows (at least one group each)."""
        meta = self.file.metadata
        out, start, first, size, row = [], 0, 0, 0, 0
        for group in range(self.file.num_row_groups):
            size += meta.row_group(group).num_rows
            row += meta.row_group(group).num_rows
            if size >= rows:
                out.append(Slice(index, self.path, "row_groups", start, group + 1, first))
                start, first, size = group + 1, row, 0
        if start < self.file.num_row_groups or not out:
            out.append(Slice(index, self.path, "row_groups", start, None, first))
        return out

    def records(self, part: Slice | None = None) -> Iterator[tuple[dict | BadRecord, int | str]]:
        """Row group by row group, so a damaged one is one reject and the others are read."""
        groups = range(self.file.num_row_groups)
        start = 0
        if part is not None and part.kind == "row_groups":
            groups = groups[part.start : part.stop]
            start = part.first_row
        for group in groups:
            rowno = start
            try:
                batches = self.file.iter_batches(
                    batch_size=self.options.batch_rows, row_groups=[group]
                )
                for record_batch in batches:
                    for record in record_batch.to_pylist():
                        try:
                            yield self._row(record, rowno), rowno
                        except RecordError as e:
                            yield self._bad_row(record, rowno, str(e)), rowno
                        rowno += 1
            except (OSError, pa.ArrowException) as e:
                end = start + self.file.metadata.row_group(group).num_rows
                message = (
                    f"row group {group} cannot be read after row {rowno} ({e}); "
                    f"its rows {rowno} to {end - 1} are unread"
                )
                yield self._bad(f"#unreadable@{rowno}", message), rowno
            start += self.file.metadata.row_group(group).num_rows
