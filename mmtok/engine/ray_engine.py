"""The Ray engine (`engine="ray"`, `pip install 'mmtok[ray]'`): the local executor's stage
chain as Ray tasks, each reading its own slice of the inputs; the model stage (a device stage,
see `mmtok.models.runtime`) in a pool of Ray actors. Imported only when a run asks for Ray.

The unit of work is a slice (`mmtok.io.sources.slices`): the driver sends a slice descriptor
(a few numbers) and the shared `SliceReader` (once, through the object store); a task reads the
slice's batches, runs the chain over them, and returns one result per batch with its read
stats. The driver yields the results in input order, each with its position (slice, batches
done, rows read), so `--resume` restarts where the local engine would. Inputs that only give
batches (a random sample, an older state file) are read by the driver and sent batch by batch.

Written outputs (`spec`, a `ShardSpec`), as the local workers (mmtok/io/shard_writer.py): a
slice task writes its slice's files into the dataset's staging folder itself and returns only
the summaries (`ShardSpec.summary`) and the finished files (`SliceOutput`); the driver adopts
them in input order (`DatasetSink.adopt`), so a Ray run gives the same shard files, byte for
byte, as a local run. The staging folder is inside the output folder, which every node of a
local cluster sees; on a cluster of several machines `-o` must be on a filesystem they all
mount (NFS, Lustre...): a task that cannot see the folder stops the run with one line.
Otherwise (a model stage, sampled inputs) mmtok's own sink writes and commits the rows the
tasks return (staging, manifest, rename), never Ray's writers, which have no commit protocol
(design/engine.md §2).

Isolation, as the local engine (mmtok/engine/local.py): a row that kills its worker process
(segfault, `os._exit`, the out-of-memory killer) or makes no progress for `row_timeout`
seconds (the driver then cancels its task with `ray.cancel(force=True)`, which kills the
worker) becomes a `decoder_crash` or `timeout` reject naming the row, and every other row is
kept. Ray does not retry the tasks itself (`max_retries=0`): the driver knows more. Each task
reports to a small actor (`_Beats`) when it starts a batch (synchronously) and, at most every
`BEAT_SECONDS`, when rows or stages finish, so the driver knows which batch a dead task was
running and which task stalled. A slice that failed becomes: the batches before the failing
one, again as a slice task; the failing batch, read by the driver and retried row by row in
fresh tasks; the rest of the slice as a new slice task. A slice whose task was writing its files
runs again whole instead (its files are incomplete), once its failing batch has been retried
row by row, with that batch's result given (as `_Pool._rerun_slice` does locally), so its files
are those of a run in which nothing died. A row that fails alone is the cause.
A task that dies before it starts a batch (in `setup`) is sent again, a few times. An exception
out of a stage is a bug and stops the run with its traceback.

Traps handled (design/engine.md): CPU stages are tasks, the model an actor pool whose
resources differ (`memory`), so Ray does not fuse the decoding into the GPU actors; a GPU
request the cluster cannot satisfy fails before any work instead of hanging.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import socket
import sys
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from mmtok.engine.local import (
    DEFAULT_ROW_TIMEOUT,
    MAX_FAILED_STARTS,
    BatchResult,
    Rows,
    StageChain,
    _failed_row,
    _slice_end,
    _with_read_rejects,
    read_batch,
)
from mmtok.engine.stage import Stage, on_row_done
from mmtok.engine.workers import COUNTER, STAGE
from mmtok.errors import MmtokError
from mmtok.io.shard_writer import (
    ShardSpec,
    SliceFiles,
    SliceOutput,
    SliceParts,
    observed_table,
)
from mmtok.io.sources.base import Slice
from mmtok.reasons import Reason

if TYPE_CHECKING:
    from mmtok.io.sources.slices import SliceReader

RAY_INSTALL = "pip install 'mmtok[ray]'"
MODEL_ACTOR_MEMORY = 1 << 30  # reserved per model actor; also keeps CPU stages out of it
MAX_ACTOR_RESTARTS = 3  # a model actor that dies is restarted (and its batch retried) this often
TASKS_PER_CPU = 2  # one running, one queued, so a worker never waits for work
BEAT_SECONDS = 0.5  # at most this often a task reports finished rows (and 10 per row timeout)


@dataclass(frozen=True)
class RayOptions:
    """How a run uses the cluster. `gpus_per_actor`: GPUs per model actor (fractional packs
    several small models on one GPU; default 1 when the model stage runs on CUDA, else 0).
    `model_actors`: size of the model actor pool (default: as many as the cluster's GPUs allow,
    1 on CPU). `cpus_per_task`: CPUs each CPU-stage task reserves."""

    gpus_per_actor: float | None = None
    model_actors: int | None = None
    cpus_per_task: float = 1.0


def require_ray() -> None:
    """Fail in one line, before any work, when Ray is not installed."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise MmtokError(
            f"the Ray engine needs Ray, which is not installed: {RAY_INSTALL}"
        ) from None


