"""The local executor: spawn-context worker processes that run a chain of stages over batches.

Results come back in input order whatever the worker count, and at most `max_in_flight`
batches are held at a time (two per worker by default), so memory does not grow with the input.

Isolation: a row whose decoder hangs or kills its process becomes a reject and the run goes on.
When a worker dies (segfault, the out-of-memory killer, `os._exit`) or makes no progress for
`row_timeout` seconds (then the parent kills it with SIGKILL), the batch it was running is
retried row by row, in fresh workers; the rows that pass are kept as usual, and the row that
fails again becomes a `decoder_crash` or `timeout` reject naming the row. The batches the worker
held but had not started are sent again as they were. An exception out of a stage is a bug and
still stops the run with its traceback.

With one worker, a chain with an isolating stage (`Stage.isolate`: stages that decode files)
still runs in one child process: it costs ~0.15 s of start-up, and a hang or crash can then
never stop the run. A chain without one (dedup's writing pass, which keeps state from batch to
batch) runs in the main process, with no start-up and no copies.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any

import pyarrow as pa

from mmtok.engine.stage import Stage
from mmtok.engine.workers import COUNTER, STAGE, RemoteTraceback, Worker
from mmtok.errors import MmtokError
from mmtok.io.schema import conform, make_rejects
from mmtok.reasons import Reason

# No row of an image or a short video takes minutes: decoding a 178-megapixel PNG (the largest
# under the pixel limit) takes a few seconds, tens on a loaded machine. Five minutes leaves wide
# room for slow disks and busy cores, while a hung row costs at most twice that (once in its
# batch, once alone).
DEFAULT_ROW_TIMEOUT = 300.0
TASKS_PER_WORKER = 2  # one running, one waiting in its pipe, so a worker never waits for work
MAX_FAILED_STARTS = 3  # then setup itself is broken (or memory is short), not one row

Rows = tuple[pa.Table, list[pa.Table]]  # kept rows, and the rejects of each stage


@dataclass
class BatchResult:
    kept: pa.Table  # in the output schema
    rejected: list[pa.Table]  # in the reject schema, one table per stage that rejected rows
    num_records: int  # input records this result accounts for


class StageChain:
    """Stages applied one after the other; kept rows flow on, rejects are collected."""

    def __init__(self, stages: list[Stage], output_schema: pa.Schema, reject_schema: pa.Schema):
        self.stages = stages
        self.output_schema = output_schema
        self.reject_schema = reject_schema

    @property
    def isolate(self) -> bool:
        return any(stage.isolate for stage in self.stages)

    @property
    def recycle_after(self) -> int | None:
        return min((s.recycle_after for s in self.stages if s.recycle_after), default=None)

    @property
    def row_retries(self) -> int:
        return max((stage.row_retries for stage in self.stages), default=0)

    def setup(self) -> None:
        for stage in self.stages:
            stage.setup()

    def __call__(self, rows: pa.Table, progress: Any = None) -> Rows:
        """`progress`: a worker's shared counters (which stage runs; bumped per stage)."""
        rejected = []
        for index, stage in enumerate(self.stages):
            if rows.num_rows == 0:
                break
            if progress is not None:
                progress[STAGE] = index
                progress[COUNTER] += 1
            result = stage.process(rows)
            rows = result.kept
            if result.rejected.num_rows:
                rejected.append(conform(result.rejected, self.reject_schema))
        return conform(rows, self.output_schema), rejected


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def run_local(
    batches: Iterable[tuple[pa.Table, pa.Table | None, int]],
    chain: StageChain,
    workers: int,
    max_in_flight: int | None = None,
    row_timeout: float | None = DEFAULT_ROW_TIMEOUT,
) -> Iterator[BatchResult]:
    """Run `chain` over `(rows, read_rejects, num_records)` batches; yield results in order.

    `row_timeout`: seconds a worker may go without finishing a row (None: no limit)."""
    if workers <= 1 and not chain.isolate:
        chain.setup()
        for rows, read_rejects, n in batches:
            kept, rejected = chain(rows)
            yield BatchResult(kept, _with_read_rejects(read_rejects, rejected, chain), n)
        return
    workers = max(workers, 1)
    pool = _Pool(chain, workers, row_timeout)
    try:
        yield from pool.run(batches, max_in_flight or TASKS_PER_WORKER * workers)
    finally:  # at the end, on Ctrl-C or on an error: nothing a worker runs is worth waiting for
        pool.close()


