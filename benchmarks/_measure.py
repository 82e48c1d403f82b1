"""The whole-process measure the benchmarks share: a command in a fresh process, timed by the
wall clock, with the CPU time and the peak RSS of it and every process it started.

The command runs under a small wrapper that is a child subreaper (Linux): mmtok's worker server
outlives mmtok's main process by a moment (the kernel ends it when mmtok exits) and is then
reparented to the wrapper, which reaps it; its CPU and its workers' (which it reaped) then count.
A plain `getrusage(RUSAGE_CHILDREN)` after `subprocess.run` would miss them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

WRAPPER = """
import ctypes, json, os, resource, subprocess, sys, time
if sys.platform.startswith("linux"):
    ctypes.CDLL(None).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER
t = time.perf_counter()
done = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, text=True)
wall = time.perf_counter() - t
while True:  # the orphans of the command (its worker server), reaped here
    try:
        os.wait()
    except ChildProcessError:
        break
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"code": done.returncode, "stdout": done.stdout, "wall": wall,
                  "cpu": r.ru_utime + r.ru_stime, "peak_kb": r.ru_maxrss}))
"""


@dataclass
class Cost:
    wall: float  # seconds from start to exit of the command
    cpu: float  # seconds of CPU (user + system) of the command and every process it started
    peak_mb: float  # the peak RSS of its largest single process
    stdout: str


def command_cost(cmd: list[str], root: Path) -> Cost:
    """Run `cmd` in a fresh process with mmtok imported from `root`."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: compiled modules are cached
    result = subprocess.run(
        [sys.executable, "-c", WRAPPER, *cmd], capture_output=True, text=True, env=env, cwd=root
    )
    if result.returncode != 0:
        raise SystemExit(result.stderr[-2000:])
    figures = json.loads(result.stdout)
    if figures["code"] != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {figures['code']}:\n{result.stderr[-2000:]}")
    return Cost(figures["wall"], figures["cpu"], figures["peak_kb"] / 1024, figures["stdout"])