def connect(address: str | None) -> Any:
    """The `ray` module, connected: to `address` (a running cluster: `host:port` or `auto`),
    or to a new local Ray when None (or RAY_ADDRESS when set). An open connection is reused."""
    require_ray()
    import ray

    if not ray.is_initialized():
        try:
            ray.init(
                address=address,
                logging_level=logging.WARNING,
                log_to_driver=False,  # workers' logs would mix with -o - (data on stdout)
                include_dashboard=False if address is None else None,
            )
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise MmtokError(
                f"cannot connect to the Ray cluster at {address}: {e}",
                hint="start one with `ray start --head`, or leave out --ray-address for a "
                "local Ray",
            ) from None
    return ray


# --- in the workers ---------------------------------------------------------------------------

# One set-up chain per worker process and run: Ray reuses a task's worker process for the next
# tasks of the same function, so `setup()` (models, decoders) runs once per process.
_CHAINS: dict[str, StageChain] = {}


def _set_up(chain: StageChain, run: str) -> StageChain:
    if run not in _CHAINS:
        _CHAINS.clear()  # an earlier run's stages are done with
        chain.setup()
        _CHAINS[run] = chain
    return _CHAINS[run]


class _Beats:
    """A Ray actor (no CPU): when each running task last made progress, at which stage and
    batch. Its own clock times them all, so nodes' clocks need not agree."""

    def __init__(self) -> None:
        self.seen: dict[int, tuple[float, int, int]] = {}  # key: (time, stage, batch)

    def beat(self, key: int, stage: int, batch: int) -> None:
        self.seen[key] = (time.monotonic(), stage, batch)

    def report(self, keys: list[int]) -> dict[int, tuple[float, int, int]]:
        """(seconds since the last beat, stage, batch) of those of `keys` that started."""
        now = time.monotonic()
        return {k: (now - t, s, b) for k in keys if k in self.seen for t, s, b in [self.seen[k]]}

    def forget(self, keys: list[int]) -> None:
        for key in keys:
            self.seen.pop(key, None)


class _Progress:
    """What the chain and `RowStage` report in a task (the local workers' shared counters, see
    `StageChain.__call__`), passed on to `_Beats`: a new batch and a new stage at once and
    synchronously (so the driver knows where a task that dies was), finished rows at most
    every `every` seconds."""

    def __init__(self, beats: Any, key: int, every: float):
        self.beats, self.key, self.every = beats, key, every
        self.values = [0, 0]  # COUNTER, STAGE
        self.batch = 0
        self.last = 0.0

    def __getitem__(self, slot: int) -> int:
        return self.values[slot]

    def __setitem__(self, slot: int, value: int) -> None:
        changed = self.values[slot] != value
        self.values[slot] = value
        self.beat(force=slot == STAGE and changed)

    def start_batch(self, batch: int) -> None:
        import ray

        self.batch, self.last = batch, time.monotonic()
        ray.get(self.beats.beat.remote(self.key, self.values[STAGE], batch))

    def beat(self, force: bool = False) -> None:
        """`force`: now, and synchronously (a new stage: the reject of a row that kills its
        process names the stage it died in)."""
        now = time.monotonic()
        if force or now - self.last >= self.every:
            self.last = now
            sent = self.beats.beat.remote(self.key, self.values[STAGE], self.batch)
            if force:
                import ray

                ray.get(sent)

    def row_done(self) -> None:
        self.values[COUNTER] += 1
        self.beat()


@contextlib.contextmanager
def _reporting(progress: _Progress) -> Iterator[None]:
    on_row_done(progress.row_done)
    try:
        yield
    finally:
        on_row_done(None)