class _Slot:
    """One input batch, from the moment it is read until its result is yielded."""

    def __init__(self, rows: pa.Table, read_rejects: pa.Table | None, num_records: int):
        self.rows, self.read_rejects, self.num_records = rows, read_rejects, num_records
        self.result: Rows | None = None
        self._rows_left = 0
        self._row_results: list[Rows | None] = []

    def split(self) -> list[_Task]:
        """The batch failed as a whole: one task per row."""
        self._row_results = [None] * self.rows.num_rows
        self._rows_left = self.rows.num_rows
        return [_Task(self, i) for i in range(self.rows.num_rows)]

    def set_row(self, index: int, result: Rows) -> None:
        self._row_results[index] = result
        self._rows_left -= 1
        if self._rows_left == 0:
            parts = [r for r in self._row_results if r is not None]
            self.result = (
                pa.concat_tables([kept for kept, _ in parts]),
                [t for _, rejected in parts for t in rejected],
            )
            self._row_results = []

    def batch_result(self, chain: StageChain) -> BatchResult:
        assert self.result is not None
        kept, rejected = self.result
        return BatchResult(
            kept, _with_read_rejects(self.read_rejects, rejected, chain), self.num_records
        )


@dataclass
class _Task:
    slot: _Slot
    row: int | None = None  # None: the whole batch; else the one row retried alone
    retries: int = 0  # times this row failed alone and was sent again (Stage.row_retries)

    @property
    def rows(self) -> pa.Table:
        if self.row is None:
            return self.slot.rows
        # `take` copies the one row: a pickled slice would carry the whole batch's buffers
        return self.slot.rows.take([self.row])

    def finish(self, result: Rows) -> None:
        if self.row is None:
            self.slot.result = result
        else:
            self.slot.set_row(self.row, result)


