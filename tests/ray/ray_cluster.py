"""A real local Ray cluster for the Ray engine's tests: a head node and a second worker node on
this machine (one CPU each, no dashboard), started once per session, reached by its address as
a user's cluster would be, and always stopped at the end, even when a test fails.

Each `ray start --block` runs in the foreground, so stopping it (SIGTERM) stops exactly the
processes it started; `ray stop` would also stop other Ray clusters on this machine.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
# the local engine's poison stages (tests/engine/poison_stages.py), for the isolation parity
ENGINE_TESTS = HERE.parent / "engine"
DEDUP_TESTS = HERE.parent / "dedup"  # dedup_stages.py
for folder in (ENGINE_TESTS, DEDUP_TESTS):
    if str(folder) not in sys.path:
        sys.path.append(str(folder))
START_TIMEOUT = 90.0
STOP_TIMEOUT = 10.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    ray = Path(sys.executable).with_name("ray")
    process = subprocess.Popen(
        [str(ray), "start", "--block", "--disable-usage-stats", *args],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # a Ctrl-C in pytest reaches it only through our teardown
    )
    deadline = time.monotonic() + START_TIMEOUT
    while "Ray runtime started" not in log.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"`ray start {' '.join(args)}` failed:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    return process


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM lets `ray start --block` stop its node; what is left after a while (it may
    ignore the signal while a driver is connected) goes with SIGKILL to the node's process
    group, which holds exactly the processes this node started."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(STOP_TIMEOUT)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@pytest.fixture(scope="session")
def ray_address():
    """The address of a running two-node cluster; the test process connects as a driver."""
    pytest.importorskip("ray")
    import ray

    # A short path: Ray's unix sockets live under it (a socket path has ~107 characters).
    home = Path(tempfile.mkdtemp(prefix="mmtok-ray-"))
    env = {
        **os.environ,
        "HOME": str(home),  # Ray writes ~/.ray (an auth token); not the user's home
        # the workers import mmtok, and the tests' own stages (kill_stages.py, poison_stages.py,
        # dedup_stages.py)
        "PYTHONPATH": os.pathsep.join(
            [
                str(ROOT),
                str(HERE),
                str(ENGINE_TESTS),
                str(DEDUP_TESTS),
                os.environ.get("PYTHONPATH", ""),
            ]
        ),
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_worker_niceness": "0",  # Ray nices its workers (15): not on a shared machine
    }
    port = _free_port()
    address = f"127.0.0.1:{port}"
    nodes: list[subprocess.Popen] = []
    try:
        head = ["--head", "--num-cpus", "1", "--include-dashboard=false", "--port", str(port)]
        nodes.append(_start([*head, "--temp-dir", str(home / "t")], env, home / "head.log"))
        nodes.append(_start(["--address", address, "--num-cpus", "1"], env, home / "node.log"))
        yield address
    finally:
        ray.shutdown()  # the driver connection of the test process
        for node in reversed(nodes):
            _stop(node)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def ray_driver(ray_address, monkeypatch):
    """The test process connected to the session's cluster (HOME stays the cluster's, where
    its auth token is)."""
    import ray

    monkeypatch.setenv("RAY_ADDRESS", ray_address)
    if not ray.is_initialized():
        from mmtok.engine.ray_engine import connect

        connect(ray_address)
    return ray_address