def _slice_task(
    reader: SliceReader,
    chain: StageChain,
    run: str,
    part: Slice,
    skip: int,
    count: int | None,
    beats: Any,
    key: int,
    every: float,
    spec: ShardSpec | None = None,
    index: int = 0,
    subs: dict[int, Rows] | None = None,
) -> tuple[list[tuple], dict[str, int], SliceOutput | None, list[Any] | None]:
    """Read `count` batches (None: all) of `part` after the first `skip`, run the chain over
    each: (kept, rejects, records, rows read, read stats, summary parts) per batch, the
    source's notes, and with `spec` the slice's finished files and the summaries' parts not
    sent with a batch (`mmtok.engine.workers.slice_messages`, as a Ray task: the batches then
    carry only `spec.observed`, and parts as `SliceParts` sends them). `subs`: batches (by
    number) whose result is known, because they killed a task and were run row by row since."""
    files = None
    if spec is not None and spec.folder is not None:
        if not os.path.isdir(spec.folder):
            raise MmtokError(
                f"a Ray task on {socket.gethostname()} cannot see the output's staging folder "
                f"{spec.folder}: with the Ray engine on several machines, -o must be on a "
                "filesystem every node mounts (NFS, Lustre...)"
            )
        files = SliceFiles(spec, index)
    chain = _set_up(chain, run)
    progress = _Progress(beats, key, every)
    out = []
    parts = SliceParts(spec) if spec is not None else None
    row = 0  # rows read in the slice before the batch (`StageChain.for_slice`)
    try:
        with _reporting(progress):
            end = None if count is None else skip + count
            for number, batch in enumerate(itertools.islice(reader.read(part), end)):
                first, row = row, row + batch.rows.num_rows
                if number < skip:  # read, not run (as `SliceReader.read(part, skip)` would)
                    continue
                progress.start_batch(number)
                if subs and number in subs:
                    kept, rejected = subs[number]
                else:
                    kept, rejected = chain.for_slice(index, first)(batch.rows, progress)
                    rejected = _with_read_rejects(batch.rejected, rejected, chain)
                if files is not None:
                    files.add(kept, rejected, batch.num_records)
                sent = None
                if spec is not None:
                    assert parts is not None
                    sent = parts.add(kept)
                    kept, rejected = spec.observed(kept, rejected)
                out.append(
                    (kept, rejected, batch.num_records, batch.rows.num_rows, batch.stats, sent)
                )
        output = files.close() if files is not None else None
    finally:
        if files is not None:
            files.abort()
    return out, reader.notes(part), output, parts.end() if parts is not None else None


def _batch_task(
    chain: StageChain,
    run: str,
    rows: pa.Table,
    beats: Any,
    key: int,
    every: float,
    at: tuple[int, int] | None = None,
) -> Rows:
    """The chain over one batch, or one row of a batch that failed; `at`: (slice index, row)
    where the rows start, for those of a slice's batch (`StageChain.for_slice`)."""
    chain = _set_up(chain, run)
    if at is not None:
        chain = chain.for_slice(*at)
    progress = _Progress(beats, key, every)
    with _reporting(progress):
        progress.start_batch(0)
        return chain(rows, progress)


class _ModelActor:
    """The device stage in a Ray actor: set up once, then one model batch per call."""

    def __init__(self, stage: Stage, worker_schema: pa.Schema, share: int = 1):
        if getattr(stage, "device", "cpu").startswith("cuda"):
            stage.device = "cuda:0"  # Ray sets CUDA_VISIBLE_DEVICES to this actor's GPU
        else:
            _cpu_model_threads(share)
        stage.setup()
        stage.output_schema(worker_schema)  # sets the stage's reject schema
        self.stage = stage

    def process(self, rows: pa.Table) -> tuple[pa.Table, pa.Table, dict[str, int]]:
        """Kept rows, rejects, and the stage's batch size and halvings since it started (an
        automatic batch size halves on out-of-memory, `DeviceStage._forward_in_chunks`)."""
        result = self.stage.process(rows)
        return result.kept, result.rejected, _batching(self.stage)


