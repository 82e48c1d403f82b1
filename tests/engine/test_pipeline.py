"""The run machinery end to end: accounting, determinism, commit, resume, backpressure."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import write_jsonl

from mmtok.engine.local import StageChain, run_local
from mmtok.engine.pipeline import OutputOptions, run_pipeline
from mmtok.errors import MmtokError
from mmtok.io.schema import reject_schema, with_fields
from mmtok.io.sources import Inputs, ReadOptions
from mmtok.stages.probe import ProbeStage


@pytest.fixture
def mixed_jsonl(tmp_path, image_files):
    """Good and bad images in one input, repeated so there are several batches."""
    rows = []
    for i in range(30):
        for name in sorted(image_files):
            rows.append({"image": str(image_files[name]), "caption": f"{name} {i}", "n": i})
    rows.append({"image": None, "caption": "no image"})
    return write_jsonl(tmp_path / "mixed.jsonl", rows)


def read_dataset(out):
    manifest = json.loads((out / "__mmtok__" / "manifest.json").read_text())
    parts = [pq.read_table(out / f["name"]) for f in manifest["files"] if f["kind"] == "rows"]
    rows = [r for t in parts for r in t.to_pylist()]
    rejects = pq.read_table(out / "__mmtok__" / "rejects.parquet").to_pylist()
    return manifest, rows, rejects


def run(inputs, out, workers=1, batch_rows=64, stage=None, **output):
    source = Inputs([str(inputs)], ReadOptions(batch_rows=batch_rows))
    opts = OutputOptions(str(out), **{"shard_rows": 100, **output})
    stage = stage or ProbeStage(decode_check=True)
    return run_pipeline(source, [stage], opts, workers=workers)


def test_every_row_accounted_for_with_reasons(mixed_jsonl, tmp_path):
    run(mixed_jsonl, tmp_path / "out")
    manifest, rows, rejects = read_dataset(tmp_path / "out")
    counts = manifest["counts"]
    assert counts["in"] == 30 * 19 + 1 == counts["out"] + counts["rejected"]
    assert counts["rejected_by_reason"] == {
        "bomb": 30,
        "empty_file": 30,
        "no_image": 1,
        "not_image": 90,
        "truncated": 30,
    }
    assert len(rows) == counts["out"] and len(rejects) == counts["rejected"]
    # Rejects keep the row's own columns, so they can be fixed and run again.
    no_image = next(r for r in rejects if r["reason"] == "no_image")
    assert (
        no_image["caption"] == "no image"
        and no_image["stage"] == "probe"
        and "width" not in no_image
    )
    # A slice of a written output holds at most --shard-rows rows (here 100, so 1 batch of
    # 64: see mmtok.io.shard_writer), and its worker writes it as one shard.
    sizes = [f["rows"] for f in manifest["files"] if f["kind"] == "rows"]
    assert sum(sizes) == counts["out"] and len(sizes) == 9 and max(sizes) <= 64


def test_manifest_files_checksums_and_metadata(mixed_jsonl, tmp_path):
    import hashlib

    manifest = run(mixed_jsonl, tmp_path / "out")
    for entry in manifest["files"]:
        path = tmp_path / "out" / entry["name"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
        assert pq.ParquetFile(path).metadata.num_rows == entry["rows"]
    meta = pq.ParquetFile(tmp_path / "out" / "part-00000.parquet").schema_arrow.metadata
    assert b"mmtok_version" in meta and json.loads(meta[b"mmtok_stages"])[0]["stage"] == "probe"
    assert (
        pq.ParquetFile(tmp_path / "out" / "part-00000.parquet")
        .metadata.row_group(0)
        .column(0)
        .compression
        == "ZSTD"
    )
    assert not list(tmp_path.glob(".out.mmtok-staging"))


def test_output_is_identical_for_one_and_two_workers(mixed_jsonl, tmp_path):
    run(mixed_jsonl, tmp_path / "w1", workers=1)
    run(mixed_jsonl, tmp_path / "w2", workers=2)
    _, rows1, rejects1 = read_dataset(tmp_path / "w1")
    _, rows2, rejects2 = read_dataset(tmp_path / "w2")
    assert rows1 == rows2 and rejects1 == rejects2


def test_existing_output_needs_overwrite(mixed_jsonl, tmp_path):
    run(mixed_jsonl, tmp_path / "out")
    with pytest.raises(MmtokError, match="already exists"):
        run(mixed_jsonl, tmp_path / "out")
    manifest = run(mixed_jsonl, tmp_path / "out", overwrite=True)
    assert manifest["counts"]["in"] == 571


class _Boom(Exception):
    pass


class _BoomAt(ProbeStage):
    """Raises (a bug, not a bad row) on its `at`-th batch in its worker; same config as probe."""

    def __init__(self, at: int):
        super().__init__(decode_check=True)
        self.at, self.calls = at, 0

    def process(self, rows):
        self.calls += 1
        if self.calls == self.at:
            raise _Boom()
        return super().process(rows)


def test_failed_run_leaves_no_finished_looking_output_and_resumes(mixed_jsonl, tmp_path):
    """A run that dies mid-way leaves only staging; --resume finishes with the same rows."""
    run(mixed_jsonl, tmp_path / "ref")
    with pytest.raises(_Boom):
        run(mixed_jsonl, tmp_path / "out", stage=_BoomAt(6))
    assert not (tmp_path / "out").exists()
    assert (tmp_path / ".out.mmtok-staging" / "state.json").exists()
    with pytest.raises(MmtokError, match="unfinished run"):
        run(mixed_jsonl, tmp_path / "out")
    manifest = run(mixed_jsonl, tmp_path / "out", resume=True)
    assert manifest["resumed"] == 1
    assert read_dataset(tmp_path / "out")[1:] == read_dataset(tmp_path / "ref")[1:]


def test_resume_refuses_changed_settings(mixed_jsonl, tmp_path):
    with pytest.raises(_Boom):
        run(mixed_jsonl, tmp_path / "out", stage=_BoomAt(1))
    with pytest.raises(MmtokError, match="differ"):
        run(mixed_jsonl, tmp_path / "out", resume=True, shard_rows=7)


def test_executor_keeps_bounded_batches_in_flight(tmp_path, image_files):
    """Backpressure: the source is not read ahead of the results by more than max_in_flight."""
    inputs = Inputs(
        [
            str(
                write_jsonl(
                    tmp_path / "r.jsonl", [{"image": str(image_files["tiny_1x1.png"])}] * 200
                )
            )
        ],
        ReadOptions(batch_rows=10),
    )
    pulled = {"n": 0}

    def batches():
        for b in inputs.batches():
            pulled["n"] += 1
            yield b.rows, b.rejected, b.num_records

    schema = with_fields(inputs.schema, ProbeStage().output_fields())
    chain = StageChain([ProbeStage()], schema, reject_schema(inputs.schema))
    seen = 0
    for result in run_local(batches(), chain, workers=2, max_in_flight=3):
        seen += 1
        assert pulled["n"] <= seen + 3
        assert result.kept.num_rows == 10
    assert seen == 20


# --- slices: workers read their own input -----------------------------------------------------


def test_workers_read_their_own_slices(mixed_jsonl, tmp_path, monkeypatch):
    """With workers, the main process parses no record: it scans once (schema, count, where
    slices start) and each worker reads its slices. The output is the one-process output."""
    from mmtok.io.sources.jsonl import JsonLinesSource

    run(mixed_jsonl, tmp_path / "ref", workers=1, batch_rows=16)

    def no_records(self, part=None):
        raise AssertionError("the main process read records")
        yield

    monkeypatch.setattr(JsonLinesSource, "records", no_records)
    manifest = run(mixed_jsonl, tmp_path / "w2", workers=2, batch_rows=16)
    assert manifest["counts"]["in"] == 571
    assert read_dataset(tmp_path / "w2")[1:] == read_dataset(tmp_path / "ref")[1:]


class _MainStage(ProbeStage):
    """Probes in the main process (no isolation), and hits Ctrl-C on its `at`-th batch."""

    isolate = False

    def __init__(self, at: int = 0):
        super().__init__()
        self.at, self.calls = at, 0

    def process(self, rows):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return super().process(rows)


@pytest.mark.parametrize("at", [2, 5, 8])
def test_resume_continues_at_the_first_slice_not_written(mixed_jsonl, tmp_path, at):
    """Commits fall at slice ends (a slice's files are adopted whole, even when a worker split
    them at --shard-rows): a resumed run starts at the first slice not adopted and gives the
    rows and shards of an uninterrupted run."""
    from mmtok.engine.pipeline import Interrupted

    ref = tmp_path / "ref"
    run(mixed_jsonl, ref, batch_rows=16, stage=_MainStage(), shard_rows=40)
    with pytest.raises(Interrupted):
        run(mixed_jsonl, tmp_path / "out", batch_rows=16, stage=_MainStage(at), shard_rows=40)
    state = json.loads((tmp_path / ".out.mmtok-staging" / "state.json").read_text())
    slices_done = (at - 1) // 2  # slices of 32 rows: --shard-rows 40 in batches of 16
    if slices_done:
        assert state["position"][:2] == [slices_done, 0]
        assert state["records_done"] == 32 * slices_done
    else:
        assert state["position"] is None
    manifest = run(
        mixed_jsonl, tmp_path / "out", batch_rows=16, stage=_MainStage(), shard_rows=40, resume=True
    )
    assert manifest["resumed"] == 1
    assert read_dataset(tmp_path / "out")[1:] == read_dataset(ref)[1:]
    assert _file_bytes(tmp_path / "out") == _file_bytes(ref)


def _file_bytes(out):
    """Each shard's bytes, by name (the manifest, which times the run, left out)."""
    return {p.name: p.read_bytes() for p in sorted(out.glob("part-*.parquet"))}


