"""One worker process of the local executor: spawned, set up once, then fed batches over its
own pipe, one result back per batch in the order they were sent.

The parent therefore knows at every moment which batches each worker holds, and which one it is
running (the oldest without a result), so it can retry exactly those when the worker dies or
hangs. A shared counter, bumped after each row and each stage, tells a long batch (rows keep
finishing) from a hung row (nothing finishes for --row-timeout seconds).

A worker never outlives its parent: on Linux, where workers are forked from a server process
(`mmtok.engine.process`), the kernel kills the server when mmtok dies and each worker when the
server dies (PR_SET_PDEATHSIG); elsewhere workers are spawned and a thread watches the parent's
pid. Either way an idle worker also exits at end-of-file on its pipe.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import signal
import sys
import threading
import time
import traceback
import types
from collections import deque
from collections.abc import Iterator
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from mmtok.engine.process import block_pandas, is_cli_process, sigint_blocked
from mmtok.engine.stage import on_row_done
from mmtok.io.schema import conform
from mmtok.io.shard_writer import ShardSpec, SliceFiles, SliceParts

if TYPE_CHECKING:
    from mmtok.engine.local import Rows, StageChain
    from mmtok.io.sources.base import Slice
    from mmtok.io.sources.slices import SliceReader

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
COUNTER, STAGE = 0, 1  # the slots of the shared progress array
_STOP = object()  # ends a feeder thread


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker, attached as its `__cause__`."""

    def __str__(self) -> str:
        return str(self.args[0])


class Worker:
    """The parent's handle on one worker process."""

    def __init__(
        self,
        context: BaseContext,
        chain: StageChain,
        reader: SliceReader | None = None,
        spec: ShardSpec | None = None,
    ):
        self.progress = context.RawArray("q", 2)
        self.conn, child = context.Pipe()
        self.process = context.Process(
            target=_main,
            # the environment as it is now: a forked worker has the server's, from its start
            args=(child, chain, reader, spec, self.progress, os.getpid(), dict(os.environ)),
            name="mmtok-worker",
            daemon=True,  # also ended by multiprocessing's exit handler, whatever happens
        )
        # The worker starts with Ctrl-C blocked (the mask survives fork and exec; the server
        # is started blocked too): a terminal's SIGINT reaches the whole process group, and
        # one landing while the worker unpickles its start-up data would print a traceback.
        # The worker ignores SIGINT, then unblocks it; here, a Ctrl-C during the start is
        # raised once the worker has what it needs.
        try:
            with _light_main(), sigint_blocked():
                self.process.start()
            self._started(child)
        except BaseException:
            # a Ctrl-C raised as the mask is restored: no pool holds this worker yet, and one
            # left reading its start-up data would print an EOFError when this process exits
            with contextlib.suppress(Exception):
                self.process.kill()
            raise

    def _started(self, child: Connection) -> None:
        child.close()  # so the parent sees end-of-file when the worker dies
        self.ready = False  # set up and waiting for batches
        self.held: deque[Any] = deque()  # tasks sent and not answered, oldest (running) first
        self.rows_given = 0  # for Stage.recycle_after
        self.retiring = False  # takes no more work; replaced once it holds nothing
        self.seen = (-1, time.monotonic())  # the last progress value and when it was first seen
        # Sends happen on a thread: a worker hung in C code holding its GIL would block a send
        # from the main thread once the pipe's buffer is full, and nothing could time it out.
        self._outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._feeder = threading.Thread(target=self._feed, name="mmtok-feeder", daemon=True)
        self._feeder.start()

    def _feed(self) -> None:
        while (item := self._outbox.get()) is not _STOP:
            try:
                self.conn.send(item)
            except Exception:  # noqa: BLE001 - the worker is gone (its sentinel says so)
                return

    def give(self, task: Any, message: pa.Table | tuple, rows: int = 0) -> None:
        """Send a batch's rows (one result back), or ("rows", rows, slice index, row) for rows
        of a slice's batch run apart from it (`StageChain.for_slice`; one result back), or
        ("slice", slice, skip, index, substitutes): the worker reads the slice itself and sends
        a result per batch, then ("end", notes, written files). `rows`: the rows this gives
        it, at most (for `Stage.recycle_after`)."""
        if not self.held:  # an idle worker made no progress while it waited: start the clock now
            self.seen = (int(self.progress[COUNTER]), time.monotonic())
        self.held.append(task)
        self.rows_given += rows
        self._outbox.put(message)

    def stalled_for(self, now: float) -> float:
        """Seconds since the worker last finished a row or a stage of what it holds."""
        value = int(self.progress[COUNTER])
        if value != self.seen[0]:
            self.seen = (value, now)
        return now - self.seen[1]

    @property
    def stage(self) -> int:
        return int(self.progress[STAGE])

    def drain(self) -> list[tuple]:
        """The messages a dead worker sent before it died."""
        messages = []
        with contextlib.suppress(EOFError, OSError):
            while self.conn.poll():
                messages.append(self.conn.recv())
        return messages

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.process.kill()

    def stop(self) -> None:
        """End the worker at once: it holds no state worth a clean exit, and an interpreter with
        pyarrow loaded takes ~0.5 s to exit cleanly."""
        self.kill()
        self._outbox.put(_STOP)
        self.process.join()
        self._feeder.join(5)  # a send to the dead worker fails at once (broken pipe)
        self.conn.close()

    def exit_description(self) -> str:
        self.process.join()
        code = self.process.exitcode
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                return f"killed by {signal.Signals(-code).name}"
        return f"exit code {code}"


