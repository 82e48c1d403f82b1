"""One run: inputs -> stages -> sink, with row accounting, resume and a manifest."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

import mmtok
from mmtok.engine.local import DEFAULT_ROW_TIMEOUT, StageChain, default_workers, run_local
from mmtok.engine.stage import Stage
from mmtok.errors import MmtokError
from mmtok.io.schema import reject_schema, with_fields
from mmtok.io.sink import DatasetSink, ShardStats, StdoutSink
from mmtok.io.sources import Inputs


class Interrupted(MmtokError):
    exit_code = 130


@dataclass
class OutputOptions:
    path: str  # a directory, or "-" for JSON Lines on stdout
    overwrite: bool = False
    resume: bool = False
    shard_rows: int = 50_000
    shard_bytes: int = 512 << 20
    include_bytes: bool = False  # stdout only: inline image bytes even when a path exists
    rejects_path: str | None = None  # stdout only: where rejected rows go (default stderr)

    @property
    def to_stdout(self) -> bool:
        return self.path == "-"


@dataclass
class Observer:
    """Sees the given columns of every kept batch in the main process (for summaries)."""

    columns: list[str]
    add: Callable[[pa.Table], None]


ProgressCallback = Callable[[int, int], None]  # (records done, rejected so far)


def run_pipeline(
    inputs: Inputs,
    stages: list[Stage],
    output: OutputOptions | None,
    *,
    workers: int | None = None,
    command: str = "",
    on_start: Callable[[int | None, int], None] | None = None,
    on_progress: ProgressCallback | None = None,
    observers: Iterable[Observer] = (),
    shard_stats: ShardStats | None = None,
    row_timeout: float | None = DEFAULT_ROW_TIMEOUT,
) -> dict[str, Any]:
    """Run `stages` over `inputs` into `output`; returns the manifest (counts, files, timing)."""
    workers = workers or default_workers()
    # A device stage (a model) runs last, in this process, over the workers' results.
    device = stages[-1] if stages and hasattr(stages[-1], "run_stream") else None
    cpu_stages = stages[:-1] if device else stages
    worker_schema = with_fields(inputs.schema, [f for s in cpu_stages for f in s.output_fields()])
    row_schema = device.output_schema(worker_schema) if device else worker_schema
    rejects = reject_schema(inputs.schema)
    fingerprint, input_parts = inputs.fingerprint()
    stage_configs = [{"stage": s.name, **s.config()} for s in stages]
    read_options = dataclasses.asdict(inputs.options)
    manifest: dict[str, Any] = {
        "mmtok_version": mmtok.__version__,
        "command": command,
        "stages": stage_configs,
        "read_options": read_options,
        "input_fingerprint": fingerprint,
        "inputs": input_parts,
    }
    if output is None:  # summary only: rows are counted, not written
        sink = StdoutSink(stdout=open(os.devnull, "w"), stderr=open(os.devnull, "w"))  # noqa: SIM115
    elif output.to_stdout:
        sink = StdoutSink(include_bytes=output.include_bytes, rejects_path=output.rejects_path)
    else:
        run_key = {
            "input_fingerprint": fingerprint,
            "stages": stage_configs,
            "read_options": read_options,
            "shard_rows": output.shard_rows,
            "shard_bytes": output.shard_bytes,
        }
        metadata = {
            "mmtok_version": mmtok.__version__,
            "mmtok_command": command,
            "mmtok_stages": json.dumps(stage_configs),
        }
        sink = DatasetSink(
            output.path,
            row_schema,
            rejects,
            run_key=run_key,
            metadata=metadata,
            overwrite=output.overwrite,
            resume=output.resume,
            shard_rows=output.shard_rows,
            shard_bytes=output.shard_bytes,
            shard_stats=shard_stats,
        )
    skip = sink.open()
    observers = list(observers)
    done = rejected = 0
    if skip:
        done = sink.state["records_done"]
        for part in sink.committed_parts():
            for observer in observers:
                observer.add(pq.read_table(part, columns=observer.columns))
    total = inputs.count_rows()
    if total is not None:  # more workers than batches would only add start-up time
        workers = max(1, min(workers, -(-(total - done) // inputs.options.batch_rows)))
    if on_start:
        on_start(total, done)

    started, t0, done_before = datetime.now(UTC), time.monotonic(), done
    chain = StageChain(cpu_stages, worker_schema, rejects)
    batches = ((b.rows, b.rejected, b.num_records) for b in islice(inputs.batches(), skip, None))
    try:
        results = run_local(batches, chain, workers, row_timeout=row_timeout)
        for result in device.run_stream(results) if device else results:
            sink.write(result.kept, result.rejected, result.num_records)
            for observer in observers:
                observer.add(result.kept.select(observer.columns))
            done += result.num_records
            rejected += sum(t.num_rows for t in result.rejected)
            if on_progress:
                on_progress(done, rejected)
    except KeyboardInterrupt:
        sink.abandon()
        resumable = isinstance(sink, DatasetSink)
        where = "; continue with the same command and --resume" if resumable else ""
        raise Interrupted(f"interrupted after {done:,} rows{where}") from None
    except BaseException:
        if isinstance(sink, DatasetSink):
            sink.abandon()
        raise
    seconds = time.monotonic() - t0
    manifest["timing"] = {
        "started": started.isoformat(timespec="seconds"),
        "seconds": round(seconds, 3),
        "workers": workers,
        "rows_per_second": round((done - done_before) / seconds, 1) if seconds > 0 else None,
    }
    if notes := inputs.notes():
        manifest["notes"] = notes
    return sink.finish(manifest)


def command_line() -> str:
    return " ".join(["mmtok", *sys.argv[1:]])
