"""The row schema every source produces and every sink writes.

Rows: `id`, `source` (input file the row came from), `image` (path or encoded bytes, the
Hugging Face `Image` layout), `caption`, `warning` (null, or what reading had to repair in the
row: text that was not valid UTF-8, a file name kept as a `file:` URI, ...), then the input's
other columns (passthrough), then the columns that stages add. Rejects: the same row columns
plus `stage`, `reason`, `message`.
"""

from __future__ import annotations

import pyarrow as pa

IMAGE_TYPE = pa.struct([("path", pa.string()), ("bytes", pa.large_binary())])

BASE_FIELDS = [
    pa.field("id", pa.string(), nullable=False),
    pa.field("source", pa.string()),
    pa.field("image", IMAGE_TYPE),
    pa.field("caption", pa.string()),
    pa.field("warning", pa.string()),
]
BASE_NAMES = tuple(f.name for f in BASE_FIELDS)
# Base columns an input may carry from an earlier mmtok run; kept when they hold text.
LINEAGE_NAMES = ("source", "warning")

REJECT_FIELDS = [
    pa.field("stage", pa.string()),
    pa.field("reason", pa.string()),
    pa.field("message", pa.string()),
]
REJECT_NAMES = tuple(f.name for f in REJECT_FIELDS)


def with_fields(schema: pa.Schema, fields: list[pa.Field]) -> pa.Schema:
    """`schema` with `fields` appended; a field of the same name is replaced in place."""
    for field in fields:
        index = schema.get_field_index(field.name)
        schema = schema.set(index, field) if index >= 0 else schema.append(field)
    return schema


def reject_schema(row_schema: pa.Schema) -> pa.Schema:
    return with_fields(row_schema, REJECT_FIELDS)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Select and cast `table` to `schema`, filling columns it lacks with nulls.

    When a name appears more than once (a stage appended a column that the input already had,
    e.g. an mmtok output read again), the last one wins: it is the newest value."""
    last = {name: i for i, name in enumerate(table.column_names)}
    columns = []
    for field in schema:
        if field.name in last:
            column = table.column(last[field.name])
            # a cast to the same type still goes through the compute kernels: ~10 us a column
            columns.append(column if column.type == field.type else column.cast(field.type))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def make_rejects(rows: pa.Table, stage: str, reasons: list[str], messages: list[str]) -> pa.Table:
    """Rejected rows: the rows' own columns plus stage, reason and message."""
    extra = {
        "stage": pa.array([stage] * rows.num_rows, pa.string()),
        "reason": pa.array(reasons, pa.string()),
        "message": pa.array(messages, pa.string()),
    }
    for name, values in extra.items():
        index = rows.schema.get_field_index(name)
        rows = (
            rows.set_column(index, name, values) if index >= 0 else rows.append_column(name, values)
        )
    return rows


def unify_passthrough(fields: list[pa.Field]) -> pa.Field:
    """One field for a passthrough column seen with several types across inputs."""
    types = {f.type for f in fields}
    if len(types) == 1:
        return fields[0]
    if all(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_null(t) for t in types):
        return pa.field(fields[0].name, pa.float64())
    non_null = {t for t in types if not pa.types.is_null(t)}
    if len(non_null) == 1:
        return pa.field(fields[0].name, non_null.pop())
    return pa.field(fields[0].name, pa.string())
