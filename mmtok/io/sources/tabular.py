"""CSV/TSV and Parquet files: inputs with a header of column names."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from mmtok.errors import MmtokError
from mmtok.io.encoding import valid_text
from mmtok.io.sources.base import BadRecord, ReadOptions, Source
from mmtok.io.sources.jsonl import open_text
from mmtok.io.sources.values import MESSAGE_TEXT, READ_ERRORS, RecordError

# A CSV field may be a long caption; far beyond this it is an unclosed quote eating the file.
_CSV_FIELD_LIMIT = 1 << 30


def _csv_rows(f: io.TextIOBase, delimiter: str) -> Iterator[tuple[int, list[str] | str]]:
    """(line number, fields) per record, or (line number, error) for one the parser refuses;
    the parser goes on after an error, and stops after one for a file it cannot read on."""
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
        except READ_ERRORS as e:
            line = reader.line_num
            yield line + 1, f"the file cannot be read after line {line} ({e}); the rest is unread"
            return
        yield reader.line_num, values


class CsvSource(Source):
    kind = "csv"
    unit = "line"

    def __init__(self, path: str, options: ReadOptions):
        super().__init__(path, options)
        self.delimiter = "\t" if ".tsv" in path.lower() else ","
        with open_text(self.path) as f:
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
        with open_text(self.path) as f:
            return sum(1 for _ in _csv_rows(f, self.delimiter)) - 1

    def hint(self) -> str:
        return "is it comma-separated (.csv) or tab-separated (.tsv) with a header line?"

    def records(self) -> Iterator[tuple[dict | BadRecord, int | str]]:
        with open_text(self.path) as f:
            rows = _csv_rows(f, self.delimiter)
            next(rows)
            for rowno, (lineno, values) in enumerate(rows):
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
        """Row group by row group, so a damaged one is one reject and the others are read."""
        start = 0
        for group in range(self.file.num_row_groups):
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