class _Pool:
    def __init__(self, chain: StageChain, size: int, row_timeout: float | None):
        self.chain, self.row_timeout = chain, row_timeout
        self.context = multiprocessing.get_context("spawn")
        self.queue: deque[_Task] = deque()  # tasks not sent yet; retries go first
        self.failed_starts = 0  # workers in a row that died before they were set up
        self.workers: list[Worker] = []
        try:
            for _ in range(size):
                self.workers.append(Worker(self.context, chain))
        except BaseException:  # Ctrl-C or a stage that does not pickle: none is left behind
            self.close()
            raise

    def run(
        self, batches: Iterable[tuple[pa.Table, pa.Table | None, int]], max_in_flight: int
    ) -> Iterator[BatchResult]:
        pending: deque[_Slot] = deque()
        source = iter(batches)
        more = True
        while True:
            while more and len(pending) < max_in_flight:
                item = next(source, None)
                if item is None:
                    more = False
                    break
                slot = _Slot(*item)
                pending.append(slot)
                if slot.rows.num_rows == 0:  # nothing to run (every row rejected on reading)
                    slot.result = self.chain(slot.rows)
                else:
                    self.queue.append(_Task(slot))
                    self._dispatch()
            if pending and pending[0].result is not None:
                yield pending.popleft().batch_result(self.chain)
                continue
            if not pending:
                return
            self._dispatch()
            self._wait()

    def _retiring(self, worker: Worker) -> bool:
        limit = self.chain.recycle_after
        return limit is not None and worker.rows_given >= limit

    def _recycle(self, worker: Worker) -> None:
        """A worker given `Stage.recycle_after` rows is replaced once it holds nothing."""
        if self._retiring(worker) and not worker.held and worker in self.workers:
            worker.stop()
            self.workers[self.workers.index(worker)] = Worker(self.context, self.chain)

    def _dispatch(self) -> None:
        while self.queue:
            open_ = [w for w in self.workers if not self._retiring(w)]
            if not open_:  # all retire when their work is done; fresh ones take the rest
                return
            worker = min(open_, key=lambda w: len(w.held))
            if len(worker.held) >= TASKS_PER_WORKER:
                return
            task = self.queue.popleft()
            worker.give(task, task.rows)

    def _wait(self) -> None:
        owner: dict[Any, Worker] = {}
        for worker in self.workers:
            owner[worker.conn] = owner[worker.process.sentinel] = worker
        tick = None if self.row_timeout is None else min(1.0, self.row_timeout / 4)
        for ready in wait(list(owner), tick):
            worker = owner[ready]
            if (
                worker not in self.workers
            ):  # replaced a moment ago (its conn and sentinel both fired)
                continue
            if ready is worker.conn:
                try:
                    message = worker.conn.recv()
                except (EOFError, OSError):
                    self._lost(worker, Reason.DECODER_CRASH)
                    continue
                self._handle(worker, message)
                self._recycle(worker)
            else:
                self._lost(worker, Reason.DECODER_CRASH)
        if self.row_timeout is not None:
            now = time.monotonic()
            for worker in list(self.workers):
                if worker.ready and worker.held and worker.stalled_for(now) >= self.row_timeout:
                    worker.kill()
                    self._lost(worker, Reason.TIMEOUT)

    def _handle(self, worker: Worker, message: tuple) -> None:
        kind = message[0]
        if kind == "ready":
            worker.ready = True
            self.failed_starts = 0
            worker.seen = (-1, time.monotonic())
        elif kind == "done":
            worker.held.popleft().finish(message[1])
        else:  # "error": a stage raised, which is a bug or a bad configuration
            error, text = message[1], message[2]
            error.__cause__ = RemoteTraceback(f"\n\nin the worker process:\n{text}")
            raise error

    def _lost(self, worker: Worker, reason: Reason) -> None:
        """The worker died or was killed: retry what it held, in a fresh worker."""
        for message in worker.drain():  # results it sent before it died still count
            self._handle(worker, message)
        how = (
            f"no row finished in {self.row_timeout:g} s (--row-timeout); the worker was killed"
            if reason is Reason.TIMEOUT
            else f"the worker process died ({worker.exit_description()})"
        )
        worker.stop()
        if not worker.ready:  # it died in setup, before any row: start another, a few times
            self.failed_starts += 1
            if self.failed_starts > MAX_FAILED_STARTS:
                raise MmtokError(
                    f"worker processes keep dying while they start: {how}",
                    hint="out of memory? try fewer --workers",
                )
        self.workers[self.workers.index(worker)] = Worker(self.context, self.chain)
        if not worker.ready or not worker.held:
            self.queue.extendleft(reversed(worker.held))
            return
        running, *waiting = worker.held
        retry = running.slot.split() if running.row is None else []
        if running.row is not None and running.retries < self.chain.row_retries:
            running.retries += 1  # the stage may try it another way (sample-frames: PyAV)
            retry = [running]
        elif running.row is not None:  # it failed alone too: this row is the cause
            stage = self.chain.stages[worker.stage].name
            running.finish(_failed_row(self.chain, running.rows, stage, reason, how))
        self.queue.extendleft(reversed(retry + waiting))

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()  # all at once first, so a second Ctrl-C cannot leave any behind
        for worker in self.workers:
            worker.stop()


def _failed_row(chain: StageChain, row: pa.Table, stage: str, reason: Reason, how: str) -> Rows:
    image = row.column("image")[0].as_py() if "image" in row.column_names else None
    if image and image.get("path"):
        what = f"image={image['path']}"
    elif image and image.get("bytes") is not None:
        what = f"image=<{len(image['bytes']):,} bytes>"
    else:
        what = "image=none"
    row_id = row.column("id")[0].as_py() if "id" in row.column_names else None
    message = f"{how}, also with this row alone: id={row_id} {what}"
    rejected = make_rejects(row, stage, [str(reason)], [message])
    return chain.output_schema.empty_table(), [conform(rejected, chain.reject_schema)]


def _with_read_rejects(
    read_rejects: pa.Table | None, rejected: list[pa.Table], chain: StageChain
) -> list[pa.Table]:
    if read_rejects is not None and read_rejects.num_rows:
        return [conform(read_rejects, chain.reject_schema), *rejected]
    return rejected
