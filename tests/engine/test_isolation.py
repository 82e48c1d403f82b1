"""Isolation of poison rows: a row that crashes or hangs its worker becomes a reject and the run
goes on; workers die with their parent; Ctrl-C exits at once and leaves a resumable folder."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import write_jsonl
from poison_stages import PoisonProbe

from mmtok.engine.pipeline import OutputOptions, run_pipeline
from mmtok.errors import MmtokError
from mmtok.io.sources import Inputs, ReadOptions

HERE = Path(__file__).parent
POISON = [sys.executable, str(HERE / "poison_stages.py")]
MMTOK = [sys.executable, "-m", "mmtok"]


def rows_with(image, poison: dict[int, str], n: int = 40) -> list[dict]:
    rows = [{"id": f"r{i}", "image": str(image), "caption": f"row {i}"} for i in range(n)]
    for i, caption in poison.items():
        rows[i]["caption"] = caption
    return rows


def run(tmp_path, rows, workers, name="out", **kwargs):
    source = write_jsonl(tmp_path / f"{name}.jsonl", rows)
    out = tmp_path / name
    manifest = run_pipeline(
        Inputs([str(source)], ReadOptions(batch_rows=8)),
        [PoisonProbe()],
        OutputOptions(str(out), shard_rows=16),
        workers=workers,
        **kwargs,
    )
    kept = [
        r
        for f in manifest["files"]
        if f["kind"] == "rows"
        for r in pq.read_table(out / f["name"]).to_pylist()
    ]
    return manifest, kept, pq.read_table(out / "__mmtok__" / "rejects.parquet").to_pylist()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_row_that_kills_its_worker_is_a_reject_and_the_run_goes_on(
    tmp_path, image_files, workers
):
    image = image_files["tiny_1x1.png"]
    manifest, kept, rejects = run(tmp_path, rows_with(image, {3: "#kill", 21: "#exit"}), workers)
    assert manifest["counts"]["in"] == 40
    assert manifest["counts"]["rejected_by_reason"] == {"decoder_crash": 2}
    # every other row is written, in input order, as a run without the poison would write it
    assert [r["id"] for r in kept] == [f"r{i}" for i in range(40) if i not in (3, 21)]
    assert all(r["width"] == 1 for r in kept)
    by_id = {r["id"]: r for r in rejects}
    assert set(by_id) == {"r3", "r21"}
    assert by_id["r3"]["stage"] == "probe"
    assert "SIGKILL" in by_id["r3"]["message"] and f"image={image}" in by_id["r3"]["message"]
    assert "exit code 3" in by_id["r21"]["message"] and "id=r21" in by_id["r21"]["message"]


def test_a_hung_row_is_a_timeout_reject(tmp_path, image_files):
    image = image_files["tiny_1x1.png"]
    t0 = time.monotonic()
    # a fresh worker's first row loads Pillow's plugins: on a busy machine that can take over a
    # second, so the limit here is not much tighter than that
    manifest, kept, rejects = run(
        tmp_path, rows_with(image, {10: "#hang"}), workers=2, row_timeout=2.5
    )
    # killed once with its batch, once alone; the other workers go on meanwhile
    assert time.monotonic() - t0 < 60
    assert [r["id"] for r in kept] == [f"r{i}" for i in range(40) if i != 10]
    [reject] = rejects
    assert reject["id"] == "r10" and reject["reason"] == "timeout"
    assert "2.5 s (--row-timeout)" in reject["message"] and f"image={image}" in reject["message"]


def test_a_slow_batch_is_not_a_timeout(tmp_path, image_files, monkeypatch):
    """The limit is per row: a batch of slow rows that each finish in time is not killed."""
    monkeypatch.setenv("POISON_SLOW", "0.8")
    rows = rows_with(image_files["tiny_1x1.png"], {i: "#slow" for i in range(5)}, n=5)
    manifest, kept, _ = run(tmp_path, rows, workers=1, row_timeout=2.5)  # 4 s for the batch
    assert manifest["counts"] == {**manifest["counts"], "out": 5, "rejected": 0}


def test_a_worker_killed_from_outside_loses_no_row(tmp_path, image_files, monkeypatch):
    """The batch of a worker killed mid-run is retried row by row: every row is still written."""
    monkeypatch.setenv("POISON_SLOW", "0.5")
    pid_file = tmp_path / "worker.pid"
    rows = rows_with(image_files["tiny_1x1.png"], {13: f"#pid:{pid_file}"})
    killed = []

    def killer():
        deadline = time.monotonic() + 60
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        pid = int(pid_file.read_text())
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    thread = threading.Thread(target=killer)
    thread.start()
    manifest, kept, rejects = run(tmp_path, rows, workers=2)
    thread.join()
    assert killed and killed[0] != os.getpid()
    assert [r["id"] for r in kept] == [f"r{i}" for i in range(40)] and rejects == []


def test_a_worker_that_dies_while_it_starts_is_replaced(tmp_path, image_files):
    from poison_stages import DieInSetup

    source = write_jsonl(tmp_path / "r.jsonl", rows_with(image_files["tiny_1x1.png"], {}))
    inputs = Inputs([str(source)], ReadOptions(batch_rows=8))
    manifest = run_pipeline(
        inputs, [DieInSetup(str(tmp_path / "died"))], OutputOptions(str(tmp_path / "a")), workers=1
    )
    assert manifest["counts"]["out"] == 40
    # a setup that always dies is not a row's fault: one line, after a few tries
    with pytest.raises(MmtokError, match="keep dying while they start.*SIGKILL"):
        run_pipeline(inputs, [DieInSetup()], OutputOptions(str(tmp_path / "b")), workers=1)


def test_a_bug_in_a_stage_still_stops_the_run_with_its_traceback(tmp_path, image_files):
    from test_pipeline import _Boom, _BoomAt

    source = write_jsonl(tmp_path / "r.jsonl", rows_with(image_files["tiny_1x1.png"], {}))
    with pytest.raises(_Boom) as error:
        run_pipeline(
            Inputs([str(source)], ReadOptions(batch_rows=8)),
            [_BoomAt(2)],
            OutputOptions(str(tmp_path / "out")),
            workers=2,
        )
    cause = str(error.value.__cause__)
    assert "in the worker process" in cause and "raise _Boom()" in cause


# Only regular files are opened as images ------------------------------------------------------


@pytest.fixture
def special_files(tmp_path, image_files):
    """A FIFO, a socket, a directory and a character device given as image paths."""
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    sock_path = tmp_path / "sock.jpg"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    (tmp_path / "folder.jpg").mkdir()
    rows = [
        {"id": "good", "image": str(image_files["rgb_640x480.png"])},
        {"id": "fifo", "image": str(fifo)},
        {"id": "socket", "image": str(sock_path)},
        {"id": "dir", "image": str(tmp_path / "folder.jpg")},
        {"id": "device", "image": "/dev/zero"},
    ]
    rows = [{**r, "caption": "a photo of a red square on a table"} for r in rows]
    yield write_jsonl(tmp_path / "special.jsonl", rows)
    sock.close()


EXPECTED = {
    "fifo": "named pipe (FIFO)",
    "socket": "socket",
    "dir": "directory",
    "device": "character device",
}


@pytest.mark.parametrize(
    "command",
    [
        ["probe"],
        ["probe", "--decode-check"],
        ["filter", "--min-side", "64"],
        ["estimate-budget", "--preset", "qwen2-vl"],
        ["tile", "--preset", "qwen2-vl"],
        ["dedup"],
    ],
    ids=lambda c: " ".join(c),
)
def test_only_regular_files_are_opened_as_images(special_files, tmp_path, command):
    out = tmp_path / "out"
    result = subprocess.run(
        [*MMTOK, command[0], str(special_files), *command[1:], "-o", str(out), "-q"],
        capture_output=True,
        text=True,
        timeout=120,  # the old code blocked on the FIFO forever
    )
    assert result.returncode == 0, result.stderr
    rejects = {r["id"]: r for r in pq.read_table(out / "__mmtok__" / "rejects.parquet").to_pylist()}
    assert set(rejects) == set(EXPECTED)
    for row_id, kind in EXPECTED.items():
        assert rejects[row_id]["reason"] == "read_error"
        assert kind in rejects[row_id]["message"]


# The process tree: parent death and Ctrl-C --------------------------------------------------


def children(pid: int) -> set[int]:
    """All descendants of `pid`, from /proc (psutil is not installed)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except FileNotFoundError:
            continue
        for tid in tasks:
            try:
                text = Path(f"/proc/{p}/task/{tid}/children").read_text()
            except FileNotFoundError:
                continue
            for child in map(int, text.split()):
                if child not in found:
                    found.add(child)
                    todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited


