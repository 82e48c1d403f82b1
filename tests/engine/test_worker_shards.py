"""Workers write their own output shards (mmtok.io.shard_writer): same bytes for any worker
count, bounded shard sizes, nothing binary through the pipes, and kills at any point resume to
the same files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import encode, is_binary, photo, received_tables, write_jsonl
from poison_stages import PoisonProbe

from mmtok.engine.pipeline import Observer, OutputOptions, run_pipeline
from mmtok.io.shard_writer import TARGET_SLICES, slice_rows
from mmtok.io.sources import Inputs, ReadOptions
from mmtok.stages.probe import ProbeStage

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def run(source: Path, out: Path, workers: int, stage=None, batch_rows=8, **kwargs) -> dict:
    pipeline = {k: kwargs.pop(k) for k in ("shard_stats", "observers") if k in kwargs}
    opts = OutputOptions(str(out), **{"shard_rows": 1_000, **kwargs})
    inputs = Inputs([str(source)], ReadOptions(batch_rows=batch_rows))
    return run_pipeline(inputs, [stage or ProbeStage()], opts, workers=workers, **pipeline)


def files(out: Path) -> dict[str, bytes]:
    """Every data file's bytes, by name (the manifest, which times the run, left out)."""
    names = sorted(out.glob("part-*.parquet")) + [out / "__mmtok__" / "rejects.parquet"]
    return {p.name: p.read_bytes() for p in names}


@pytest.fixture
def bytes_parquet(tmp_path) -> Path:
    """120 rows carrying their image bytes, every 7th not an image."""
    images = [encode(photo(40 + i, 30, seed=i), "JPEG") for i in range(6)]
    data = [b"not an image" if i % 7 == 3 else images[i % 6] for i in range(120)]
    table = pa.table(
        {
            "id": [f"r{i:03d}" for i in range(120)],
            "image": pa.array(
                [{"path": None, "bytes": d} for d in data],
                pa.struct([("path", pa.string()), ("bytes", pa.large_binary())]),
            ),
            "caption": [f"caption {i}" for i in range(120)],
        }
    )
    path = tmp_path / "rows.parquet"
    pq.write_table(table, path, row_group_size=8)
    return path


