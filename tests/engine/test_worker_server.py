"""Workers forked from a server that has loaded their modules (`mmtok.engine.process`): one
server per mmtok process, started before the pool; the workers see this process's environment
as it is when they start, and the whole tree dies with mmtok (test_isolation.py)."""

import json
import os
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import write_jsonl
from poison_stages import ReportProcess

from mmtok.engine.pipeline import OutputOptions, run_pipeline
from mmtok.engine.process import start_worker_server
from mmtok.io.sources import Inputs, ReadOptions

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forkserver, /proc")


def report(tmp_path, image_files, name: str, workers: int = 2) -> dict[str, list]:
    rows = [
        {"image": str(image_files["baseline_640x480.jpg"]), "caption": f"{i}"} for i in range(40)
    ]
    source = write_jsonl(tmp_path / f"{name}.jsonl", rows)
    out = tmp_path / name
    run_pipeline(
        Inputs([str(source)], ReadOptions(batch_rows=4)),
        [ReportProcess()],
        OutputOptions(str(out)),
        workers=workers,
    )
    return pq.read_table(out).to_pydict()


def test_workers_are_forks_of_one_server_that_loaded_their_modules(tmp_path, image_files):
    columns = report(tmp_path, image_files, "out")
    assert all(columns["from_server"])
    (server,) = set(columns["worker_parent"])  # one server for every worker
    assert server != os.getpid() and os.getpid() not in columns["worker_pid"]
    cmdline = Path(f"/proc/{server}/cmdline").read_bytes().replace(b"\0", b" ")
    assert b"multiprocessing.forkserver" in cmdline and b"mmtok.engine.workers" in cmdline
    assert f"PPid:\t{os.getpid()}\n" in Path(f"/proc/{server}/status").read_text()
    again = report(tmp_path, image_files, "again")  # the next run forks from the same server
    assert set(again["worker_parent"]) == {server}
    assert not set(again["worker_pid"]) & set(columns["worker_pid"])  # fresh workers


def test_a_forked_worker_sees_the_environment_of_its_start(tmp_path, image_files, monkeypatch):
    start_worker_server()  # it keeps the environment it started with
    monkeypatch.setenv("MMTOK_TEST_MARK", "before")
    assert set(report(tmp_path, image_files, "one")["mark"]) == {"before"}
    monkeypatch.setenv("MMTOK_TEST_MARK", "after")
    assert set(report(tmp_path, image_files, "two")["mark"]) == {"after"}
    monkeypatch.delenv("MMTOK_TEST_MARK")
    assert set(report(tmp_path, image_files, "three", workers=1)["mark"]) == {None}


THREAD_RUN = """
import sys, threading
sys.path.insert(0, {tests!r})
import pyarrow.parquet as pq
from poison_stages import ReportProcess
from mmtok.engine.pipeline import OutputOptions, run_pipeline
from mmtok.io.sources import Inputs, ReadOptions
def run():
    run_pipeline(Inputs([sys.argv[1]], ReadOptions(batch_rows=4)), [ReportProcess()],
                 OutputOptions(sys.argv[2]), workers=2)
thread = threading.Thread(target=run)
thread.start()
thread.join()
print(set(pq.read_table(sys.argv[2], columns=["from_server"]).column(0).to_pylist()))
"""


def test_a_pool_started_from_another_thread_spawns_its_workers(tmp_path, image_files):
    """The server would die with the thread that started it, and its workers with it: only the
    main thread starts it."""
    import subprocess

    rows = [{"image": str(image_files["baseline_640x480.jpg"]), "caption": "x"}] * 16
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    script = THREAD_RUN.format(tests=str(Path(__file__).parent))
    result = subprocess.run(
        [sys.executable, "-c", script, str(source), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "{False}"


REAPER = """
import ctypes, json, os, subprocess, sys
ctypes.CDLL(None).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER: orphans of the run come here
run = subprocess.run(sys.argv[1:], check=True, stdout=subprocess.PIPE, text=True)
orphans = []
while True:
    try:
        orphans.append(os.wait()[0])
    except ChildProcessError:
        break
print(run.stdout.strip(), json.dumps(orphans))
"""

SERVER_RUN = """
import sys
sys.path.insert(0, {tests!r})
import pyarrow.parquet as pq
from poison_stages import ReportProcess
from mmtok.engine.pipeline import OutputOptions, run_pipeline
from mmtok.io.sources import Inputs, ReadOptions
run_pipeline(Inputs([sys.argv[1]], ReadOptions(batch_rows=4)), [ReportProcess()],
             OutputOptions(sys.argv[2]), workers=2)
(server,) = set(pq.read_table(sys.argv[2], columns=["worker_parent"]).column(0).to_pylist())
print(server)
"""


def test_the_worker_server_is_reaped_by_the_process_that_started_it(tmp_path, image_files):
    """So that `time mmtok ...` and getrusage count the server's CPU and its workers' (the
    multiprocessing resource tracker is still left to the kernel, as it always was)."""
    import subprocess

    rows = [{"image": str(image_files["baseline_640x480.jpg"]), "caption": "x"}] * 16
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    script = SERVER_RUN.format(tests=str(Path(__file__).parent))
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            REAPER,
            sys.executable,
            "-c",
            script,
            str(source),
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    server, orphans = result.stdout.split(" ", 1)
    assert int(server) not in json.loads(orphans)