def test_output_is_identical_for_one_and_two_workers_over_many_slices(tmp_path, image_files):
    """Parquet row groups and a JSONL cut into many slices: same shards, ids and rejects."""
    rows = [
        {"image": str(image_files[name]), "caption": f"{name} {i}"}
        for i in range(12)
        for name in sorted(image_files)
    ]
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, tmp_path / "rows.parquet", row_group_size=10)
    write_jsonl(tmp_path / "rows.jsonl", rows)
    for name in ("rows.parquet", "rows.jsonl"):
        for workers in (1, 2):
            run(tmp_path / name, tmp_path / f"{name}-{workers}", workers=workers, batch_rows=8)
        one, two = (read_dataset(tmp_path / f"{name}-{w}") for w in (1, 2))
        assert one[1:] == two[1:] and len(one[1]) + len(one[2]) == len(rows)
        assert [f["rows"] for f in one[0]["files"]] == [f["rows"] for f in two[0]["files"]]


def test_a_run_without_output_only_counts(mixed_jsonl, monkeypatch):
    """No -o: rows are counted, never turned into JSON."""
    import mmtok.io.sink

    def refuse(*args, **kwargs):
        raise AssertionError("a row was serialised")

    monkeypatch.setattr(mmtok.io.sink, "row_to_json", refuse)
    source = Inputs([str(mixed_jsonl)], ReadOptions(batch_rows=64))
    manifest = run_pipeline(source, [ProbeStage()], None, workers=1)
    counts = manifest["counts"]
    assert counts["in"] == 571 and counts["out"] + counts["rejected"] == 571
    assert (
        counts["rejected"] > 0 and sum(counts["rejected_by_reason"].values()) == counts["rejected"]
    )


