"""The local executor: a spawn-context process pool that runs a chain of stages over batches.

Results come back in input order whatever the worker count, and at most `max_in_flight`
batches are submitted at a time, so memory does not grow with the size of the input.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass

import pyarrow as pa

from mmtok.engine.stage import Stage
from mmtok.io.schema import conform


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

    def setup(self) -> None:
        for stage in self.stages:
            stage.setup()

    def __call__(self, rows: pa.Table) -> tuple[pa.Table, list[pa.Table]]:
        rejected = []
        for stage in self.stages:
            if rows.num_rows == 0:
                break
            result = stage.process(rows)
            rows = result.kept
            if result.rejected.num_rows:
                rejected.append(conform(result.rejected, self.reject_schema))
        return conform(rows, self.output_schema), rejected


_worker_chain: StageChain | None = None


def _init_worker(chain: StageChain) -> None:
    # Ctrl-C goes to the whole process group; only the parent decides how to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    global _worker_chain
    _worker_chain = chain
    chain.setup()


def _run_in_worker(rows: pa.Table) -> tuple[pa.Table, list[pa.Table]]:
    assert _worker_chain is not None
    return _worker_chain(rows)


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
) -> Iterator[BatchResult]:
    """Run `chain` over `(rows, read_rejects, num_records)` batches; yield results in order.

    `workers <= 1` runs in this process (no pool start-up; the same code path otherwise).
    """
    if workers <= 1:
        chain.setup()
        for rows, read_rejects, n in batches:
            kept, rejected = chain(rows)
            yield BatchResult(kept, _with_read_rejects(read_rejects, rejected, chain), n)
        return

    max_in_flight = max_in_flight or 2 * workers
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(
        workers, mp_context=context, initializer=_init_worker, initargs=(chain,)
    )
    pending: deque[tuple[Future, pa.Table | None, int]] = deque()
    try:
        for rows, read_rejects, n in batches:
            pending.append((pool.submit(_run_in_worker, rows), read_rejects, n))
            while len(pending) >= max_in_flight:
                yield _collect(pending.popleft(), chain)
        while pending:
            yield _collect(pending.popleft(), chain)
    finally:
        # On Ctrl-C or an error: drop what has not started, let running batches end.
        pool.shutdown(wait=True, cancel_futures=True)


def _collect(item: tuple[Future, pa.Table | None, int], chain: StageChain) -> BatchResult:
    future, read_rejects, n = item
    kept, rejected = future.result()
    return BatchResult(kept, _with_read_rejects(read_rejects, rejected, chain), n)


def _with_read_rejects(read_rejects, rejected, chain) -> list[pa.Table]:
    if read_rejects is not None and read_rejects.num_rows:
        return [conform(read_rejects, chain.reject_schema), *rejected]
    return rejected
