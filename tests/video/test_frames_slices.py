"""sample-frames by slices: each worker reads whole slices of the videos, writes their frames
into its own shard files and retires between two slices once its `--recycle-after` is spent;
the main process gets counts and the videos' facts, never a frame. The rows are those of the
main-process path (`-o -`, and the batches a listing read whole still takes), the files the
same for one and two workers, after a decoder crash inside a slice and after a killed run
resumed."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import is_binary, received_tables, same_parquet
from typer.testing import CliRunner

from mmtok.cli.app import app
from mmtok.engine.pipeline import OutputOptions, run_pipeline
from mmtok.io.sources import Inputs, ReadOptions
from mmtok.video.sampling import SamplingSpec
from tests.video.fixtures import session_corpus
from tests.video.poison_decoders import PidStage, PoisonDecoders

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]
# 12 videos, in name order: decord's, one PyAV decodes (open GOP), one that is no video; the
# command reads 4 per batch, so 3 slices of one batch each
NAMES = [f"v{i:02d}" for i in range(12)]
KIND = {"v05": "garbage", "v08": "open_gop"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return session_corpus(tmp_path_factory)


@pytest.fixture(scope="module")
def videos(corpus, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("videos")
    for name in NAMES:
        shutil.copy(corpus[KIND.get(name, "h264")].path, folder / f"{name}.mp4")
    return folder


def sample(source: Path, *args: str) -> str:
    result = runner.invoke(app, ["sample-frames", str(source), "--num-frames", "2", *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def data_files(out: Path) -> list[str]:
    side = [out / "__mmtok__" / n for n in ("rejects.parquet", "videos.parquet")]
    files = [*sorted(out.glob("part-*.parquet")), *(p for p in side if p.exists())]
    return [str(p.relative_to(out)) for p in files]


def same_files(out: Path, reference: Path) -> bool:
    """The same shards, rejects and videos file, byte for byte but for the command line their
    metadata records: rows, row groups, every other key."""
    if data_files(out) != data_files(reference):
        return False
    return all(same_parquet(out / name, reference / name) for name in data_files(reference))


def rows_of(out: Path) -> list[dict]:
    return pa.concat_tables(
        pq.read_table(p) for p in sorted(out.glob("part-*.parquet"))
    ).to_pylist()


def test_one_and_two_workers_write_the_rows_of_the_main_process_path(videos, tmp_path):
    """-w1 and -w2 write the same files (one shard per slice, by the workers); `-o -`, where
    every frame comes through this process, prints the same rows and rejects."""
    sample(videos, "-o", str(tmp_path / "w1"), "-w", "1", "--recycle-after", "5")
    sample(videos, "-o", str(tmp_path / "w2"), "-w", "2", "--recycle-after", "5")
    assert same_files(tmp_path / "w2", tmp_path / "w1")
    assert len(list((tmp_path / "w1").glob("part-*"))) == 3  # one per slice of 4 videos
    rejects_file = tmp_path / "rejects.jsonl"
    printed = sample(videos, "-o", "-", "-w", "2", "--rejects", str(rejects_file))
    frames = [json.loads(line) for line in printed.splitlines() if line.startswith("{")]
    rows = rows_of(tmp_path / "w1")
    assert len(rows) == len(frames) == 2 * (len(NAMES) - 1)
    for row, frame in zip(rows, frames, strict=True):
        data = frame["image"].split("base64,", 1)[1]
        assert base64.b64decode(data) == row["image"]["bytes"]
        for key in ("id", "video_id", "frame_index", "pts_s", "decoder", "video_info"):
            assert frame[key] == row[key], key
    rejected = [json.loads(line) for line in rejects_file.read_text().splitlines()]
    written = pq.read_table(tmp_path / "w1" / "__mmtok__" / "rejects.parquet").to_pylist()
    assert (
        [(r["id"], r["reason"]) for r in rejected]
        == [(r["id"], r["reason"]) for r in written]
        == [(written[0]["id"], "not_video")]
    )


def test_a_listing_read_whole_keeps_the_batch_path(videos, tmp_path, worker_messages):
    """A Parquet listing of one row group is one slice: larger than --recycle-after, it goes
    in batches (rows through this process, written here) so that workers still retire; within
    the limit its one slice is written by a worker. The rows are the same."""
    listing = tmp_path / "videos.parquet"
    paths = [str(videos / f"{name}.mp4") for name in NAMES]
    pq.write_table(pa.table({"id": NAMES, "video": paths}), listing)
    sample(listing, "-o", str(tmp_path / "batches"), "-w", "2", "--recycle-after", "3")
    kinds = Counter(m[0] for m in worker_messages if isinstance(m, tuple))
    assert kinds["done"] == 3 and kinds["end"] == 0  # 3 batches of 4, no slice
    worker_messages.clear()
    sample(listing, "-o", str(tmp_path / "slice"), "-w", "2", "--recycle-after", "12")
    kinds = Counter(m[0] for m in worker_messages if isinstance(m, tuple))
    assert kinds["done"] == 0 and kinds["end"] == 1
    assert rows_of(tmp_path / "slice") == rows_of(tmp_path / "batches")
    for name in ("rejects.parquet", "videos.parquet"):
        a, b = (pq.read_table(tmp_path / d / "__mmtok__" / name) for d in ("slice", "batches"))
        assert a.equals(b)


def test_the_main_process_receives_no_frame(videos, tmp_path, worker_messages):
    """Every message from the workers is seen: no binary column (frames, pixels, the video)
    and no row of frames comes back, only counts, reject reasons and the videos' facts."""
    sample(videos, "-o", str(tmp_path / "out"), "-w", "2", "--frame-format", "raw")
    received = worker_messages
    ends = [m for m in received if isinstance(m, tuple) and m[0] == "end"]
    assert len(ends) == 3 and all(m[2] is not None for m in ends)

    tables = received_tables(received)
    assert len(tables) >= 3
    assert not [t.schema for t in tables if any(is_binary(f.type) for f in t.schema)]
    columns = {c for t in tables for c in t.column_names}
    assert {"image", "pixels", "id", "frame_index"}.isdisjoint(columns)
    assert "video_info" in columns  # what videos.parquet is made of
    assert len(rows_of(tmp_path / "out")) == 2 * (len(NAMES) - 1)


