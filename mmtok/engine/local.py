"""The local executor: worker processes (`mmtok.engine.process`) that run a chain of stages over
batches.

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
never stop the run. A chain without one (dedup's writing pass to stdout) runs in the main
process, with no start-up and no copies.

A stage that must know where its rows are in the input (dedup's writing pass) gets it from
`Stage.for_slice` before each batch read from a slice, here and in the workers, and for the
rows of such a batch retried alone (`_Slot.at`).

Written outputs (`run_slices` with a `ShardSpec`): each worker writes the files of the slices it
runs (`mmtok.io.shard_writer`) and sends back only small summaries. A worker that dies inside
such a slice leaves files that are never adopted: the batch it was running is retried row by
row as above, then the whole slice runs again with that batch's result given, so its files are
the same as if nothing had died.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from mmtok.engine.process import worker_context
from mmtok.engine.stage import Stage
from mmtok.engine.workers import COUNTER, STAGE, RemoteTraceback, Worker, slice_messages
from mmtok.errors import MmtokError
from mmtok.io.schema import conform, make_rejects
from mmtok.io.shard_writer import ShardSpec, SliceOutput, observed_table
from mmtok.io.sources.base import Slice, SourceBatch
from mmtok.reasons import Reason

if TYPE_CHECKING:
    from mmtok.io.sources.slices import SliceReader

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
    # where the batch was in the input: (slice index in the plan, batches of that slice done
    # with this one, rows read in this batch); None when the caller read the batches itself
    position: tuple[int, int, int] | None = None
    # the end of a slice whose rows the worker wrote itself (`run_slices` with a ShardSpec):
    # its files, to adopt as shards; the batch results before it carry only summaries
    written: SliceOutput | None = None
    # each mergeable summary's part of the kept rows (`ShardSpec.parts`), computed where the
    # batch ran; None: the observers see `kept` itself; []: the parts come with the end of the
    # batch's slice
    parts: list[Any] | None = None
    # the end of a slice run with a ShardSpec: no rows, its files (`written`, when the worker
    # wrote them) and the summaries' parts of all its batches (`parts`)
    end: bool = False


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

    def for_slice(self, index: int, row: int) -> StageChain:
        """The chain for a batch of slice `index` starting at its `row`-th row read
        (`Stage.for_slice`); itself when no stage cares."""
        stages = [stage.for_slice(index, row) for stage in self.stages]
        if all(new is old for new, old in zip(stages, self.stages, strict=True)):
            return self
        return StageChain(stages, self.output_schema, self.reject_schema)

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
    spec: ShardSpec | None = None,
) -> Iterator[BatchResult]:
    """Run `chain` over `(rows, read_rejects, num_records)` batches read by the caller; yield
    results in order. `row_timeout`: seconds a worker may go without finishing a row (None:
    no limit). `run_slices` is the fast path, where workers read their own input.

    `spec`, a ShardSpec without folder (rows only counted): the results carry `spec.summary`
    of each batch and its summaries' parts, made where the batch ran; a batch run row by row
    has the parts of its rows merged in order (the summaries are exact under any cut)."""
    assert spec is None or spec.folder is None
    units = (_Slot(*item) for item in batches)
    yield from _run(units, None, chain, workers, max_in_flight, row_timeout, spec)


def run_slices(
    reader: SliceReader,
    slices: Iterable[tuple[int, Slice, int]],
    chain: StageChain,
    workers: int,
    max_in_flight: int | None = None,
    row_timeout: float | None = DEFAULT_ROW_TIMEOUT,
    spec: ShardSpec | None = None,
    slice_rows: int | None = None,
) -> Iterator[BatchResult]:
    """Run `chain` over `(index, slice, batches to skip)` units: each worker reads its slices
    itself (the main process sends a few numbers and gets results back). Yields results in
    input order, each with its `position` (index, batches of that slice done); the read stats
    and notes of the workers are added to `reader`'s sources as results are yielded.

    With `spec` (`mmtok.io.shard_writer`), a worker also writes its slices' kept rows and
    rejects itself: the results carry only `spec.summary` of each batch, and each slice ends
    with a result whose `written` names its files.

    `slice_rows`: the most rows a slice holds, for a chain whose workers retire
    (`Stage.recycle_after`): a worker takes whole slices while they fit in its limit, then
    retires between two slices (unknown: one slice per worker)."""
    units = (_SliceUnit(index, part, skip, slice_rows) for index, part, skip in slices)
    # one more unit per worker than with batches: a slice that finished early waits for the
    # one before it, and its worker should not idle meanwhile
    max_in_flight = max_in_flight or (TASKS_PER_WORKER + 1) * max(workers, 1)
    yield from _run(units, reader, chain, workers, max_in_flight, row_timeout, spec)


def _run(
    units: Iterable[_Slot | _SliceUnit],
    reader: SliceReader | None,
    chain: StageChain,
    workers: int,
    max_in_flight: int | None,
    row_timeout: float | None,
    spec: ShardSpec | None = None,
) -> Iterator[BatchResult]:
    if workers <= 1 and not chain.isolate:
        chain.setup()
        for unit in units:
            if isinstance(unit, _Slot):
                unit.finish(chain(unit.rows), None, spec)
                yield unit.batch_result(chain)
                continue
            assert reader is not None
            messages = slice_messages(chain, reader, unit.part, unit.skip, None, spec, unit.index)
            number = unit.skip
            for message in messages:
                if message[0] == "batch":
                    _, kept, rejected, records, rows, stats, parts = message
                    number += 1
                    reader.merge(unit.part, stats, None)
                    position = (unit.index, number, rows)
                    kept = observed_table(kept)
                    yield BatchResult(kept, rejected, records, position, parts=parts)
                else:
                    _, notes, written, parts = message
                    reader.merge(unit.part, None, notes)
                    if written is not None or parts is not None:
                        yield _slice_end(written, parts)
        return
    workers = max(workers, 1)
    pool = _Pool(chain, workers, row_timeout, reader, spec)
    try:
        yield from pool.run(units, max_in_flight or TASKS_PER_WORKER * workers)
    finally:  # at the end, on Ctrl-C or on an error: nothing a worker runs is worth waiting for
        pool.close()


class _Slot:
    """One input batch, from the moment it is read until its result is yielded."""

    def __init__(
        self,
        rows: pa.Table,
        read_rejects: pa.Table | None,
        num_records: int,
        position: tuple[int, int, int] | None = None,
        stats: tuple[Slice, Any] | None = None,
        parent: tuple[_SliceUnit, int] | None = None,
        at: tuple[int, int] | None = None,
    ):
        self.rows, self.read_rejects, self.num_records = rows, read_rejects, num_records
        self.position, self.stats = position, stats
        # (slice, batch number): a batch that killed the worker writing its slice; its result
        # goes to the slice, which then runs again with it (never yielded on its own)
        self.parent = parent
        # (slice index, its row where this batch starts) of a batch read from a slice: its
        # rows retried alone run with `StageChain.for_slice` as they would in the slice
        self.at = at
        self.result: Rows | None = None
        self.parts: list[Any] | None = None  # of the summaries (`run_local` with a spec)
        self._rows_left = 0
        self._row_results: list[Rows | None] = []
        self._row_parts: list[list[Any] | None] = []

    @property
    def done(self) -> bool:
        return self.result is not None

    def split(self) -> list[_Task]:
        """The batch failed as a whole: one task per row."""
        self._row_results = [None] * self.rows.num_rows
        self._row_parts = [None] * self.rows.num_rows
        self._rows_left = self.rows.num_rows
        return [_Task(self, i) for i in range(self.rows.num_rows)]

    def finish(self, result: Rows, parts: list[Any] | None, spec: ShardSpec | None) -> None:
        """The whole batch's result; with `spec` (`run_local`), one made here (rows rejected
        before any stage, this process's own run) is summarised here."""
        if spec is not None and parts is None:
            *result, parts = spec.summary(*result)
        self.result, self.parts = tuple(result), parts  # type: ignore[assignment]

    def set_row(
        self,
        index: int,
        result: Rows,
        parts: list[Any] | None = None,
        spec: ShardSpec | None = None,
    ) -> None:
        if spec is not None and parts is None:  # a row that failed alone, made here
            *result, parts = spec.summary(*result)
        self._row_results[index] = tuple(result)  # type: ignore[assignment]
        self._row_parts[index] = parts
        self._rows_left -= 1
        if self._rows_left == 0:
            rows = [r for r in self._row_results if r is not None]
            self.result = (
                pa.concat_tables([kept for kept, _ in rows]),
                [t for _, rejected in rows for t in rejected],
            )
            if spec is not None:
                self.parts = _merged(self._row_parts)
            self._row_results, self._row_parts = [], []

    def batch_result(self, chain: StageChain) -> BatchResult:
        assert self.result is not None
        kept, rejected = self.result
        return BatchResult(
            kept,
            _with_read_rejects(self.read_rejects, rejected, chain),
            self.num_records,
            self.position,
            parts=self.parts,
        )