def survivors(pids: set[int], within: float) -> list[int]:
    deadline = time.monotonic() + within
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


@contextlib.contextmanager
def hung_run(tmp_path, image_files, workers=2):
    """A run whose workers all hang (row timeout 300 s), in its own process group; yields the
    process, its input and its descendants. Whatever the test does, nothing is left behind."""
    rows = rows_with(image_files["tiny_1x1.png"], {i: "#hang" for i in range(0, 40, 4)})
    source = write_jsonl(tmp_path / "hang.jsonl", rows)
    proc = subprocess.Popen(
        [*POISON, str(source), str(tmp_path / "out"), str(workers)],
        start_new_session=True,
        stderr=subprocess.PIPE,
        text=True,
    )
    family: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        while len(family) < workers + 1 and time.monotonic() < deadline:
            time.sleep(0.05)  # the workers and multiprocessing's resource tracker
            family = children(proc.pid)
        time.sleep(1)  # the workers set up and start on the hanging rows
        yield proc, source, family
    finally:
        for pid in [proc.pid, *family]:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_exit_when_their_parent_is_killed(tmp_path, image_files):
    with hung_run(tmp_path, image_files) as (proc, _, family):
        assert len(family) >= 3
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert not survivors(family, within=10), "processes outlived the killed parent"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_exits_at_once_leaves_no_worker_and_the_folder_resumes(
    tmp_path, image_files, presses
):
    with hung_run(tmp_path, image_files) as (proc, source, family):
        t0 = time.monotonic()
        for _ in range(presses):
            os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole group
            time.sleep(0.05)
        _, stderr = proc.communicate(timeout=30)
        assert time.monotonic() - t0 < 10
        # a second Ctrl-C may land after the message: Python then exits by SIGINT (130 too)
        assert proc.returncode in ((130,) if presses == 1 else (130, -signal.SIGINT)), stderr
        assert presses == 2 or "--resume" in stderr
        assert not survivors(family, within=5)
    state = tmp_path / ".out.mmtok-staging" / "state.json"
    assert state.exists() and not (tmp_path / "out").exists()
    # the same run resumes to a complete folder (the rows do not hang this time)
    subprocess.run(
        [*POISON, str(source), str(tmp_path / "out"), "2", "--resume"],
        check=True,
        env={**os.environ, "POISON_HANG": "0"},
    )
    manifest = json.loads((tmp_path / "out" / "__mmtok__" / "manifest.json").read_text())
    assert manifest["counts"]["out"] == 40


@pytest.mark.parametrize("command", ["probe", "filter", "estimate-budget", "tile", "dedup"])
def test_every_dataset_command_takes_row_timeout(command):
    from typer.testing import CliRunner

    from mmtok.cli.app import app

    result = CliRunner().invoke(app, [command, "--help"], terminal_width=200)
    assert result.exit_code == 0 and "--row-timeout" in result.output
