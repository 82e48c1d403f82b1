"""The writing pass of dedup runs by slices, in the workers: each worker reads its slices,
decides each row from its position (where its slice starts, counted by the signature pass)
and writes its own shards. The files are those of the main path (one process, a running
position), byte for byte, for any worker count; a worker killed in the writing pass, or the
whole run killed, changes nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import encode, photo, same_parquet, write_jsonl
from dedup_stages import KillOnceDedup

import mmtok
import mmtok.stages.dedup
from mmtok.commands.dedup import SignaturePasses

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
ROWS = 1100  # the CLI reads 256 rows per batch: with --shard-rows 256, five slices of a batch
SLICES = 5


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """Rows on 40 pictures (repeats across every slice, some re-encoded copies), captions that
    repeat, missing files and rows without an image; ids repeat too (two rows named r0007)."""
    folder = tmp_path_factory.mktemp("writing")
    files = []
    for i in range(40):
        im = photo(48 + i % 7, 40 + i % 5, seed=i)
        path = folder / f"p{i}.{'png' if i % 4 == 0 else 'jpg'}"
        path.write_bytes(encode(im, "PNG" if i % 4 == 0 else "JPEG", quality=90))
        files.append(str(path))
        if i % 5 == 0:  # a near copy: the same picture at another quality
            copy = folder / f"p{i}_q70.jpg"
            copy.write_bytes(encode(im, "JPEG", quality=70))
            files.append(str(copy))
    rng = np.random.default_rng(3)
    rows = []
    for i in range(ROWS):
        image = files[int(rng.integers(len(files)))] if i % 53 else str(folder / "missing.jpg")
        rows.append({"id": f"r{i:04d}", "image": image if i % 97 else None, "caption": f"c{i % 9}"})
    rows[500]["id"] = "r0007"
    return write_jsonl(folder / "in.jsonl", rows)


def data_files(out: Path) -> dict[str, bytes]:
    """Shards, rejects and clusters, by name, byte for byte."""
    side = out / "__mmtok__"
    names = [
        *sorted(out.glob("part-*.parquet")),
        side / "rejects.parquet",
        side / "clusters.parquet",
    ]
    return {p.name: p.read_bytes() for p in names}


def same_files(out: Path, reference: Path) -> bool:
    """The same data files but for the command line they record (a CLI run here, an API run
    there): rows, row groups and every other key of their metadata."""
    for name in data_files(reference):
        path = name if name.startswith("part-") else f"__mmtok__/{name}"
        if not same_parquet(out / path, reference / path):
            return False
    return data_files(out).keys() == data_files(reference).keys()


def dedup(source: Path, out: Path | str, **options) -> dict:
    document = mmtok.dedup(source, out, shard_rows=256, **options)
    document.pop("timing"), document.pop("output"), document.pop("clusters_file")
    return document


def main_path(monkeypatch) -> None:
    """The writing pass as it ran before it had slices: in this process, a running position."""
    monkeypatch.setattr(SignaturePasses, "slice_starts", lambda self: None)


@pytest.mark.parametrize("by", ["image", "pair"])
def test_workers_write_the_files_of_the_main_path(source, tmp_path, monkeypatch, by):
    documents = {w: dedup(source, tmp_path / f"w{w}", by=by, workers=w) for w in (1, 2)}
    with monkeypatch.context() as m:
        main_path(m)
        documents["main"] = dedup(source, tmp_path / "main", by=by, workers=2)
    reference = data_files(tmp_path / "main")
    assert len(reference) >= 3
    assert data_files(tmp_path / "w1") == reference == data_files(tmp_path / "w2")
    assert documents[1] == documents["main"] == documents[2]
    counts = documents[1]["counts"]
    assert counts["in"] == ROWS and counts["rejected_by_reason"]["duplicate"] > 100
    assert counts["rejected_by_reason"]["missing_file"] == 20
    manifest = json.loads((tmp_path / "w2" / "__mmtok__" / "manifest.json").read_text())
    assert manifest["timing"]["workers"] == 2  # the writing pass ran in two workers


def test_stdout_keeps_the_main_path(source, tmp_path, capfd):
    dedup(source, tmp_path / "out", workers=2)
    capfd.readouterr()
    dedup(source, "-", workers=2)
    printed = [json.loads(line)["id"] for line in capfd.readouterr().out.splitlines()]
    kept = pq.read_table(tmp_path / "out").column("id").to_pylist()
    assert printed == kept and 0 < len(kept) < ROWS


def test_the_writing_pass_is_written_by_the_workers(source, tmp_path, worker_messages):
    """Every message from the workers is seen: each pass's slices end in the workers' files
    (the writing pass's too), and no row (ids, captions, images) of the writing pass, nor any
    image, comes back to this process."""
    received = worker_messages
    dedup(source, tmp_path / "out", workers=2)
    ends = [m for m in received if isinstance(m, tuple) and m[0] == "end"]
    assert len(ends) == 2 * SLICES and all(m[2] is not None for m in ends)  # both passes
    written = [m[2] for m in ends]
    assert sorted(w.index for w in written) == sorted(2 * list(range(SLICES)))
    batches = [m for m in received if isinstance(m, tuple) and m[0] == "batch"]
    counts = [m[1] for m in batches if type(m[1]) is int]
    assert len(counts) == SLICES  # the writing pass's batches: a count only
    assert all("image" not in m[1].column_names for m in batches if type(m[1]) is not int)


def test_a_worker_killed_in_the_writing_pass(source, tmp_path, monkeypatch):
    """A worker SIGKILLed in the 2nd slice: its batch is run again row by row (each row at its
    position in the slice), the slice again with that result: the same files."""
    dedup(source, tmp_path / "ref", workers=2)
    marker = tmp_path / "killed"

    def stage(decisions, settings):
        return KillOnceDedup(decisions, settings, str(marker), victim="r0300")

    monkeypatch.setattr(mmtok.stages.dedup, "DedupStage", stage)
    document = dedup(source, tmp_path / "out", workers=2)
    assert marker.exists()  # the worker really died
    assert data_files(tmp_path / "out") == data_files(tmp_path / "ref")
    assert "decoder_crash" not in document["counts"]["rejected_by_reason"]


DRIVER = """
import sys
sys.path[:0] = [{root!r}, {here!r}]
import mmtok.stages.dedup
from dedup_stages import PausingDedup
mmtok.stages.dedup.DedupStage = PausingDedup
from mmtok.cli.entry import main
sys.argv = ["mmtok", *sys.argv[1:]]
main()
"""


def test_a_run_killed_in_the_writing_pass_resumes_to_the_same_files(source, tmp_path):
    """SIGKILL to the whole run while a worker writes the 3rd slice: --resume reuses the
    stored signatures, keeps the slices already adopted and gives the files of a clean run."""
    dedup(source, tmp_path / "ref", workers=2)
    pid_file = tmp_path / "pid"
    out = tmp_path / "out"
    args = ["dedup", str(source), "-o", str(out), "-w", "2", "--shard-rows", "256", "-q"]
    script = [sys.executable, "-c", DRIVER.format(root=str(ROOT), here=str(HERE))]
    env = {**os.environ, "DEDUP_PAUSE": str(pid_file), "DEDUP_PAUSE_AT": "r0600"}
    run = subprocess.Popen([*script, *args], env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not pid_file.exists():
            assert time.monotonic() < deadline and run.poll() is None
            time.sleep(0.05)
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    staging = tmp_path / ".out.mmtok-staging"
    state = json.loads((staging / "state.json").read_text())
    assert state["records_done"] < ROWS  # killed in the writing pass, before its end
    assert (tmp_path / ".out.mmtok-signatures").is_dir()

    resumed = subprocess.run(
        [sys.executable, "-m", "mmtok", *args, "--resume", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert same_files(out, tmp_path / "ref")
    manifest = json.loads((out / "__mmtok__" / "manifest.json").read_text())
    assert manifest["counts"]["in"] == ROWS and manifest.get("resumed") == 1
    assert not staging.exists() and not (tmp_path / ".out.mmtok-signatures").exists()


def test_an_input_changed_between_the_passes_stops_the_run(source, tmp_path, monkeypatch):
    """The id check holds in the workers: rows read in the writing pass that are not the
    signature pass's rows stop the run with one line."""
    changed = tmp_path / "in.jsonl"
    changed.write_text(source.read_text())
    decide = mmtok.stages.dedup.decide

    def edit_then_decide(sig, clusters, starts):  # between the passes
        lines = changed.read_text().splitlines(keepends=True)
        lines[700] = lines[700].replace('"r0700"', '"edited"')
        changed.write_text("".join(lines))
        return decide(sig, clusters, starts)

    monkeypatch.setattr(mmtok.stages.dedup, "decide", edit_then_decide)
    with pytest.raises(mmtok.MmtokError, match="the input changed between the signature pass"):
        dedup(changed, tmp_path / "out", workers=2)


def test_a_recipe_filter_then_dedup(source, tmp_path):
    """Rows rejected before dedup (a filter step): the signature pass sees only the rows the
    filter keeps; the files are the same with one and two workers, and the rows those of the
    two commands run one after the other."""
    steps = [{"command": "filter", "min_side": 42}, {"command": "dedup", "by": "pair"}]
    documents = {}
    for workers in (1, 2):
        recipe = {"steps": steps, "shard_rows": 256, "workers": workers}
        documents[workers] = mmtok.run_recipe(
            recipe, inputs=source, output=tmp_path / f"w{workers}"
        )
    assert data_files(tmp_path / "w1") == data_files(tmp_path / "w2")
    counts = documents[1]["counts"]
    assert counts == documents[2]["counts"]
    assert counts["rejected_by_reason"]["too_small"] > 0
    assert counts["rejected_by_reason"]["duplicate"] > 0

    mmtok.filter(source, tmp_path / "filtered", min_side=42, workers=2)
    dedup(tmp_path / "filtered", tmp_path / "separate", by="pair", workers=2)
    rows = pq.read_table(tmp_path / "w2").column("id").to_pylist()
    assert rows == pq.read_table(tmp_path / "separate").column("id").to_pylist()
