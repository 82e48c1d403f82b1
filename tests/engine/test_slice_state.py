"""The main process records adopted slices in state.json at most every `STATE_EVERY` seconds,
not once per slice (each write costs two fsyncs); a run killed between two writes resumes to
the same files."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import write_jsonl

import mmtok.io.sink as sink_module
from mmtok.engine.pipeline import Interrupted, OutputOptions, run_pipeline
from mmtok.io.sources import Inputs, ReadOptions
from mmtok.stages.probe import ProbeStage


def run(source: Path, out: Path, **kwargs) -> dict:
    inputs = Inputs([str(source)], ReadOptions(batch_rows=4))
    opts = OutputOptions(str(out), shard_rows=8, **kwargs)  # a slice (and a shard) per 8 rows
    return run_pipeline(inputs, [ProbeStage()], opts, workers=1)


def data(out: Path) -> tuple[list, list]:
    rows = pq.read_table(out, columns=["id", "width"]).to_pylist()
    rejects = pq.read_table(out / "__mmtok__" / "rejects.parquet", columns=["id"]).to_pylist()
    return rows, rejects


@pytest.fixture
def source(tmp_path, image_files) -> Path:
    rows = [
        {"id": f"r{i:03d}", "image": str(image_files["baseline_640x480.jpg"]), "caption": "x"}
        for i in range(160)
    ]
    rows[5]["image"] = str(tmp_path / "missing.jpg")  # a reject chunk too
    return write_jsonl(tmp_path / "in.jsonl", rows)


@pytest.mark.parametrize("every", [3600, 0])
def test_slices_are_recorded_together(source, tmp_path, monkeypatch, every):
    monkeypatch.setattr(sink_module, "STATE_EVERY", every)
    writes: Counter = Counter()
    write = sink_module._write_json_atomic

    def counted(path: Path, state: dict) -> None:
        writes[path.name] += 1
        write(path, state)

    monkeypatch.setattr(sink_module, "_write_json_atomic", counted)
    manifest = run(source, tmp_path / "out")
    assert len(manifest["files"]) == 21  # 20 shards, one per slice, and the rejects
    # created, then at the end; with no interval, after each slice too (as it was always)
    assert writes["state.json"] == (2 if every else 22)


def test_a_run_interrupted_between_state_writes_resumes_to_the_same_files(
    source, tmp_path, monkeypatch
):
    reference = data(run(source, tmp_path / "ref") and tmp_path / "ref")
    adopted = {"n": 0}
    adopt = sink_module.DatasetSink.adopt

    def adopt_then_die(self, output, position):
        adopt(self, output, position)
        adopted["n"] += 1
        if adopted["n"] == 12:
            raise KeyboardInterrupt  # 12 slices renamed into place; the state file lists none

    monkeypatch.setattr(sink_module.DatasetSink, "adopt", adopt_then_die)
    monkeypatch.setattr(sink_module, "STATE_EVERY", 3600)
    monkeypatch.setattr(sink_module.DatasetSink, "abandon", sink_module.DatasetSink.release)
    with pytest.raises(Interrupted):
        run(source, tmp_path / "out")
    monkeypatch.undo()
    staging = tmp_path / ".out.mmtok-staging"
    assert len(list((staging / "out").glob("part-*.parquet"))) == 12
    assert json.loads((staging / "state.json").read_text())["parts"] == []
    manifest = run(source, tmp_path / "out", resume=True)
    assert manifest["resumed"] == 1 and data(tmp_path / "out") == reference


@pytest.mark.parametrize("die_after", [4, 8], ids=["first input done", "every slice done"])
def test_a_resumed_run_does_not_warn_about_inputs_read_before_it(
    tmp_path, image_files, monkeypatch, die_after
):
    """An input read whole by the run that was interrupted gives no row to the resumed run:
    that is not "no rows read; is it a JSON Lines file?"."""
    row = {"image": str(image_files["baseline_640x480.jpg"]), "caption": "x"}
    paths = [str(write_jsonl(tmp_path / f"{n}.jsonl", [row] * 16)) for n in "ab"]

    def run_both(**kwargs) -> Inputs:
        inputs = Inputs(paths, ReadOptions(batch_rows=4))
        opts = OutputOptions(str(tmp_path / "out"), shard_rows=8, **kwargs)
        run_pipeline(inputs, [ProbeStage()], opts, workers=1)
        return inputs

    adopted = {"n": 0}
    adopt = sink_module.DatasetSink.adopt

    def adopt_then_die(self, output, position):
        adopt(self, output, position)
        adopted["n"] += 1
        if adopted["n"] == die_after:
            raise KeyboardInterrupt

    monkeypatch.setattr(sink_module.DatasetSink, "adopt", adopt_then_die)
    monkeypatch.setattr(sink_module, "STATE_EVERY", 0)  # the state lists every adopted slice
    with pytest.raises(Interrupted):
        run_both()
    monkeypatch.undo()
    inputs = run_both(resume=True)
    assert pq.read_table(tmp_path / "out").num_rows == 32
    assert len(list((tmp_path / "out").glob("part-*.parquet"))) == 8  # a slice per batch
    assert inputs.problems() == []
    # an input that gives no row in a run of its own is still named
    empty = write_jsonl(tmp_path / "empty.jsonl", [])
    fresh = Inputs([paths[0], str(empty)], ReadOptions(batch_rows=4))
    run_pipeline(fresh, [ProbeStage()], OutputOptions(str(tmp_path / "o2")), workers=1)
    assert [p.split(":")[0] for p in fresh.problems()] == [fresh.sources[1].display]