def test_slice_size_policy():
    """About TARGET_SLICES slices per input, between 4 batches and --shard-rows (which wins),
    in whole batches, never over --shard-rows."""
    assert slice_rows(20_000, 256, 50_000, 4) == 1_024  # 20 shards
    assert slice_rows(200_000, 256, 50_000, 4) == 3_072  # 66 shards
    assert slice_rows(10_000_000, 256, 50_000, 4) == 49_920  # 201 shards of <= 50,000 rows
    assert slice_rows(None, 256, 50_000, 4) == 1_024  # unknown count: the plain unit
    assert slice_rows(10_000, 64, 100, 4) == 64  # small shards asked for: small slices
    assert slice_rows(20, 8, 50_000, 4) == 8  # 20 images to tile: 3 slices, for 3 workers
    assert slice_rows(600, 256, 50_000, 4) == 256  # never under one batch
    for total in (1, 1_000, 77_777, 3_000_000, 10**8):
        rows = slice_rows(total, 256, 50_000, 4)
        assert rows % 256 == 0 and rows <= 50_000
        assert -(-total // rows) <= max(2 * TARGET_SLICES, -(-total // 49_920))


@pytest.mark.parametrize("workers", [1, 2])
def test_shards_follow_the_slices_and_roll_at_shard_bytes(bytes_parquet, tmp_path, workers):
    """A slice is 4 batches here; with --shard-bytes of one byte each batch closes a file (so a
    slice gives several files), and each file carries its own ShardStats metadata."""
    manifest = run(bytes_parquet, tmp_path / "out", workers, shard_bytes=1, shard_stats=RowCount())
    parts = [f for f in manifest["files"] if f["kind"] == "rows"]
    assert len(parts) == 15  # 15 batches of 8, each with kept rows
    for f in parts:
        meta = pq.read_metadata(tmp_path / "out" / f["name"]).metadata
        assert int(meta[b"rows_in_shard"]) == f["rows"]
    ids = [r for f in parts for r in pq.read_table(tmp_path / "out" / f["name"])["id"].to_pylist()]
    assert ids == sorted(ids) and len(ids) == 120 - 17


class RowCount:
    """A ShardStats: the rows of each shard, counted in the process that writes it."""

    def __init__(self):
        self.rows = 0

    def add(self, kept):
        self.rows += kept.num_rows

    def take(self):
        rows, self.rows = self.rows, 0
        return {"rows_in_shard": str(rows)}


class InMain(ProbeStage):
    isolate = False  # the chain runs in the main process with one worker


def test_one_and_two_workers_write_the_same_bytes(bytes_parquet, tmp_path):
    """Shards and rejects byte for byte: in this process, one child, two workers."""
    run(bytes_parquet, tmp_path / "main", 1, stage=InMain(), shard_rows=20)
    run(bytes_parquet, tmp_path / "w1", 1, shard_rows=20)
    run(bytes_parquet, tmp_path / "w2", 2, shard_rows=20)
    reference = files(tmp_path / "main")
    assert len(reference) == 16  # 15 slices of 1 batch (8 slices at least) and the rejects
    assert files(tmp_path / "w1") == reference == files(tmp_path / "w2")


def test_the_main_process_receives_no_binary_column(bytes_parquet, tmp_path, worker_messages):
    """Everything a worker sends is inspected: no binary data (the image bytes) crosses."""
    received = worker_messages
    seen = []
    observer = Observer(["width", "height"], lambda t: seen.append(t.num_rows))
    manifest = run(bytes_parquet, tmp_path / "out", 2, observers=[observer])
    assert manifest["counts"]["out"] == sum(seen) == 103

    tables = received_tables(received)
    assert len(tables) > 15
    assert not [t.schema for t in tables if any(is_binary(f.type) for f in t.schema)]
    assert {"id", "caption", "image"}.isdisjoint(c for t in tables for c in t.column_names)


def rows_with(image: str, poison: dict[int, str], n: int = 160) -> list[dict]:
    """Slices of 4 batches of 4 (160 rows: ten slices)."""
    rows = [{"id": f"r{i:03d}", "image": image, "caption": f"row {i}"} for i in range(n)]
    for i, caption in poison.items():
        rows[i]["caption"] = caption
    return rows


def test_a_worker_killed_inside_a_slice_it_was_writing(tmp_path, image_files):
    """Row 37 kills its worker in the 2nd batch of a slice, after that slice's first file
    was written: the slice runs again, the row is a decoder_crash reject, and the files are
    those of one worker (where the same row killed the child too)."""
    source = write_jsonl(
        tmp_path / "in.jsonl", rows_with(str(image_files["tiny_1x1.png"]), {37: "#kill"})
    )
    for workers in (1, 2):
        run(
            source,
            tmp_path / f"w{workers}",
            workers,
            stage=PoisonProbe(),
            batch_rows=4,
            shard_bytes=1,
        )
    assert files(tmp_path / "w1") == files(tmp_path / "w2")
    rejects = pq.read_table(tmp_path / "w2" / "__mmtok__" / "rejects.parquet").to_pylist()
    assert [(r["id"], r["reason"]) for r in rejects] == [("r037", "decoder_crash")]
    assert not list(tmp_path.glob(".w2.mmtok-staging*"))


SCRIPT = """
import sys
sys.path[:0] = [{root!r}, {here!r}]
from poison_stages import PoisonProbe
from mmtok.engine.pipeline import OutputOptions, run_pipeline
from mmtok.io.sources import Inputs, ReadOptions
if __name__ == "__main__":
    run_pipeline(
        Inputs([sys.argv[1]], ReadOptions(batch_rows=4)),
        [PoisonProbe()],
        OutputOptions(sys.argv[2], resume="--resume" in sys.argv, shard_rows=1000, shard_bytes=1),
        workers=2,
    )
"""


def test_a_run_killed_while_workers_write_resumes_to_the_same_files(tmp_path, image_files):
    """SIGKILL to the whole run while a worker sleeps in the 3rd batch of slice 1 (the files of
    its first two batches written, not adopted): --resume gives the bytes of a clean run."""
    pid_file = tmp_path / "pid"
    rows = rows_with(str(image_files["tiny_1x1.png"]), {26: f"#pid:{pid_file}"})
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(root=str(ROOT), here=str(HERE)))
    env = {**os.environ, "POISON_SLOW": "0"}
    subprocess.run(
        [sys.executable, str(script), str(source), str(tmp_path / "ref")], check=True, env=env
    )
    pid_file.unlink()

    env["POISON_SLOW"] = "60"
    run_ = subprocess.Popen(
        [sys.executable, str(script), str(source), str(tmp_path / "out")],
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists():
            assert time.monotonic() < deadline and run_.poll() is None
            time.sleep(0.05)
        staging = tmp_path / ".out.mmtok-staging"
        written = sorted(p.name for p in (staging / "slices").iterdir())
    finally:
        os.killpg(run_.pid, signal.SIGKILL)
        run_.wait()
    assert {"s000001-000.parquet", "s000001-001.parquet"} <= set(written)  # slice 1, unfinished
    state = json.loads((staging / "state.json").read_text())
    assert state["records_done"] <= 16  # slice 1 not adopted

    env["POISON_SLOW"] = "0"
    subprocess.run(
        [sys.executable, str(script), str(source), str(tmp_path / "out"), "--resume"],
        check=True,
        env=env,
    )
    assert files(tmp_path / "out") == files(tmp_path / "ref")
    manifest = json.loads((tmp_path / "out" / "__mmtok__" / "manifest.json").read_text())
    assert manifest["resumed"] == 1 and manifest["counts"]["out"] == 160
