"""The dataset sink's commit protocol (issue 13.3, 13.4): an interrupt or a kill -9 at every
step of writing, committing, finishing and publishing leaves a run that resumes to exactly the
rows of an uninterrupted run, or a complete output; side outputs are inside the commit; a lock
keeps a second run away."""

import hashlib
import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import encode, photo

from mmtok.engine.pipeline import Interrupted, OutputOptions, publish_output, run_pipeline
from mmtok.errors import MmtokError
from mmtok.io import sink as sink_module
from mmtok.io.layout import MANIFEST_FILE, SIDE_DIR
from mmtok.io.sink import DatasetSink
from mmtok.io.sources import Inputs, ReadOptions
from mmtok.stages.probe import ProbeStage

ROWS = 90


@pytest.fixture(scope="module")
def bytes_parquet(tmp_path_factory) -> Path:
    """Rows that carry their image bytes (large rows), every 7th one not an image."""
    images = [encode(photo(48, 32, seed=i), "JPEG") for i in range(6)]
    data = [b"<html>not an image</html>" if i % 7 == 3 else images[i % 6] for i in range(ROWS)]
    table = pa.table(
        {
            "id": [f"r{i:03d}" for i in range(ROWS)],
            "image": pa.array(
                [{"path": None, "bytes": d} for d in data],
                pa.struct([("path", pa.string()), ("bytes", pa.large_binary())]),
            ),
            "caption": [f"caption {i}" for i in range(ROWS)],
        }
    )
    path = tmp_path_factory.mktemp("in") / "rows.parquet"
    pq.write_table(table, path)
    return path


SIDE = {"clusters.parquet": pa.table({"id": ["r001"], "cluster_id": [0]}), "budget.json": {"a": 1}}


def run(inputs: Path, out: Path, **output) -> dict:
    """One run with small shards (many commits) and two side outputs, like dedup and budget."""
    opts = OutputOptions(str(out), shard_rows=20, **output)
    source = Inputs([str(inputs)], ReadOptions(batch_rows=8))
    manifest = run_pipeline(source, [ProbeStage()], opts, workers=1, hold=True)
    publish_output(opts, SIDE)
    return manifest


def read_output(out: Path) -> tuple[list[dict], list[dict], dict]:
    """Rows, rejects and manifest, after checking that the manifest describes the folder."""
    manifest = json.loads((out / SIDE_DIR / MANIFEST_FILE).read_text())
    listed = {f["name"] for f in manifest["files"]}
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert on_disk == listed | {f"{SIDE_DIR}/{MANIFEST_FILE}"}
    for f in manifest["files"]:
        assert hashlib.sha256((out / f["name"]).read_bytes()).hexdigest() == f["sha256"]
        if f["name"].endswith(".parquet"):
            assert pq.read_metadata(out / f["name"]).num_rows == f["rows"]
    parts = sorted(f["name"] for f in manifest["files"] if f["kind"] == "rows")
    rows = [r for name in parts for r in pq.read_table(out / name).to_pylist()]
    rejects = pq.read_table(out / SIDE_DIR / "rejects.parquet").to_pylist()
    return rows, rejects, manifest


