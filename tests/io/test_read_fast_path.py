"""The JSON Lines read's fast path (`JsonLinesSource.batches`: lines a chunk at a time, the
common record made a row in place, paths resolved by folder, ids from a kept hash prefix) gives
the batches of the general rule (`Source.batches` over `records`) on every kind of line, and
each of its pieces answers as the rule it replaces."""

from __future__ import annotations

import gzip
import io
import json
import random

import pyarrow as pa
import pytest

from mmtok.io.sources import Inputs, ReadOptions, row_id
from mmtok.io.sources import jsonl as jsonl_module
from mmtok.io.sources.base import Source
from mmtok.io.sources.jsonl import (
    _BOM,
    JsonLinesSource,
    _decoded_lines,
    _line_chunks,
    _scan_json,
)
from mmtok.io.sources.slices import plan_slices
from mmtok.io.sources.values import PathResolver, resolve_image_path, row_id_prefix, row_ids

# --- lines ---------------------------------------------------------------------------------


def chunked(f, offset, stop):
    """`_line_chunks` as the lines of `_decoded_lines` (the line by line rule it replaces)."""
    for starts, texts, end in _line_chunks(f, offset, stop):
        yield from zip(starts, [*starts[1:], end], texts, strict=True)


class FailingRaw(io.RawIOBase):
    """A seekable file whose reads fail from byte `fail_at` on (a bad disk sector)."""

    def __init__(self, data: bytes, fail_at: int):
        self.data, self.fail_at, self.pos = data, fail_at, 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def seek(self, pos, whence=0):
        self.pos = pos if whence == 0 else (self.pos + pos if whence == 1 else len(self.data))
        return self.pos

    def tell(self):
        return self.pos

    def readinto(self, buf):
        if self.pos >= self.fail_at:
            raise OSError(5, "Input/output error")
        n = min(len(buf), self.fail_at - self.pos, len(self.data) - self.pos)
        buf[:n] = self.data[self.pos : self.pos + n]
        self.pos += n
        return n


def lines_or_error(read, data, start, stop, fail_at=None):
    raw = FailingRaw(data, len(data) + 1 if fail_at is None else fail_at)
    f = io.BufferedReader(raw, buffer_size=16)
    f.seek(start)
    out = []
    try:
        out.extend(read(f, start, stop))
    except OSError as e:
        out.append(("error", str(e)))
    return out


PIECES = [b"a", b"{", b"}", b"\n", b"\r", b"\r\n", _BOM, b"\xe2\x82", b"\xac", b"\xff", b" ",
          b"\x0b", b"\x1c", "é".encode(), b"\n\n", b"\x85", "\u2028".encode()]  # fmt: skip


def test_chunked_lines_are_the_lines_read_one_by_one(monkeypatch):
    rng = random.Random(7)
    for trial in range(4000):
        data = b"".join(rng.choice(PIECES) for _ in range(rng.randint(0, 50)))
        data = _BOM + data if rng.random() < 0.3 else data
        monkeypatch.setattr(jsonl_module, "_CHUNK", rng.choice([1, 2, 5, 1 << 20]))
        start = rng.randint(0, len(data)) if rng.random() < 0.5 else 0
        stop = rng.choice([None, rng.randint(0, len(data) + 2)])
        fail_at = rng.choice([None, None, rng.randint(0, len(data) + 1)])
        expected = lines_or_error(_decoded_lines, data, start, stop, fail_at)
        got = lines_or_error(chunked, data, start, stop, fail_at)
        assert got == expected, (trial, data, start, stop, fail_at)


# --- paths and ids -------------------------------------------------------------------------


def outcome(f, *args):
    try:
        return f(*args)
    except Exception as e:  # the same error is the same answer
        return repr(e)


def test_path_resolver_answers_as_the_full_rule():
    rng = random.Random(3)
    parts = ["a", "b.jpg", ".", "..", "", "~", "~x", "file:", "http://h", ":", "c\udce9", "é",
             " ", ".hidden", "x.", "..y", "\\", "data:", "x" * 40 + ":y", "\ud83d"]  # fmt: skip
    for base in ["/data/in put", "/", "//srv/x", "/a/b/../c", "/caf\udce9", "/x/y/"]:
        resolve = PathResolver(base)
        for _ in range(20_000):
            value = "/".join(rng.choice(parts) for _ in range(rng.randint(0, 5)))
            if rng.random() < 0.3:
                value = "/" * rng.randint(1, 3) + value
            if rng.random() < 0.1:
                value += "/"
            expected = outcome(resolve_image_path, value, base)
            assert outcome(resolve, value) == expected, (base, value)