def _main(
    conn: Connection,
    chain: StageChain,
    reader: SliceReader | None,
    spec: ShardSpec | None,
    progress: Any,
    parent: int,
    environ: dict[str, str],
) -> None:
    server = sys.modules.get("mmtok.engine.worker_server")
    if server is not None:  # a fork of the worker server, which dies with `parent`
        parent = server.SERVER_PID
    die_with_parent(parent)
    if os.environ != environ:
        os.environ.clear()
        os.environ.update(environ)
    block_pandas()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent to handle
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked for the start
    try:
        chain.setup()
    except BaseException as e:  # noqa: BLE001 - sent to the parent, which raises it
        _send_error(conn, e)
        return

    def row_done() -> None:
        progress[COUNTER] += 1

    on_row_done(row_done)
    conn.send(("ready",))
    while True:
        try:
            task = conn.recv()
        except EOFError:  # the parent is gone
            return
        parts = None
        try:
            if isinstance(task, tuple) and task[0] == "rows":  # rows of a slice, run apart
                _, rows, index, row = task
                result = chain.for_slice(index, row)(rows, progress)
            elif isinstance(task, tuple):
                assert reader is not None
                _, part, skip, index, subs = task
                for message in slice_messages(
                    chain, reader, part, skip, progress, spec, index, subs
                ):
                    conn.send(message)
                row_done()
                continue
            else:
                result = chain(task, progress)
                if spec is not None:  # batches read by the parent, only counted: summaries
                    *result, parts = spec.summary(*result)
        except BaseException as e:  # noqa: BLE001 - a bug in a stage: the parent stops the run
            _send_error(conn, e)
            return
        row_done()
        conn.send(("done", tuple(result), parts))


def slice_messages(
    chain: StageChain,
    reader: SliceReader,
    part: Slice,
    skip: int = 0,
    progress: Any = None,
    spec: ShardSpec | None = None,
    index: int = 0,
    subs: dict[int, Rows] | None = None,
) -> Iterator[tuple]:
    """Read a slice and run the chain over each of its batches: a ("batch", kept, rejected,
    records, rows read, read stats, parts) message per batch as it is ready (so the parent
    knows which batch runs if this process dies), then ("end", notes, SliceOutput or None,
    parts).

    With `spec`, the kept rows and rejects go into this slice's own files and the messages
    carry only `spec.observed` of them (the kept rows' count when no column is observed); the
    summaries' parts of the slice are made here and sent with its end (`SliceParts`: a
    batch's `parts` is then [], or the parts so far every `part_rows` rows; None when the spec
    has no summaries).
    `subs`: batches (by number in the slice) whose result is already known, because the batch
    killed a worker and was run row by row since.
    Each batch runs with `chain.for_slice(index, rows read in the slice before it)`."""
    files = SliceFiles(spec, index) if spec is not None and spec.folder else None
    parts = SliceParts(spec) if spec is not None else None
    row = 0
    try:
        for number, batch in enumerate(reader.read(part)):
            first, row = row, row + batch.rows.num_rows
            if number < skip:  # read, not run (as `SliceReader.read(part, skip)` would)
                continue
            if subs and number in subs:
                kept, rejected = subs[number]
            else:
                kept, rejected = chain.for_slice(index, first)(batch.rows, progress)
                if batch.rejected is not None and batch.rejected.num_rows:
                    rejected = [conform(batch.rejected, chain.reject_schema), *rejected]
            if progress is not None:
                progress[COUNTER] += 1
            if files is not None:
                files.add(kept, rejected, batch.num_records)
            sent = None
            if spec is not None:
                assert parts is not None
                sent = parts.add(kept)
                kept, rejected = spec.observed(kept, rejected)
            yield (
                "batch", kept, rejected, batch.num_records, batch.rows.num_rows, batch.stats, sent
            )  # fmt: skip
        output = files.close() if files is not None else None
    finally:
        if files is not None:
            files.abort()
    yield ("end", reader.notes(part), output, parts.end() if parts is not None else None)


@contextlib.contextmanager
def _light_main() -> Iterator[None]:
    """Start a worker without importing the parent's `__main__` again when it is the `mmtok`
    executable: spawn re-runs the main script in the child (as `__mp_main__`), which for the
    installed `mmtok` script imports the whole CLI (Typer, rich, every command: ~1 s per
    worker). The worker needs only the stages it is sent, which import what they use."""
    main = sys.modules.get("__main__")
    if main is None or getattr(main, "__spec__", None) is not None or not is_cli_process():
        yield  # `python -m mmtok` is never re-imported; anything else may define stages
        return
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def _send_error(conn: Connection, error: BaseException) -> None:
    text = traceback.format_exc()
    try:
        conn.send(("error", error, text))
    except (pickle.PicklingError, TypeError, AttributeError):
        conn.send(("error", RuntimeError(f"{type(error).__name__}: {error}"), text))


def die_with_parent(parent: int) -> None:
    """End this process when `parent`, its parent process, dies (also if it already has)."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
            _watch_parent(parent)
    else:
        _watch_parent(parent)
    if os.getppid() != parent:  # the parent died before the kernel was told to watch it
        os._exit(1)


def _watch_parent(parent: int) -> None:
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, name="mmtok-parent-watch", daemon=True).start()