LIGHT_MAIN = """
from mmtok.cli.app import main  # as the installed `mmtok` script starts
import json, sys
sys.path.insert(0, {tests!r})
from mmtok.engine.pipeline import OutputOptions, run_pipeline
from mmtok.io.sources import Inputs, ReadOptions
from poison_stages import ReportModules
if __name__ == "__main__":
    out = sys.argv[2]
    run_pipeline(Inputs([sys.argv[1]], ReadOptions(batch_rows=8)), [ReportModules()],
                 OutputOptions(out), workers=2)
"""


def test_workers_do_not_import_the_cli_again(mixed_jsonl, tmp_path):
    """Spawn re-runs the parent's main script in each worker; for the `mmtok` executable that
    imported the whole CLI (Typer, every command) into every worker. The workers import only
    what their stages need (not pandas either, which pyarrow imports when it can)."""
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "mmtok_script.py"
    script.write_text(LIGHT_MAIN.format(tests=str(Path(__file__).parent)))
    out = tmp_path / "out"
    subprocess.run([sys.executable, str(script), str(mixed_jsonl), str(out)], check=True)
    modules = pq.read_table(out, columns=["cli_modules"]).column("cli_modules").to_pylist()
    assert len(modules) > 0 and set(modules) == {""}


def test_mmtok_processes_keep_pyarrow_from_importing_pandas():
    import subprocess
    import sys

    code = (
        "import sys; from mmtok.engine.process import block_pandas; block_pandas();"
        "import pyarrow as pa, pyarrow.compute as pc, importlib.util;"
        "t = pa.Table.from_pylist([{'a': 1, 'b': 'x'}]); pc.value_counts(t.column('b'));"
        "assert t.to_pylist() == [{'a': 1, 'b': 'x'}];"
        "assert sys.modules['pandas'] is None and importlib.util.find_spec('pandas') is None"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
