"""The schema scan of big JSON Lines files in parts (`mmtok.io.sources.scan_pool`): what the
parts find, added up in file order, is what one pass over the file finds (keys in order, their
types, the row count and every slice mark), on hostile files cut anywhere a line ends; the
pool really scans in other processes; a broken merge is caught; and a command's output is the
same whether its input was scanned in parts or in one pass."""

from __future__ import annotations

import gzip
import json
import random
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from mmtok.io.sources import Inputs, ReadOptions, scan_pool
from mmtok.io.sources.jsonl import JsonLinesSource, ScanTotals
from mmtok.io.sources.slices import plan_slices
from tests.conftest import same_parquet
from tests.io.test_read_fast_path import hostile_file


def scanned_state(source: JsonLinesSource) -> dict:
    """Everything the scan left on `source` (the object's whole state)."""
    return dict(vars(source))


def scan_in_parts(path: str, options: ReadOptions, every: int) -> JsonLinesSource:
    """`path` scanned as the pool scans it, in this process: cut after line ends about
    `every` bytes apart, each part on its own, added in order."""
    source = JsonLinesSource(path, options)
    cuts = scan_pool.line_cuts(path, every)
    totals = ScanTotals(options.batch_rows)
    for start, stop in zip(cuts, [*cuts[1:], None], strict=True):
        totals.add(source.scan_part(start, stop, every=1))
    source.use_scan(totals)
    return source


def one_pass(path: str, options: ReadOptions) -> JsonLinesSource:
    source = JsonLinesSource(path, options)
    source._scan()
    return source


@pytest.mark.parametrize("seed", range(12))
def test_parts_add_up_to_one_pass(tmp_path, seed):
    rng = random.Random(seed)
    path = str(tmp_path / "rows.jsonl")
    hostile_file(path, rng, 1500)
    options = ReadOptions(batch_rows=rng.choice([1, 2, 7, 256]))
    every = rng.choice([1, 40, 333, 4096, 60_000])
    parts = scan_in_parts(path, options, every)
    assert len(scan_pool.line_cuts(path, every)) > 1
    assert scanned_state(parts) == scanned_state(one_pass(path, options))


def test_cuts_fall_just_after_a_line_feed(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"a": 1}\r\n\r{"a": 2}\n' * 300 + b"x" * 100_000 + b"\nlast")
    cuts = scan_pool.line_cuts(str(path), 7)
    data = path.read_bytes()
    assert cuts[0] == 0 and all(data[c - 1 : c] == b"\n" for c in cuts[1:])
    assert cuts == sorted(set(cuts)) and len(cuts) > 250
    assert max(b - a for a, b in zip(cuts, cuts[1:], strict=False)) > 100_000  # a long line whole


BROKEN = {
    # the lines before each part forgotten: marks name the wrong lines after blank lines
    "lines": lambda totals, part: setattr(part, "lines", 0),
    # keys of a later part first: the columns come out in another order
    "order": lambda totals, part: setattr(totals, "keys", {**part.keys, **totals.keys}),
}


@pytest.mark.parametrize("name", BROKEN)
def test_a_broken_merge_is_caught(tmp_path, monkeypatch, name):
    real_add = ScanTotals.add

    def broken(self, part):
        BROKEN[name](self, part)
        real_add(self, part)

    caught = 0
    for seed in range(6):
        rng = random.Random(seed)
        path = str(tmp_path / f"rows{seed}.jsonl")
        hostile_file(path, rng, 1500)
        options = ReadOptions(batch_rows=7)
        monkeypatch.setattr(ScanTotals, "add", broken)
        parts = scan_in_parts(path, options, 300)
        monkeypatch.setattr(ScanTotals, "add", real_add)
        caught += scanned_state(parts) != scanned_state(one_pass(path, options))
    assert caught >= 3


def test_the_pool_scans_in_other_processes(tmp_path, monkeypatch):
    rng = random.Random(7)
    paths = []
    for name in ["a.jsonl", "b.jsonl.gz", "cut.jsonl.gz", "c.jsonl"]:
        path = tmp_path / name
        hostile_file(path, rng, 1200)
        if name.startswith("cut"):  # unreadable after 2/3: scanned again in one pass
            path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
        paths.append(str(path))
    options = ReadOptions(batch_rows=7)
    alone = Inputs(paths, options)
    monkeypatch.setattr(scan_pool, "SCAN_PART_BYTES", 2000)
    monkeypatch.setattr(scan_pool, "PARALLEL_SCAN_BYTES", 0)

    def not_here(self, start=0, stop=None, every=1):
        if not self.path.endswith("cut.jsonl.gz"):  # the one scanned again here
            raise AssertionError(f"{self.path} was scanned in the main process")
        return real(self, start, stop, every)

    real = JsonLinesSource.scan_part
    monkeypatch.setattr(JsonLinesSource, "scan_part", not_here)  # the pool's processes are
    pooled = Inputs(paths, options, workers=2)  # forked from a server: they have the real one
    assert pooled.schema == alone.schema
    assert plan_slices(pooled) == plan_slices(alone)
    for a, b in zip(pooled.sources, alone.sources, strict=True):
        a_state, b_state = scanned_state(a), scanned_state(b)
        assert a_state == b_state, a.path


def test_small_inputs_are_scanned_in_this_process(tmp_path, monkeypatch):
    path = tmp_path / "rows.jsonl"
    hostile_file(path, random.Random(1), 500)
    monkeypatch.setattr(scan_pool, "_scanned", None)  # a pool here would fail
    inputs = Inputs([str(path)], ReadOptions(), workers=8)
    assert inputs.sources[0].count_rows() > 0


def test_a_command_writes_the_same_shards_from_a_scan_in_parts(tmp_path, image_files):
    """Over `PARALLEL_SCAN_BYTES` the CLI scans in parts with 2 workers and in one pass with
    1; the shards (ids, row order, passthrough types, row groups) are the same."""
    rng = random.Random(3)
    rows = []
    for i in range(9_000):  # ~1 KB a row: past the 8 MiB where the pool starts
        row = {
            "image": str(image_files["tiny_1x1.png"]),
            "caption": "x" * rng.randint(900, 1100),
            "n": i,
        }
        if i % 997 == 0:
            row["late"] = rng.choice([1, 2.5, "text"])  # a column and types only a part sees
        rows.append(json.dumps(row))
    data = "\n".join(rows).encode() + b"\n\n"
    path = tmp_path / "big.jsonl"
    path.write_bytes(data)
    assert len(data) > scan_pool.PARALLEL_SCAN_BYTES
    outs = []
    for workers in (1, 2):
        out = tmp_path / f"out{workers}"
        cmd = [sys.executable, "-m", "mmtok", "probe", str(path), "-o", str(out)]
        done = subprocess.run([*cmd, "--workers", str(workers)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        outs.append(sorted(out.glob("*.parquet")))
    assert [p.name for p in outs[0]] == [p.name for p in outs[1]]
    for a, b in zip(*outs, strict=True):
        assert same_parquet(a, b), a.name
    table = pq.read_table(outs[1][0].parent)
    assert table.num_rows == 9_000 and table.schema.field("late").type == "string"


def test_gzip_file_is_one_unit(tmp_path):
    path = tmp_path / "rows.jsonl.gz"
    with gzip.open(path, "wb") as f:
        f.write(b'{"image": "a.jpg"}\n' * 10)
    assert JsonLinesSource(str(path), ReadOptions()).scan_part().count == 10
