"""What mmtok does to the processes it owns: its workers, the server they are forked from, and
the `mmtok` executable.

Workers are forked from a server process (multiprocessing's forkserver) that has already
imported what every worker needs (pyarrow, numpy, Pillow, the stage modules): a fresh
interpreter per worker spends ~0.3 s of CPU importing the same modules, and with two workers
the second was ready ~0.3 s after the first on a 2-core machine. The server is a process of its
own, started by this one before it has any thread of its own (forking the main process itself,
with pyarrow's threads live, is unsafe). Elsewhere than on Linux, workers are spawned.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Iterator
from multiprocessing.context import BaseContext
from pathlib import Path

# Imported by the server before it forks any worker (`mmtok.engine.worker_server` first: it
# ties the server's life to this process). A module missing here is imported by each worker
# when it unpickles its stages, as with spawn.
PRELOAD = [
    "mmtok.engine.worker_server",
    "mmtok.engine.workers",
    "mmtok.io.sources.slices",
    "mmtok.io.sources.scan_pool",  # the schema scan of big JSON Lines files
    "mmtok.commands.budget",  # the shard statistics of estimate-budget
    "mmtok.stages.probe",
    "mmtok.stages.budget",
    "mmtok.stages.filter",
    "mmtok.stages.image_bytes",
    "mmtok.stages.signature",
    "mmtok.stages.tiles",
    # pyarrow imports it on the first numpy array it converts (`pa.array(ndarray)` checks for a
    # masked array): ~14 ms of each worker's first batch, once here instead
    "numpy.ma",
]


_SERVER_FROM_MAIN_THREAD = False  # set once the main thread has chosen the server
_SERVER_ENDED_AT_EXIT = False  # `_end_worker_server` registered


def worker_context() -> BaseContext:
    """The multiprocessing context workers start in: the forkserver on Linux, where the kernel
    ends the server and its workers with this process (`mmtok.engine.worker_server`)."""
    global _SERVER_FROM_MAIN_THREAD, _SERVER_ENDED_AT_EXIT
    if not sys.platform.startswith("linux"):
        return multiprocessing.get_context("spawn")
    # The server dies with the thread that starts it (PR_SET_PDEATHSIG), so only the main
    # thread starts it: a pool started first from another thread spawns its workers.
    if threading.current_thread() is threading.main_thread():
        _SERVER_FROM_MAIN_THREAD = True
    elif not _SERVER_FROM_MAIN_THREAD:
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    if not _SERVER_ENDED_AT_EXIT:
        _SERVER_ENDED_AT_EXIT = True
        atexit.register(_end_worker_server)
    return context


def _end_worker_server() -> None:
    """At exit, end the worker server and reap it, so that its CPU time and its workers' (it
    reaps them) count as this process's children: `time mmtok ...` and `getrusage` then see
    the whole run. (The kernel would end it anyway, as this process exits.)"""
    for pid in _children():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"multiprocessing.forkserver" in cmdline and b"mmtok.engine.worker_server" in cmdline:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)


def _children() -> set[int]:
    found: set[int] = set()
    with contextlib.suppress(OSError):
        for task in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError):
                found.update(map(int, Path(f"/proc/self/task/{task}/children").read_text().split()))
    return found


def start_worker_server() -> None:
    """Start the worker server now, without waiting for it: it imports its modules while this
    process does its own start-up (the `mmtok` executable calls this before it imports the
    command), and the first worker is then forked rather than started. Idempotent."""
    context = worker_context()
    if context.get_start_method() != "forkserver":
        return
    from multiprocessing import forkserver

    with sigint_blocked():  # the server starts with Ctrl-C blocked, then ignores it
        forkserver.ensure_running()


@contextlib.contextmanager
def sigint_blocked() -> Iterator[None]:
    """SIGINT blocked (a new process inherits the mask, across exec too) and Python's handler
    deferred: a blocked signal still reaches another thread of this process, whose handler
    would raise KeyboardInterrupt here in the middle of starting a process, with half its
    start-up data sent. A Ctrl-C that arrives meanwhile is raised again once it has started."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is None  # a handler from C code: leave it be
    ):
        yield  # only the main thread receives Python's signals
        return
    pending: list[int] = []
    handler = signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
        signal.signal(signal.SIGINT, handler)
        if pending:
            signal.raise_signal(signal.SIGINT)


def block_pandas() -> None:
    """Keep pyarrow from importing pandas in mmtok's own processes (its workers and the `mmtok`
    executable): pyarrow's conversions from Python values (`pa.array([1])`) import pandas if it
    is installed, to recognise its objects, which costs 0.3-1.4 s per process and is retried
    on every conversion while it fails. mmtok never hands pyarrow pandas objects and never uses
    pandas; with this, `import pandas` fails and `importlib.util.find_spec("pandas")` is None
    (libraries such as transformers then take pandas as not installed)."""
    if "pandas" in sys.modules:
        return
    sys.modules["pandas"] = None  # type: ignore[assignment]
    import pyarrow as pa

    # pyarrow's Python-side shim looks once, now: Cython's import hands it the None
    with contextlib.suppress(AttributeError, ImportError):
        pa.array([0])


def is_cli_process() -> bool:
    """Whether this process is the `mmtok` executable (not a library user's program)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None:
        return spec.name == "mmtok.__main__"
    entry = getattr(main, "main", None)
    return getattr(entry, "__module__", "").startswith("mmtok.cli")