@pytest.fixture(scope="module")
def reference(bytes_parquet, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "out"
    run(bytes_parquet, out)
    rows, rejects, manifest = read_output(out)
    assert len(rows) + len(rejects) == ROWS == manifest["counts"]["in"]
    assert len(rows) == ROWS - 13 and len({r["id"] for r in rows}) == len(rows)
    return rows, rejects, manifest


def count_steps(bytes_parquet, tmp_path, monkeypatch) -> Counter:
    """How often each step happens in a run that replaces an older output."""
    run(bytes_parquet, tmp_path / "count")
    seen: Counter = Counter()
    monkeypatch.setattr(sink_module, "crash_point", lambda step: seen.update([step]))
    run(bytes_parquet, tmp_path / "count", overwrite=True)
    monkeypatch.undo()
    return seen


class Killed(BaseException):
    """Stands for kill -9: nothing after it runs (the sink's abandon is switched off)."""


def inject(monkeypatch, step: str, hit: int, fault: type[BaseException]) -> None:
    calls = Counter()

    def crash_point(name: str) -> None:
        calls[name] += 1
        if name == step and calls[name] == hit:
            raise fault()

    monkeypatch.setattr(sink_module, "crash_point", crash_point)
    if fault is Killed:  # a killed process writes nothing more; the OS drops its lock
        monkeypatch.setattr(DatasetSink, "abandon", DatasetSink.release)


# The steps of the main process. Shards and reject chunks are written by the workers, each
# into its slice's own files (mmtok.io.shard_writer); the main process renames them into place
# (`DatasetSink.adopt`). A worker killed while it writes: tests/engine/test_worker_shards.py.
STEPS = [
    "part-renamed",
    "chunk-renamed",
    "committed",
    "finish",
    "rejects-merged",
    "side-written",
    "manifest-written",
    "old-moved",
    "published",
]


@pytest.mark.slow
@pytest.mark.parametrize("fault", [KeyboardInterrupt, Killed], ids=["interrupt", "kill"])
@pytest.mark.parametrize("step", STEPS)
def test_a_fault_at_every_step_resumes_to_the_same_output(
    bytes_parquet, reference, tmp_path, monkeypatch, step, fault
):
    """Each step at its first and its last occurrence; over an older output (--overwrite), so
    the step that moves the old output aside is reached too."""
    hits = count_steps(bytes_parquet, tmp_path, monkeypatch)[step]
    assert hits, f"step {step} never reached"
    for hit in sorted({1, hits}):
        out = tmp_path / f"out-{hit}"
        run(bytes_parquet, out)  # an older complete output, to be replaced
        inject(monkeypatch, step, hit, fault)
        with pytest.raises((Interrupted, Killed)):
            run(bytes_parquet, out, overwrite=True)
        monkeypatch.undo()
        try:
            run(bytes_parquet, out, resume=True)
        except MmtokError as e:  # killed after the rename: already complete
            assert "already complete" in str(e) and step == "published", e
        rows, rejects, manifest = read_output(out)
        ref_rows, ref_rejects, ref_manifest = reference
        assert rows == ref_rows and rejects == ref_rejects
        assert manifest["counts"] == ref_manifest["counts"]
        assert not list(tmp_path.glob(f".{out.name}.mmtok-staging*"))


def test_an_interrupt_inside_a_row_group_write_does_not_duplicate_it(
    bytes_parquet, reference, tmp_path, monkeypatch
):
    """The failure of issue 13.3: Ctrl-C while a row group is written, then abandon() wrote
    the same buffer again (936 rows in a shard whose state said 468)."""
    original = pq.ParquetWriter.write_table
    calls = {"n": 0}

    def interrupted_write(self, table, *args, **kwargs):
        calls["n"] += 1
        original(self, table, *args, **kwargs)
        if calls["n"] == 2:
            raise KeyboardInterrupt  # after the bytes went out, before the sink noted it

    monkeypatch.setattr(pq.ParquetWriter, "write_table", interrupted_write)
    with pytest.raises(Interrupted):
        run(bytes_parquet, tmp_path / "out")
    monkeypatch.undo()
    state = json.loads((tmp_path / ".out.mmtok-staging" / "state.json").read_text())
    for part in state["parts"]:
        path = tmp_path / ".out.mmtok-staging" / "out" / part["name"]
        assert pq.read_metadata(path).num_rows == part["rows"]
    run(bytes_parquet, tmp_path / "out", resume=True)
    rows, rejects, _ = read_output(tmp_path / "out")
    assert rows == reference[0] and rejects == reference[1]


def test_disk_full_leaves_a_resumable_run(bytes_parquet, reference, tmp_path, monkeypatch):
    def full(step: str) -> None:
        if step == "part-renamed":
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(sink_module, "crash_point", full)
    with pytest.raises(OSError, match="No space"):
        run(bytes_parquet, tmp_path / "out")
    monkeypatch.undo()
    assert not (tmp_path / "out").exists()
    run(bytes_parquet, tmp_path / "out", resume=True)
    assert read_output(tmp_path / "out")[:2] == reference[:2]


def test_side_outputs_are_listed_in_the_manifest(reference):
    files = {f["name"]: f for f in reference[2]["files"]}
    assert files[f"{SIDE_DIR}/clusters.parquet"]["rows"] == 1
    assert files[f"{SIDE_DIR}/budget.json"]["kind"] == "budget"
    assert files[f"{SIDE_DIR}/rejects.parquet"]["rows"] == 13


def test_a_second_run_on_the_same_output_names_who_holds_it(bytes_parquet, tmp_path):
    """A run that holds the staging lock (here: a sink opened in this process) keeps a second
    run out, with or without --overwrite; the staging survives."""
    source = Inputs([str(bytes_parquet)], ReadOptions(batch_rows=8))
    first = DatasetSink(
        tmp_path / "out",
        source.schema,
        source.schema,
        run_key={},
        metadata={},
    )
    first.open()
    for extra in ({}, {"overwrite": True}, {"resume": True}):
        with pytest.raises(MmtokError, match=r"another mmtok run is writing .*pid \d+ on "):
            run(bytes_parquet, tmp_path / "out", **extra)
    assert (tmp_path / ".out.mmtok-staging" / "state.json").exists()
    first.abandon()  # the lock goes with it
    run(bytes_parquet, tmp_path / "out", overwrite=True)
    assert not (tmp_path / ".out.mmtok-staging").exists()


def test_write_options_give_a_field_its_codec_and_zstd_elsewhere():
    from mmtok.io.shard_writer import CODEC_KEY, write_options

    pixels = pa.list_(pa.struct([pa.field("kind", pa.string()), pa.field("data", pa.binary())]))
    plain = pa.schema([pa.field("id", pa.string()), pa.field("tiles", pixels)])
    assert write_options(plain) == {"compression": "zstd"}
    schema = plain.set(1, pa.field("tiles", pixels, metadata={CODEC_KEY: b"lz4"}))
    leaves = ["tiles.list.element.kind", "tiles.list.element.data"]
    assert write_options(schema) == {
        "compression": {"id": "zstd", **dict.fromkeys(leaves, "lz4")},
        "use_dictionary": ["id"],
        "write_statistics": ["id"],
    }
