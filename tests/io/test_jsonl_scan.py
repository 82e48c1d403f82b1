"""The JSON Lines scan (column kinds from every record) types columns as a per-value reading
of every line with `json.loads` does, also when a kind shows only late in the file."""

from __future__ import annotations

import json

import pyarrow as pa

from mmtok.io.sources.base import ReadOptions
from mmtok.io.sources.jsonl import JsonArraySource, JsonLinesSource


def reference_kinds(lines: list[str]) -> dict[str, set[str]]:
    """The kinds of each key's values, one `json.loads` and one look per value."""

    def kind(v) -> str:
        if v is None:
            return "null"
        if isinstance(v, bool):
            return "bool"
        if isinstance(v, int):
            return "int" if -(1 << 63) <= v < 1 << 63 else "bigint"
        return {float: "float", str: "str"}.get(type(v), "json")

    kinds: dict[str, set[str]] = {}
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            for k, v in record.items():
                kinds.setdefault(k, set()).add(kind(v))
    return kinds


def test_late_kinds_and_odd_records_type_columns_as_a_full_read(tmp_path):
    lines = [json.dumps({"image": f"{i}.jpg", "n": i, "x": i / 2, "flag": i % 2 == 0,
                         "tag": None}) for i in range(3000)]  # fmt: skip
    lines += [
        json.dumps({"image": "a.jpg", "n": 1 << 63, "tag": "late text"}),  # a bigint, late
        json.dumps({"x": 3, "image": "b.jpg", "flag": 1, "meta": {"a": [1, 2]}}),  # new key
        "[1, 2]",  # not an object
        '{"image": "c.jpg", "broken": ',  # not JSON
        "",
        json.dumps({"image": "d.jpg", "n": -(1 << 63), "list": [1]}),
        json.dumps({"image": "e.jpg", "deep": 1e308, "n": True}),
        '  \t{"image": "f.jpg", "pad": 1}  ',  # JSON whitespace around a record
        '{"image": "g.jpg"} {"extra": 1}',  # two values on a line: not a record
    ]
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(lines) + "\n")
    source = JsonLinesSource(str(path), ReadOptions(batch_rows=256))
    source._scan()
    expected = reference_kinds(lines)
    assert list(source._kinds) == list(expected)  # first-appearance order: the column order
    assert {k: set(v) for k, v in source._kinds.items()} == {
        k: v - {"null"} for k, v in expected.items()
    }
    types = {f.name: f.type for f in source.passthrough_fields()}
    assert types["x"] == pa.float64() and types["tag"] == pa.string()
    assert types["n"] == pa.string()  # int, bigint and bool: JSON text
    assert "extra" not in source._kinds and source._kinds["pad"] == {"int"}
    assert source.count_rows() == 3000 + 8
    assert [m[1] for m in source._marks] == list(range(0, 3008, 256))

    array = tmp_path / "rows.json"
    array.write_text(json.dumps([{"image": "a.jpg", "n": 1 << 64}, {"image": "b.jpg", "n": 2}]))
    source = JsonArraySource(str(array), ReadOptions())
    source._scan()
    assert source._kinds["n"] == {"int", "bigint"}