@pytest.mark.parametrize("workers", [1, 2])
def test_workers_retire_between_slices(corpus, tmp_path, workers):
    """Slices of 2 videos, --recycle-after 4: each process decodes two whole slices, never
    more than 4 videos."""
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(12):
        shutil.copy(corpus["h264"].path, folder / f"v{i:02d}.mp4")
    run_pipeline(
        Inputs([str(folder)], ReadOptions(batch_rows=2, videos=True)),
        [PidStage(SamplingSpec(num_frames=1), recycle_after=4)],
        OutputOptions(str(tmp_path / "out")),
        workers=workers,
    )
    rows = rows_of(tmp_path / "out")
    assert len(rows) == 12
    pids = [r["decoder"].split("@")[1] for r in rows]
    assert Counter(pids[i] for i in range(0, 12, 2)) == Counter(pids[i] for i in range(1, 12, 2))
    assert set(Counter(pids).values()) == {4}  # two slices of two, then a fresh process
    assert len(list((tmp_path / "out").glob("part-*"))) == 6  # one per slice


@pytest.mark.parametrize("victim", ["crash", "exit"])
def test_a_worker_dying_inside_a_slice(corpus, tmp_path, victim, worker_messages):
    """A decoder kills its worker in the 2nd batch of a slice, after the first batch went into
    the slice's file: the video is retried alone (again with PyAV), becomes a decoder_crash
    reject, and the slice runs again: the files of one and two workers are the same, and the
    other videos' frames are those of a run without the victim."""
    folder = tmp_path / "poison"
    folder.mkdir()
    # 16 videos in batches of 1: slices of 2 batches; the victim is the 2nd of the 2nd slice
    names = ["a0", "a1", "a2", victim, *(f"x{i:02d}" for i in range(12))]
    for name in names:
        shutil.copy(corpus["h264"].path, folder / f"{name}.mp4")
    outs = {}
    for workers in (1, 2):
        worker_messages.clear()
        out = outs[workers] = tmp_path / f"w{workers}"
        manifest = run_pipeline(
            Inputs([str(folder)], ReadOptions(batch_rows=1, videos=True)),
            [PoisonDecoders(SamplingSpec(num_frames=2), recycle_after=4)],
            OutputOptions(str(out)),
            workers=workers,
        )
        assert manifest["counts"]["rejected_by_reason"] == {"decoder_crash": 1}
        assert manifest["counts"]["out"] == 2 * (len(names) - 1)
        # each slice ended once; the victim's slice sent its first batch twice (it ran again)
        kinds = Counter(m[0] for m in worker_messages if isinstance(m, tuple))
        assert kinds["end"] == len(names) // 2 and kinds["batch"] == len(names) + 1
    assert same_files(outs[2], outs[1])
    rejects = pq.read_table(outs[1] / "__mmtok__" / "rejects.parquet").to_pylist()
    assert [Path(r["image"]["path"]).stem for r in rejects] == [victim]
    assert "also with this row alone" in rejects[0]["message"]
    kept = [Path(r["video_path"]).stem for r in rows_of(outs[1])]
    assert kept == [n for n in names if n != victim for _ in range(2)]


