"""The run machinery end to end: accounting, determinism, commit, resume, backpressure."""

import json

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
    # Shards close at the first batch boundary past the target (commit points are batch-aligned).
    sizes = [f["rows"] for f in manifest["files"] if f["kind"] == "rows"]
    assert sum(sizes) == counts["out"] and len(sizes) == 3
    assert all(100 <= n < 100 + 64 for n in sizes[:-1])


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