def _cpu_model_threads(share: int) -> None:
    """A model on the CPU gets torch's own thread count back: Ray sets OMP_NUM_THREADS to an
    actor's `num_cpus` (1 for this one, which reserves none), so torch would run it on one
    core, slower than the local engine's model and with other float sums (a convolution's
    reduction order follows its threads: detokenize's pixels then differ in the last level).
    Torch's default without the variable is OpenMP's: one thread per CPU this process may run
    on (libgomp), as in the local engine's main process; `share`: model actors that may share
    this node."""
    import torch

    affinity = getattr(os, "sched_getaffinity", None)  # Linux; elsewhere all the CPUs
    cpus = len(affinity(0)) if affinity is not None else os.cpu_count() or 1
    torch.set_num_threads(max(1, cpus // share))


# --- in the driver ----------------------------------------------------------------------------


@dataclass
class _Batch:
    """One batch the driver holds (read here, or the failing batch of a slice), from the moment
    it is read until its result is yielded; retried row by row once it failed whole."""

    rows: pa.Table
    read_rejects: pa.Table | None
    num_records: int
    position: tuple[int, int, int] | None = None
    stats: tuple[Slice, Any] | None = None  # (its slice, its read stats), merged when yielded
    # (slice, batch number): a batch that killed the task writing its slice; its result goes
    # to the slice, which then runs again with it (never yielded on its own)
    parent: tuple[_Slice, int] | None = None
    at: tuple[int, int] | None = None  # (slice index, its row where this batch starts)
    result: Rows | None = None
    row_results: list[Rows | None] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.result is not None

    def split(self) -> list[_Job]:
        self.row_results = [None] * self.rows.num_rows
        return [_Job(self, row=i) for i in range(self.rows.num_rows)]

    def set_row(self, index: int, result: Rows) -> None:
        self.row_results[index] = result
        if all(r is not None for r in self.row_results):
            parts = [r for r in self.row_results if r is not None]
            self.result = (
                pa.concat_tables([kept for kept, _ in parts]),
                [t for _, rejected in parts for t in rejected],
            )
            self.row_results = []


@dataclass
class _Slice:
    """Batches of one slice, read by a task: `count` of them (None: to the end) after `skip`."""

    index: int
    part: Slice
    skip: int
    count: int | None = None
    results: list[tuple] | None = None  # the task's, once it finished
    notes: dict[str, int] | None = None
    written: SliceOutput | None = None  # its files, when its task wrote them
    parts: list[Any] | None = None  # the summaries' parts of its batches, with a ShardSpec
    subs: dict[int, Rows] = field(default_factory=dict)  # batches run row by row since

    @property
    def done(self) -> bool:
        return self.results is not None


@dataclass
class _Job:
    """A task to run: a whole slice, a whole batch, or one row of a batch."""

    unit: _Slice | _Batch
    row: int | None = None
    retries: int = 0  # times this row failed alone and was sent again (Stage.row_retries)
    key: int = 0  # this attempt's name in `_Beats`

    @property
    def rows(self) -> pa.Table:
        assert isinstance(self.unit, _Batch)
        if self.row is None:
            return self.unit.rows
        return self.unit.rows.take([self.row])  # a copy: a slice would ship the whole batch

    @property
    def at(self) -> tuple[int, int] | None:
        """Where its rows start in their slice, for a batch read from one."""
        assert isinstance(self.unit, _Batch)
        if self.unit.at is None:
            return None
        index, row = self.unit.at
        return index, row + (self.row or 0)


def _crash_errors(ray: Any) -> tuple[type[BaseException], ...]:
    """What Ray raises for a task whose worker process died (or whose node did)."""
    names = (
        "WorkerCrashedError",
        "OutOfMemoryError",
        "NodeDiedError",
        "LocalRayletDiedError",
        "TaskCancelledError",
    )
    return tuple(getattr(ray.exceptions, n) for n in names if hasattr(ray.exceptions, n))


class _Driver:
    """Sends jobs to the cluster, at most `max_running` at a time, and yields the results of the
    units in input order; isolates the rows that kill or hang their task."""

    def __init__(
        self,
        ray: Any,
        chain: StageChain,
        reader: SliceReader | None,
        row_timeout: float | None,
        options: RayOptions,
        spec: ShardSpec | None = None,
        slice_rows: int | None = None,
    ):
        self.ray, self.chain, self.reader, self.row_timeout = ray, chain, reader, row_timeout
        self.spec = spec
        cpus = float(ray.cluster_resources().get("CPU", 1))
        self.max_running = max(1, int(cpus / options.cpus_per_task)) * TASKS_PER_CPU
        self.run = uuid.uuid4().hex
        self.every = BEAT_SECONDS if row_timeout is None else min(BEAT_SECONDS, row_timeout / 10)
        self.tick = 1.0 if row_timeout is None else min(1.0, row_timeout / 4)
        self.crashes = _crash_errors(ray)
        self.keys = itertools.count(1)
        self.failed_starts = 0
        self.queue: deque[_Job] = deque()  # not sent yet; retries go first
        self.pending: deque[_Slice | _Batch] = deque()  # every unit not yielded, in order
        self.running: dict[Any, _Job] = {}  # ObjectRef -> job
        self.beats = ray.remote(num_cpus=0)(_Beats).remote()
        self.chain_ref = ray.put(chain)
        self.reader_ref = ray.put(reader) if reader is not None else None
        self.spec_ref = ray.put(spec) if spec is not None else None
        remote = {
            "num_cpus": options.cpus_per_task,
            "max_retries": 0,  # the driver retries: it knows which batch and row failed
            # a stage that leaks (video decoders) gets a fresh process per task
            **({"max_calls": 1} if chain.recycle_after else {}),
        }
        # ... or per as many slices of at most `slice_rows` rows as fit in its limit
        calls = {}
        if chain.recycle_after and slice_rows:
            calls = {"max_calls": max(1, chain.recycle_after // slice_rows)}
        self.slice_task = ray.remote(**{**remote, **calls})(_slice_task)
        self.batch_task = ray.remote(**remote)(_batch_task)

    def results(self, units: Iterable[_Slice | _Batch]) -> Iterator[BatchResult]:
        source = iter(units)
        more = True
        while True:
            while more and len(self.pending) < 2 * self.max_running:
                unit = next(source, None)
                if unit is None:
                    more = False
                    break
                self.pending.append(unit)
                if isinstance(unit, _Batch) and unit.rows.num_rows == 0:
                    unit.result = self.chain(unit.rows)  # nothing to run: every row rejected
                else:
                    self.queue.append(_Job(unit))
            while self.pending and self.pending[0].done:
                yield from self._yield(self.pending.popleft())
            if not self.pending and not more:
                return
            self._submit()
            self._wait()

    def _yield(self, unit: _Slice | _Batch) -> Iterator[BatchResult]:
        reader = self.reader
        if isinstance(unit, _Batch):
            if unit.stats is not None and reader is not None:
                reader.merge(unit.stats[0], unit.stats[1], None)
            assert unit.result is not None
            kept, rejected = unit.result
            rejected = _with_read_rejects(unit.read_rejects, rejected, self.chain)
            yield BatchResult(kept, rejected, unit.num_records, unit.position)
            return
        assert reader is not None and unit.results is not None
        for number, (kept, rejected, records, rows, stats, parts) in enumerate(
            unit.results, start=unit.skip + 1
        ):
            reader.merge(unit.part, stats, None)
            kept = observed_table(kept)
            yield BatchResult(kept, rejected, records, (unit.index, number, rows), parts=parts)
        reader.merge(unit.part, None, unit.notes)
        if unit.written is not None or unit.parts is not None:
            yield _slice_end(unit.written, unit.parts)

    def _submit(self) -> None:
        while self.queue and len(self.running) < self.max_running:
            job = self.queue.popleft()
            job.key = next(self.keys)
            args = (self.beats, job.key, self.every)
            if isinstance(job.unit, _Slice):
                u = job.unit
                ref = self.slice_task.remote(
                    self.reader_ref,
                    self.chain_ref,
                    self.run,
                    u.part,
                    u.skip,
                    u.count,
                    *args,
                    self.spec_ref,
                    u.index,
                    u.subs,
                )
            else:
                ref = self.batch_task.remote(self.chain_ref, self.run, job.rows, *args, job.at)
            self.running[ref] = job

    def _wait(self) -> None:
        ray = self.ray
        if not self.running:
            return
        ready, _ = ray.wait(list(self.running), num_returns=1, timeout=self.tick)
        # every finished one, not just the first (a wait returns as soon as one is)
        ready, _ = ray.wait(list(self.running), num_returns=len(self.running), timeout=0)
        failed: list[tuple[_Job, Reason, str]] = []
        for ref in ready:
            job = self.running.pop(ref)
            try:
                value = ray.get(ref)
            except self.crashes as e:
                failed.append((job, Reason.DECODER_CRASH, _death(e)))
                continue
            self._finish(job, value)
        if self.row_timeout is not None and self.running:
            stalled = self._stalled()
            for ref, job in stalled:
                ray.cancel(ref, force=True)  # kills the worker process
                del self.running[ref]
                how = (
                    f"no row finished in {self.row_timeout:g} s (--row-timeout); the task's "
                    "worker was killed"
                )
                failed.append((job, Reason.TIMEOUT, how))
        if failed:
            where = ray.get(self.beats.report.remote([job.key for job, _, _ in failed]))
            for job, reason, how in failed:
                self._failed(job, reason, how, where.get(job.key))
        done = [job.key for job, _, _ in failed]
        if done:
            self.beats.forget.remote(done)

    def _stalled(self) -> list[tuple[Any, _Job]]:
        keys = {job.key: ref for ref, job in self.running.items()}
        report = self.ray.get(self.beats.report.remote(list(keys)))
        assert self.row_timeout is not None
        return [
            (keys[k], self.running[keys[k]])
            for k, (age, _, _) in report.items()
            if age >= self.row_timeout
        ]

    def _finish(self, job: _Job, value: Any) -> None:
        self.failed_starts = 0
        self.beats.forget.remote([job.key])
        unit = job.unit
        if isinstance(unit, _Slice):
            unit.results, unit.notes, unit.written, unit.parts = value
        elif job.row is None:
            unit.result = value
        else:
            self._row_result(unit, job.row, value)

    def _row_result(self, unit: _Batch, row: int, result: Rows) -> None:
        unit.set_row(row, result)
        if unit.parent is not None and unit.done:  # the slice can run again, with this batch
            part, number = unit.parent
            kept, rejected = unit.result  # type: ignore[misc]
            part.subs[number] = (kept, _with_read_rejects(unit.read_rejects, rejected, self.chain))
            self.queue.appendleft(_Job(part))

    def _failed(
        self, job: _Job, reason: Reason, how: str, where: tuple[float, int, int] | None
    ) -> None:
        """A job's task died or was killed: retry what it ran, as local `_Pool._lost` does."""
        unit = job.unit
        if where is None:  # it died before it started a batch (in setup): again, a few times
            self.failed_starts += 1
            if self.failed_starts > MAX_FAILED_STARTS:
                raise MmtokError(
                    f"Ray workers keep dying while they start: {how}",
                    hint="out of memory? give the tasks more memory or fewer CPUs each",
                )
            self.queue.appendleft(job)
            return
        self.failed_starts = 0
        _, stage, batch = where
        if isinstance(unit, _Slice) and self.spec is not None:
            self.queue.extendleft(reversed(self._rerun_slice(unit, batch)))
        elif isinstance(unit, _Slice):
            self.queue.extendleft(reversed(self._split_slice(unit, batch)))
        elif job.row is None:
            self.queue.extendleft(reversed(unit.split()))
        elif job.retries < self.chain.row_retries:
            job.retries += 1  # the stage may try it another way (sample-frames: PyAV)
            self.queue.appendleft(job)
        else:  # it failed alone too: this row is the cause
            name = self.chain.stages[stage].name
            self._row_result(unit, job.row, _failed_row(self.chain, job.rows, name, reason, how))

    def _rerun_slice(self, unit: _Slice, failing: int) -> list[_Job]:
        """A task died in batch `failing` of a slice it was writing: its files are incomplete,
        so the slice runs again from its start (overwriting them), once that batch has been
        run row by row in fresh tasks (`_Batch.parent`), taking that batch's result as it is
        (`_Slice.subs`): the slice's files are then as if no task had died."""
        assert self.reader is not None
        if failing in unit.subs:  # it died outside the stages: run the slice again as it is
            return [_Job(unit)]
        batch, row = read_batch(self.reader, unit.part, failing)
        if batch is None:  # it died after its last batch
            return [_Job(unit)]
        sub = _Batch(
            batch.rows,
            batch.rejected,
            batch.num_records,
            parent=(unit, failing),
            at=(unit.index, row),
        )
        if batch.rows.num_rows == 0:
            kept, rejected = self.chain(batch.rows)
            unit.subs[failing] = (kept, _with_read_rejects(batch.rejected, rejected, self.chain))
            return [_Job(unit)]
        return sub.split()

    def _split_slice(self, unit: _Slice, failing: int) -> list[_Job]:
        """A slice task died in batch `failing`: the batches before it go again as a slice
        task, that batch is read here and retried row by row, the rest is a new slice task.
        All three take the unit's place in the order."""
        assert self.reader is not None
        batch, row = read_batch(self.reader, unit.part, failing)
        parts: list[_Slice | _Batch] = []
        if failing > unit.skip:
            parts.append(_Slice(unit.index, unit.part, unit.skip, failing - unit.skip))
        if batch is not None:
            position = (unit.index, failing + 1, batch.rows.num_rows)
            stats = (unit.part, batch.stats)
            at = (unit.index, row)
            parts.append(
                _Batch(batch.rows, batch.rejected, batch.num_records, position, stats, at=at)
            )
            last = unit.count is not None and failing + 1 >= unit.skip + unit.count
            if not last:
                rest = None if unit.count is None else unit.skip + unit.count - failing - 1
                parts.append(_Slice(unit.index, unit.part, failing + 1, rest))
        at = self.pending.index(unit)
        del self.pending[at]
        for offset, part in enumerate(parts):
            self.pending.insert(at + offset, part)
        jobs: list[_Job] = []
        for part in parts:
            if isinstance(part, _Batch) and part.rows.num_rows == 0:
                part.result = self.chain(part.rows)
            elif isinstance(part, _Batch):
                jobs.extend(part.split())
            else:
                jobs.append(_Job(part))
        return jobs

    def close(self) -> None:
        """Nothing the cluster still runs for this run is worth waiting for."""
        for ref in self.running:
            with contextlib.suppress(Exception):
                self.ray.cancel(ref, force=True)
        self.running.clear()
        with contextlib.suppress(Exception):
            self.ray.kill(self.beats)


def _death(error: BaseException) -> str:
    """The worker's death in words: Ray's error names the kind (a crash, Ray's out-of-memory
    monitor, a lost node), not the exit code or signal."""
    return f"the Ray worker process died ({type(error).__name__})"


def _model_resources(ray: Any, device: Stage, options: RayOptions) -> tuple[float, int]:
    """(GPUs per model actor, actors); a GPU request the cluster cannot satisfy is an error
    now, not a pool that waits forever for an actor."""
    on_cuda = getattr(device, "device", "cpu").startswith("cuda")
    gpus = options.gpus_per_actor if options.gpus_per_actor is not None else float(on_cuda)
    have = float(ray.cluster_resources().get("GPU", 0))
    if gpus > 0 and have < gpus:
        raise MmtokError(
            f"the model stage asks for {gpus:g} GPU per Ray actor, and the Ray cluster has "
            f"{have:g} GPUs",
            hint="add GPU nodes to the cluster, or run the model on the CPU (--device cpu)",
        )
    if options.model_actors is not None:
        actors = options.model_actors
        if gpus > 0 and actors * gpus > have:
            raise MmtokError(
                f"{actors} model actors x {gpus:g} GPU need {actors * gpus:g} GPUs; the Ray "
                f"cluster has {have:g}",
                hint="use fewer actors or a smaller GPU share per actor",
            )
    else:
        actors = max(1, int(have // gpus)) if gpus > 0 else 1
    return gpus, actors


def _through_model(
    ray: Any,
    results: Iterator[BatchResult],
    device: Stage,
    worker_schema: pa.Schema,
    resources: tuple[float, int],
) -> Iterator[BatchResult]:
    """The model stage over the CPU results, in a pool of actors, two batches in flight per
    actor; results in order. A dead actor is restarted and its batches retried by Ray."""
    gpus, size = resources
    actor = ray.remote(_ModelActor).options(
        num_cpus=0,  # the CPU tasks keep the cluster's CPUs; the model has its own resources
        num_gpus=gpus or None,
        memory=MODEL_ACTOR_MEMORY,
        max_restarts=MAX_ACTOR_RESTARTS,
        max_task_retries=MAX_ACTOR_RESTARTS,
    )
    # The stage (with its loaded model) goes to the object store once, and this reference
    # keeps it there for the whole pool: an actor that dies is restarted from it. Passed by
    # value, it would be freed once the actors were first created, and a restart would fail
    # ("ReferenceCountingAssertionError", github.com/ray-project/ray/issues/53727).
    stage_ref = ray.put(device)
    actors = [actor.remote(stage_ref, worker_schema, size) for _ in range(size)]
    flight: deque[tuple[BatchResult, Any]] = deque()
    turn = itertools.count()
    try:
        for result in results:
            ref = actors[next(turn) % size].process.remote(result.kept)
            flight.append((result, ref))
            while len(flight) > TASKS_PER_CPU * size:
                yield _model_result(ray, device, *flight.popleft())
        while flight:
            yield _model_result(ray, device, *flight.popleft())
    finally:
        for a in actors:
            with contextlib.suppress(Exception):
                ray.kill(a)
        del stage_ref


def _batching(stage: Stage) -> dict[str, int]:
    return {k: v for k in ("_batch", "halvings") if (v := getattr(stage, k, None)) is not None}


def _model_result(ray: Any, device: Stage, result: BatchResult, ref: Any) -> BatchResult:
    """A model batch's result; the driver's copy of the stage takes the actors' batch size
    and halvings, which the commands report (`batch_size`, `batch_halvings`): the smallest
    size and the most halvings of any actor (with one actor, the local engine's figures)."""
    kept, rejected, batching = ray.get(ref)
    if "_batch" in batching:
        device._batch = min(device._batch, batching["_batch"])  # type: ignore[attr-defined]
    if "halvings" in batching:
        device.halvings = max(device.halvings, batching["halvings"])  # type: ignore[attr-defined]
    more = [rejected] if rejected.num_rows else []
    return BatchResult(kept, [*result.rejected, *more], result.num_records, result.position)


def run_ray(
    units: Iterable[tuple[int, Slice, int]] | Iterable[tuple[pa.Table, pa.Table | None, int]],
    chain: StageChain,
    device: Stage | None,
    *,
    reader: SliceReader | None = None,
    address: str | None = None,
    options: RayOptions | None = None,
    row_timeout: float | None = DEFAULT_ROW_TIMEOUT,
    spec: ShardSpec | None = None,
    slice_rows: int | None = None,
) -> Iterator[BatchResult]:
    """Run `chain` (then `device`, the model stage) on a Ray cluster; yield the results in
    input order, each batch exactly once. `units`: with `reader`, `(index, slice, batches to
    skip)` that the tasks read themselves (results carry their positions); without, the
    `(rows, read rejects, records)` batches the caller read. `spec` (with `reader`, no
    `device`): the tasks write each slice's files, as `run_slices(spec=...)` does locally; the
    results carry `spec.summary` of each batch, and each slice ends with a result whose
    `written` names its files. `slice_rows`: the most rows a slice holds, for a chain whose
    workers retire (`Stage.recycle_after`): a process then runs as many slices as fit."""
    assert spec is None or (reader is not None and device is None)
    ray = connect(address)
    options = options or RayOptions()
    model = _model_resources(ray, device, options) if device is not None else None
    if reader is not None:
        work: Iterable[_Slice | _Batch] = (_Slice(i, part, skip) for i, part, skip in units)
    else:
        work = (_Batch(rows, rejects, n) for rows, rejects, n in units)  # type: ignore[misc]
    driver = _Driver(ray, chain, reader, row_timeout, options, spec, slice_rows)
    try:
        with redirect_stdout(sys.stderr):  # Ray prints worker deaths on the driver's stdout
            results = driver.results(work)
            if device is not None and model is not None:
                results = _through_model(ray, results, device, chain.output_schema, model)
            yield from results
    except Exception as e:
        raise _cause(e) from None
    finally:
        driver.close()


def _cause(error: Exception) -> Exception:
    """A stage's own MmtokError (a bad configuration) out of Ray's wrappers, so the user
    sees one line; any other error as it came (a bug keeps its traceback)."""
    seen: Exception | BaseException | None = error
    for _ in range(100):  # a chain of causes, never a cycle of them
        if seen is None:
            break
        inner = getattr(seen, "cause", None)  # a RayTaskError's: the task's own exception
        if isinstance(inner, BaseException):  # first: Ray's copy of an MmtokError is one too,
            seen = inner  # with its traceback as its message
            continue
        if isinstance(seen, MmtokError):
            return seen
        seen = seen.__cause__ or seen.__context__
    if "ActorDiedError" in repr(error):
        return MmtokError(
            f"a Ray model actor died {MAX_ACTOR_RESTARTS + 1} times: {error}",
            hint="out of GPU or host memory? use a smaller --batch-size",
        )
    return error