DRIVER = """
import sys
sys.path[:0] = [{root!r}]
import mmtok.stages.frames
from tests.video.poison_decoders import PausingDecoders
mmtok.stages.frames.SampleFramesStage = PausingDecoders
from mmtok.cli.entry import main
sys.argv = ["mmtok", *sys.argv[1:]]
main()
"""


def test_a_run_killed_while_workers_write_resumes_to_the_same_files(corpus, tmp_path):
    """SIGKILL to the whole run (main process, worker server, workers) while a worker writes
    the 3rd slice: --resume keeps the slices adopted and gives the files of a clean run."""
    folder = tmp_path / "videos"
    folder.mkdir()
    for name in [*NAMES[:9], "v09_pause", *NAMES[10:]]:
        shutil.copy(corpus[KIND.get(name, "h264")].path, folder / f"{name}.mp4")
    args = ["sample-frames", str(folder), "--num-frames", "2", "-w", "2", "--json"]
    reference = subprocess.run(
        [sys.executable, "-m", "mmtok", *args, "-o", str(tmp_path / "ref")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert reference.returncode == 0, reference.stderr
    out = tmp_path / "out"
    pid_file = tmp_path / "pid"
    env = {**os.environ, "FRAMES_PAUSE": str(pid_file)}
    script = [sys.executable, "-c", DRIVER.format(root=str(ROOT))]
    run = subprocess.Popen([*script, *args, "-o", str(out)], env=env, start_new_session=True)
    staging = tmp_path / ".out.mmtok-staging"
    try:
        deadline = time.monotonic() + 120
        while not pid_file.exists():  # the 3rd slice is paused in its second video
            assert time.monotonic() < deadline and run.poll() is None
            time.sleep(0.05)
        while len(list(staging.glob("out/part-*.parquet"))) < 2:  # slices 1 and 2 adopted
            assert time.monotonic() < deadline and run.poll() is None
            time.sleep(0.05)
        time.sleep(1.2)  # the state file is written at most once a second
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    assert not out.exists()
    state = json.loads((staging / "state.json").read_text())
    # slices 1 and 2 may be adopted but not yet in the state file: resume redoes them then
    assert state["records_done"] < len(NAMES)

    resumed = subprocess.run(
        [sys.executable, "-m", "mmtok", *args, "-o", str(out), "--resume"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert same_files(out, tmp_path / "ref")
    manifest = json.loads((out / "__mmtok__" / "manifest.json").read_text())
    ref_manifest = json.loads((tmp_path / "ref" / "__mmtok__" / "manifest.json").read_text())
    assert manifest.get("resumed") == 1 and manifest["counts"] == ref_manifest["counts"]
    assert not staging.exists()