def test_row_ids_are_row_id():
    for source in ["/data/rows.jsonl", "caf\udce9.jsonl", "x\ud83d", "", "a\0b"]:
        ids = row_ids(source)
        assert [ids(n) for n in range(2000)] == [row_id(source, n) for n in range(2000)]


# --- whole reads ---------------------------------------------------------------------------

KEYS = ["image", "caption", "id", "url", "n", "x", "source", "warning", "source_input", "meta",
        "caption_input", "", "k\ud83d", "k\udce9", "k\ufffd"]  # fmt: skip
PATHS = ["a.jpg", "sub/b.png", "/abs/c.jpg", "../up.jpg", "./d.jpg", "~/h.jpg", "file:///x/y.jpg",
         "http://h/z.jpg", "data:image/png;base64,iVBORw0KGgo=", "DATA:,abc", "data:x", "",
         "dir/", "x/.", "x/..", "caf\udce9.jpg", "a:b.jpg", "é/ü.jpg", "//net/x.jpg",
         "/a/./b.jpg", "file:/caf%E9.jpg", "\ud83d.jpg", "file:/x\udce9.jpg"]  # fmt: skip
VALUES = [0, -1, 1 << 63, -(1 << 63), 1.5, 1e308, True, False, None, [1, "a"], {"k": [None]},
          {"path": "p.jpg"}, {"bytes": "aGVsbG8="}, {"path": 1}, {"path": "q.jpg", "bytes": None},
          "text", "", "x \ud83d y", "caf\udce9", "😀", "1"]  # fmt: skip
ODD_LINES = [b"", b"   ", b"\t", b"[1, 2]", b"3", b'"str"', b"null", b'{"image": "a.jpg"',
             b'{"image": "a.jpg"} {"x": 1}', b'  {"image": "lead.jpg"}', b'{"image": "t.jpg"}  ',
             _BOM + b'{"image": "bom.jpg"}', b'{"image": "a.jpg", "image": "dup.jpg"}',
             b'{"image": "n.jpg", "x": NaN}', b'{"image": "i.jpg", "x": -Infinity}',
             b'{"image": "big.jpg", "n": 1' + b"0" * 5000 + b"}", b"[" * 50_000 + b"]" * 50_000,
             b'{"image": "cr.jpg"}\r{"image": "cr2.jpg"}', b'{"image": "crlf.jpg"}\r',
             b'{"image": "vt.jpg", "caption": "a\x0bb"}', b'{"image": "ctl\x01.jpg"}',
             b'{"image": "raw\xff.jpg", "caption": "\xe9t\xe9"}', b"\x1c",
             b'{"image": "u.jpg", "caption": "\\u2028 \\u0000"}']  # fmt: skip


def record(rng: random.Random) -> dict:
    """A record that is mostly the common shape (image path, caption text) and often not."""
    if rng.random() < 0.6:
        row = {"image": rng.choice(PATHS[:6] + PATHS[17:19]), "caption": rng.choice(["a", "b c"])}
        extra = {"link": "u", "score": rng.random(), "id": rng.choice([7, f"i{rng.random()}"])}
        for key in rng.sample(list(extra), rng.randint(0, 3)):
            row[key] = extra[key]
        return row
    row = {}
    for key in rng.sample(KEYS, rng.randint(1, 6)):
        image = key == "image" and rng.random() < 0.7
        row[key] = rng.choice(PATHS) if image else rng.choice(VALUES)
    return row


def line(rng: random.Random, row: dict) -> bytes:
    if rng.random() < 0.5:
        try:  # raw bytes for surrogate escapes (a name that is not UTF-8), where they encode
            return json.dumps(row, ensure_ascii=False).encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            pass
    return json.dumps(row).encode()


def hostile_file(path, rng: random.Random, n: int) -> None:
    odd = [rng.random() < 0.08 for _ in range(n)]
    out = [rng.choice(ODD_LINES) if o else line(rng, record(rng)) for o in odd]
    ends = [b"\r\n" if rng.random() < 0.05 else b"\n" for _ in out]
    data = b"".join(a + b for a, b in zip(out, ends, strict=True))
    if rng.random() < 0.5:
        data = data.rstrip(b"\n")  # the last line without its line end
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(data)


def as_bytes(table: pa.Table | None) -> bytes | None:
    """A table's IPC bytes: equal tables are equal here, NaN included, nulls' buffers too."""
    if table is None:
        return None
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def batches_of(read) -> list:
    return [(as_bytes(b.rows), as_bytes(b.rejected), b.stats) for b in read]


def same_batches(source: Source, schema: pa.Schema, part) -> bool:
    fast = batches_of(source.batches(schema, part))
    fast_stats = source.stats
    general = batches_of(Source.batches(source, schema, part))
    return fast == general and fast_stats == source.stats