def _merged(row_parts: list[list[Any] | None]) -> list[Any] | None:
    """Each summary's parts of a batch's rows, merged in row order into one part (None: the
    spec has no summaries, only columns)."""
    rows = [p for p in row_parts if p is not None]
    if not rows:
        return None
    merged = [part.empty() for part in rows[0]]
    for parts in rows:
        for into, part in zip(merged, parts, strict=True):
            into.merge(part)
    return merged


class _SliceUnit:
    """One slice given to a worker whole: its batches' results arrive one by one, in order."""

    def __init__(self, index: int, part: Slice, skip: int = 0, rows: int | None = None):
        self.index, self.part, self.skip = index, part, skip
        self.rows = rows  # the most rows it holds (None: unknown), for Stage.recycle_after
        self.results: deque[tuple[BatchResult, Any]] = deque()  # (result, read stats)
        self.received = skip  # batches of the slice finished (results received)
        # batches whose results were queued: a slice run again from its start (its files are
        # written whole) sends those again, and they are not counted twice
        self.reported = skip
        self.subs: dict[int, Rows] = {}  # results of batches that were run row by row
        self.notes: dict[str, int] | None = None
        self.written: SliceOutput | None = None
        self.parts: list[Any] | None = None  # of the summaries, over the whole slice
        self.done = False

    @property
    def message(self) -> tuple:
        return ("slice", self.part, self.skip, self.index, self.subs)

    def add(
        self,
        kept: pa.Table | int,
        rejected: list[pa.Table],
        n: int,
        rows: int,
        stats: Any,
        parts: list[Any] | None = None,
    ) -> None:
        self.received += 1
        if self.received <= self.reported:
            return
        self.reported = self.received
        position = (self.index, self.received, rows)
        kept = observed_table(kept)
        self.results.append((BatchResult(kept, rejected, n, position, parts=parts), stats))


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

    @property
    def message(self) -> pa.Table | tuple:
        if self.slot.at is None:
            return self.rows
        index, row = self.slot.at
        return ("rows", self.rows, index, row + (self.row or 0))

    def finish(
        self, result: Rows, parts: list[Any] | None = None, spec: ShardSpec | None = None
    ) -> None:
        if self.row is None:
            self.slot.finish(result, parts, spec)
        else:
            self.slot.set_row(self.row, result, parts, spec)