OPTIONS = [
    {},
    {"batch_rows": 7},
    {"batch_rows": 1, "batch_bytes": 1},
    {"id_col": "url"},
    {"image_col": "url", "text_col": "n"},
    {"id_col": "n", "batch_bytes": 0},
]


@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("name", ["rows.jsonl", "rows.jsonl.gz", "cut.jsonl.gz"])
def test_fast_read_gives_the_batches_of_the_general_rule(tmp_path, options, name):
    rng = random.Random(f"{name} {options}")  # a seed of its own per case, the same each run
    path = tmp_path / name
    hostile_file(path, rng, 1500)
    if name.startswith("cut"):  # a download cut short: the rest is one reject
        path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
    inputs = Inputs([str(path)], ReadOptions(**options))
    source = inputs.sources[0]
    assert isinstance(source, JsonLinesSource)
    parts = [None, *plan_slices(inputs, rows=3 * inputs.options.batch_rows)]
    assert len(parts) > 2 or name.endswith(".gz")
    for part in parts:
        assert same_batches(source, inputs.schema, part), part
    # lines appended after the scan: new keys, new types
    with open(path, "ab") as f:
        for _ in range(50):
            f.write(b"\n" + line(rng, {"image": "late.jpg", "new": rng.choice(VALUES), "n": 1.5}))
    if not name.endswith(".gz"):
        assert same_batches(source, inputs.schema, parts[-1])
        assert same_batches(source, inputs.schema, None)


def test_fast_read_of_a_column_that_another_input_types_as_text(tmp_path):
    """`n` is a number in one input and text in another: the schema makes it text, and the
    numbers become their JSON text (the builder's text columns)."""
    rng = random.Random(5)
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps({"image": f"{i}.jpg", "n": i}) + "\n" for i in range(300)))
    hostile_file(b, rng, 600)
    inputs = Inputs([str(a), str(b)], ReadOptions(batch_rows=16))
    assert inputs.schema.field("n").type == pa.string()
    for source in inputs.sources:
        assert same_batches(source, inputs.schema, None)


def test_the_comparison_fails_on_a_wrong_fast_path(tmp_path, monkeypatch):
    """The equivalence above can fail: each piece of the fast path broken in turn is seen.
    (The general rule's paths and ids come from `PathResolver` and `row_ids`: those are
    checked against `resolve_image_path` and `row_id` above.)"""
    rng = random.Random(11)
    path = tmp_path / "rows.jsonl"
    hostile_file(path, rng, 400)
    inputs = Inputs([str(path)], ReadOptions(batch_rows=16))
    source = inputs.sources[0]
    assert same_batches(source, inputs.schema, None)
    plan = JsonLinesSource._plan

    def no_id_column(self, keys, builder):  # the input's own ids left out
        real = plan(self, keys, builder)
        return real and (real[0], False, real[2])

    scan_once = jsonl_module._read_scan

    def lenient(line, index):  # what follows the value not looked at
        return scan_once(line, index)[0], len(line)

    def off_by_one(key):  # the hash of the next row's number
        return row_id_prefix(key + "\0" + "1")

    breaks = [
        (JsonLinesSource, "_plan", no_id_column),
        (jsonl_module, "_read_scan", lenient),
        (jsonl_module, "row_id_prefix", off_by_one),
    ]
    for owner, name, broken in breaks:
        with monkeypatch.context() as m:
            m.setattr(owner, name, broken)
            assert not same_batches(source, inputs.schema, None), name


# --- the scan ------------------------------------------------------------------------------


def scan_one_by_one(source: JsonLinesSource):
    """What the scan found before it read lines a chunk at a time (the code before it): key
    order, each key's kinds, the row count and the slice marks."""
    keys, kinds, count, marks = {}, {}, 0, []
    for lineno, value, offset in source._parsed(parse=_scan_json):
        if count % source.options.batch_rows == 0:
            marks.append((offset, count, lineno - 1))
        count += 1
        if type(value) is dict:
            for k, v in value.items():
                keys.setdefault(k, None)
                kinds.setdefault(k, set()).add(jsonl_module._TYPE_KINDS[type(v)])
    return list(keys), {k: frozenset(v - {"null"}) for k, v in kinds.items()}, count, marks


@pytest.mark.parametrize("seed", range(4))
def test_scan_finds_what_a_scan_line_by_line_finds(tmp_path, seed):
    rng = random.Random(seed)
    path = tmp_path / "rows.jsonl"
    hostile_file(path, rng, 2000)
    source = JsonLinesSource(str(path), ReadOptions(batch_rows=rng.choice([1, 7, 256])))
    source._scan()
    keys, kinds, count, marks = scan_one_by_one(source)
    assert list(source._kinds) == keys and source._kinds == kinds
    assert source._count == count and source._marks == marks