class _Pool:
    def __init__(
        self,
        chain: StageChain,
        size: int,
        row_timeout: float | None,
        reader: SliceReader | None = None,
        spec: ShardSpec | None = None,
    ):
        self.chain, self.row_timeout, self.reader, self.spec = chain, row_timeout, reader, spec
        self.context = worker_context()
        self.queue: deque[_Task | _SliceUnit] = deque()  # tasks not sent yet; retries go first
        self.pending: deque[_Slot | _SliceUnit] = deque()  # every unit not yielded, in order
        self.failed_starts = 0  # workers in a row that died before they were set up
        self.workers: list[Worker] = []
        try:
            for _ in range(size):
                self.workers.append(self._new_worker())
        except BaseException:  # Ctrl-C or a stage that does not pickle: none is left behind
            self.close()
            raise

    def _new_worker(self) -> Worker:
        return Worker(self.context, self.chain, self.reader, self.spec)

    def run(self, units: Iterable[_Slot | _SliceUnit], max_in_flight: int) -> Iterator[BatchResult]:
        pending = self.pending
        source = iter(units)
        more = True
        while True:
            while more and len(pending) < max_in_flight:
                unit = next(source, None)
                if unit is None:
                    more = False
                    break
                pending.append(unit)
                if isinstance(unit, _Slot) and unit.rows.num_rows == 0:
                    # nothing to run: every row rejected
                    unit.finish(self.chain(unit.rows), None, self._batch_spec)
                elif isinstance(unit, _Slot):
                    self.queue.append(_Task(unit))
                else:
                    self.queue.append(unit)
                self._dispatch()
            if pending:
                head = pending[0]
                if isinstance(head, _Slot):
                    if head.done:
                        pending.popleft()
                        if head.stats is not None and self.reader is not None:
                            self.reader.merge(head.stats[0], head.stats[1], None)
                        yield head.batch_result(self.chain)
                        continue
                elif head.results:
                    result, stats = head.results.popleft()
                    if self.reader is not None:
                        self.reader.merge(head.part, stats, None)
                    yield result
                    continue
                elif head.done:
                    pending.popleft()
                    if head.notes and self.reader is not None:
                        self.reader.merge(head.part, None, head.notes)
                    if head.written is not None or head.parts is not None:
                        yield _slice_end(head.written, head.parts)
                    continue
            if not pending:
                return
            self._dispatch()
            self._wait()

    def _rows(self, task: _Task | _SliceUnit) -> int:
        """The rows a task gives its worker, at most (for `Stage.recycle_after`)."""
        if isinstance(task, _SliceUnit):
            return task.rows if task.rows is not None else self.chain.recycle_after or 0
        return 1 if task.row is not None else task.slot.rows.num_rows

    def _recycle(self, worker: Worker) -> None:
        """A worker past `Stage.recycle_after` rows is replaced once it holds nothing."""
        if worker.retiring and not worker.held and worker in self.workers:
            worker.stop()
            self.workers[self.workers.index(worker)] = self._new_worker()

    def _dispatch(self) -> None:
        limit = self.chain.recycle_after
        while self.queue:
            task = self.queue[0]
            rows = self._rows(task)
            if limit is not None:  # a fresh worker takes any task, a used one what fits
                for worker in list(self.workers):
                    if worker.rows_given and worker.rows_given + rows > limit:
                        worker.retiring = True
                        self._recycle(worker)
            open_ = [w for w in self.workers if not w.retiring]
            if not open_:  # all retire when their work is done; fresh ones take the rest
                return
            worker = min(open_, key=lambda w: len(w.held))
            if len(worker.held) >= TASKS_PER_WORKER:
                return
            self.queue.popleft()
            worker.give(task, task.message, rows)
            if limit is not None and worker.rows_given >= limit:
                worker.retiring = True

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
            self._finish(worker.held.popleft(), message[1], message[2])
        elif kind == "batch":  # one batch of the slice the worker is reading
            worker.held[0].add(*message[1:])
        elif kind == "end":  # the end of that slice
            unit = worker.held.popleft()
            unit.notes, unit.written, unit.parts = message[1:]
            unit.done = True
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
        self.workers[self.workers.index(worker)] = self._new_worker()
        if not worker.ready or not worker.held:
            self.queue.extendleft(reversed(worker.held))
            return
        running, *waiting = worker.held
        retry: list[_Task | _SliceUnit] = []
        if isinstance(running, _SliceUnit) and self.spec is not None:
            retry = self._rerun_slice(running)
        elif isinstance(running, _SliceUnit):
            retry = self._split_slice(running)
        elif running.row is None:
            retry = list(running.slot.split())
        elif running.retries < self.chain.row_retries:
            running.retries += 1  # the stage may try it another way (sample-frames: PyAV)
            retry = [running]
        else:  # it failed alone too: this row is the cause
            stage = self.chain.stages[worker.stage].name
            self._finish(running, _failed_row(self.chain, running.rows, stage, reason, how))
        self.queue.extendleft(reversed(retry + waiting))

    @property
    def _batch_spec(self) -> ShardSpec | None:
        """`run_local`'s spec (batches summarised where they run), None for slices."""
        return self.spec if self.reader is None else None

    def _finish(self, task: _Task, result: Rows, parts: list[Any] | None = None) -> None:
        task.finish(result, parts, self._batch_spec)
        slot = task.slot
        if slot.parent is not None and slot.done:  # the slice can run again, with this batch
            unit, number = slot.parent
            kept, rejected = slot.result  # type: ignore[misc]
            unit.subs[number] = (kept, _with_read_rejects(slot.read_rejects, rejected, self.chain))
            self.queue.appendleft(unit)

    def _rerun_slice(self, unit: _SliceUnit) -> list[_Task | _SliceUnit]:
        """A worker died inside a slice it was writing: its files are incomplete, so the slice
        runs again from its start (overwriting them), once the batch that was running has been
        run row by row in fresh workers (`_Slot.parent`); the new run takes that batch's result
        as it is (`_SliceUnit.subs`), so the slice's files are as if no worker had died.
        The batches already reported are not reported twice (`_SliceUnit.reported`)."""
        assert self.reader is not None
        number = unit.received
        unit.received = unit.skip
        if number in unit.subs:  # it died outside the stages: run the slice again as it is
            return [unit]
        batch, row = read_batch(self.reader, unit.part, number)
        if batch is None:  # it died after its last batch
            return [unit]
        at = (unit.index, row)
        slot = _Slot(batch.rows, batch.rejected, batch.num_records, parent=(unit, number), at=at)
        if batch.rows.num_rows == 0:
            slot.result = self.chain(batch.rows)
            result = slot.batch_result(self.chain)
            unit.subs[number] = (result.kept, result.rejected)
            return [unit]
        return list(slot.split())

    def _split_slice(self, unit: _SliceUnit) -> list[_Task | _SliceUnit]:
        """A worker died inside a slice: the batch it was running is read here and retried row
        by row; the rest of the slice is a new unit. Both take the unit's place in the order."""
        assert self.reader is not None
        unit.done = True  # it ends with the batches already received
        batch, row = read_batch(self.reader, unit.part, unit.received)
        if batch is None:  # it died after its last batch
            return []
        rest = _SliceUnit(unit.index, unit.part, unit.received + 1, unit.rows)
        position = (unit.index, unit.received + 1, batch.rows.num_rows)
        stats = (unit.part, batch.stats)
        at = (unit.index, row)
        slot = _Slot(batch.rows, batch.rejected, batch.num_records, position, stats, at=at)
        at = self.pending.index(unit) + 1
        self.pending.insert(at, rest)
        self.pending.insert(at, slot)
        if batch.rows.num_rows == 0:
            slot.result = self.chain(batch.rows)
            return [rest]
        return [*slot.split(), rest]

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()  # all at once first, so a second Ctrl-C cannot leave any behind
        for worker in self.workers:
            worker.stop()


def read_batch(reader: SliceReader, part: Slice, number: int) -> tuple[SourceBatch | None, int]:
    """Batch `number` of a slice (None past its end), and the rows read in the slice before it
    (where it starts, for `StageChain.for_slice`)."""
    row = 0
    for n, batch in enumerate(reader.read(part)):
        if n == number:
            return batch, row
        row += batch.rows.num_rows
    return None, row


def _slice_end(output: SliceOutput | None, parts: list[Any] | None) -> BatchResult:
    """The end of a slice run with a ShardSpec: no rows, the files to adopt (if the worker
    wrote any) and the summaries' parts of the slice."""
    return BatchResult(pa.table({}), [], 0, None, output, parts, end=True)


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
