"""One run: inputs -> stages -> sink, with row accounting, resume and a manifest.

A dataset output is published when the run ends, unless the command asks to `hold` it: then
the command adds its side outputs (clusters, budget report) and calls `publish_output`, so
they are inside the folder, and listed in its manifest, before the folder appears.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

import mmtok
from mmtok.engine.local import (
    DEFAULT_ROW_TIMEOUT,
    BatchResult,
    StageChain,
    default_workers,
    run_local,
    run_slices,
)
from mmtok.engine.process import block_pandas, is_cli_process
from mmtok.engine.stage import Stage
from mmtok.errors import MmtokError
from mmtok.io.hf_features import inherited_features
from mmtok.io.output_guard import read_manifest, real
from mmtok.io.schema import reject_schema, with_fields
from mmtok.io.shard_writer import ShardSpec, slice_rows
from mmtok.io.sink import DatasetSink, ShardStats, StdoutSink
from mmtok.io.sources import Inputs
from mmtok.io.sources.base import ReadStats, Slice
from mmtok.io.sources.slices import SLICE_BATCHES, SliceReader, plan_slices
from mmtok.stages.image_bytes import InlineImageBytes

if TYPE_CHECKING:
    from mmtok.engine.ray_engine import RayOptions

ENGINES = ("local", "ray")


class Interrupted(MmtokError):
    exit_code = 130


@dataclass
class OutputOptions:
    path: str  # a directory, or "-" for JSON Lines on stdout
    overwrite: bool = False
    resume: bool = False
    shard_rows: int = 50_000
    shard_bytes: int = 512 << 20
    include_bytes: bool = False  # store the encoded image bytes even when a path exists
    rejects_path: str | None = None  # stdout only: where rejected rows go (default stderr)
    held: DatasetSink | None = field(default=None, repr=False)  # finished, not yet published

    @property
    def to_stdout(self) -> bool:
        return self.path == "-"


def input_paths(inputs: Inputs) -> list[str]:
    """Every path a run reads: as given, and each file the inputs expanded to."""
    given = [p for p in inputs.paths if p != "-" and os.path.exists(p)]
    return given + [s.path for s in inputs.sources if s.kind != "stdin"]


def dataset_sink(
    output: OutputOptions,
    inputs: Inputs,
    stages: list[Stage],
    *,
    command: str = "",
    shard_stats: ShardStats | None = None,
    row_schema: pa.Schema | None = None,
) -> DatasetSink:
    """The sink of a run into a dataset folder (`output.path` is not `-`). `row_schema`: the
    kept rows' schema when a device stage reshapes the workers' rows."""
    stages = _with_output_stages(stages, output)
    if row_schema is None:
        row_schema = with_fields(inputs.schema, [f for s in stages for f in s.output_fields()])
    stage_configs = [{"stage": s.name, **s.config()} for s in stages]
    run_key = {
        "input_fingerprint": inputs.fingerprint()[0],
        "stages": stage_configs,
        "read_options": dataclasses.asdict(inputs.options),
        "shard_rows": output.shard_rows,
        "shard_bytes": output.shard_bytes,
    }
    if recycle := min((s.recycle_after for s in stages if s.recycle_after), default=None):
        run_key["recycle_after"] = recycle  # the slices are cut to it: a resume needs the same
    metadata = {
        "mmtok_version": mmtok.__version__,
        "mmtok_command": command,
        "mmtok_stages": json.dumps(stage_configs),
    }
    parquet_inputs = [s.path for s in inputs.sources if s.path.endswith(".parquet")]
    return DatasetSink(
        output.path,
        row_schema,
        reject_schema(inputs.schema),
        run_key=run_key,
        metadata=metadata,
        overwrite=output.overwrite,
        resume=output.resume,
        inputs=input_paths(inputs),
        hf_features=inherited_features(parquet_inputs),
        shard_rows=output.shard_rows,
        shard_bytes=output.shard_bytes,
        shard_stats=shard_stats,
        expands_rows=any(s.expands_rows for s in stages),
    )


def check_output(output: OutputOptions | None, inputs: Inputs, more_inputs: list[str]) -> None:
    """Refuse a bad output before any work: an input, a foreign folder, a running job's."""
    if output is not None and not output.to_stdout:
        sink = dataset_sink(output, inputs, [])
        sink.inputs += more_inputs
        sink.check()


def finished_output(
    output: OutputOptions, inputs: Inputs, stages: list[Stage]
) -> dict[str, Any] | None:
    """The manifest of `output.path` if it is a complete output of these inputs and stages
    (a pass that need not run again), else None."""
    manifest = read_manifest(real(output.path))
    if manifest is None:
        return None
    configs = [{"stage": s.name, **s.config()} for s in _with_output_stages(stages, output)]
    now = {
        "input_fingerprint": inputs.fingerprint()[0],
        "stages": configs,
        "read_options": dataclasses.asdict(inputs.options),
    }
    now = json.loads(json.dumps(now, default=str))
    return manifest if all(manifest.get(k) == v for k, v in now.items()) else None


def _with_output_stages(stages: list[Stage], output: OutputOptions | None) -> list[Stage]:
    if output is not None and output.include_bytes:
        return [*stages, InlineImageBytes()]
    return stages


def publish_output(
    output: OutputOptions | None, side_outputs: dict[str, pa.Table | dict[str, Any]]
) -> None:
    """Add side outputs to a held output and publish it (nothing to do for stdout or none)."""
    sink = output.held if output is not None else None
    if sink is None:
        return
    try:
        for name, value in side_outputs.items():
            sink.write_side(name, value)
        sink.publish()
    except KeyboardInterrupt:
        raise Interrupted(_interrupted_while_finishing(output.path)) from None
    finally:
        sink.release()
    output.held = None


def _interrupted_while_finishing(path: str) -> str:
    return f"interrupted while finishing {path}; run the same command with --resume"


@dataclass
class Observer:
    """Sees the given columns of every kept batch, in input order (for summaries).

    With `add`, the columns come to the main process, which calls it. With `summary` (a
    mergeable summary, picklable: `empty()` gives a part, `part.add(table)`, `merge(part)`),
    the workers that write or count the rows add the kept batches of a slice to a fresh part
    and send the part instead of the columns (`SliceParts`); the parts are merged here in input
    order, so the result is the same for any worker count or engine. Where the rows come here anyway
    (stdout, a device stage, rows retried one by one), and for the rows a resumed run had
    committed, the summary adds them itself: `merge(empty().add(t))` must equal `add(t)`."""

    columns: list[str]
    add: Callable[[pa.Table], None] | None = None
    summary: Any = None

    def __post_init__(self) -> None:
        if self.add is None:
            assert self.summary is not None, "an Observer needs add or summary"
            self.add = self.summary.add

    @staticmethod
    def see_all(observers: list[Observer], result: BatchResult) -> None:
        """One result, in input order: each summary's part when a worker made them (a batch
        of a slice has none: its slice's parts come with the slice's end), else the rows."""
        parts = iter(result.parts) if result.parts is not None else None
        for observer in observers:
            if parts is not None and observer.summary is not None:
                if result.parts:
                    observer.summary.merge(next(parts))
            elif not result.end:
                assert observer.add is not None
                observer.add(result.kept.select(observer.columns))


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
    hold: bool = False,
    engine: str = "local",
    ray_address: str | None = None,
    ray_options: RayOptions | None = None,
) -> dict[str, Any]:
    """Run `stages` over `inputs` into `output`; returns the manifest (counts, files, timing).

    With `hold`, a dataset output is finished but not published: the caller adds its side
    outputs with `publish_output(output, {...})`. `engine`: `local` (a process pool) or `ray`
    (`mmtok.engine.ray_engine`, on the cluster at `ray_address`; a local Ray when None;
    `ray_options`: GPUs per model actor, actors, CPUs per task)."""
    if engine not in ENGINES:
        raise MmtokError(f"unknown engine {engine!r}", hint=f"use one of: {', '.join(ENGINES)}")
    if engine == "ray":  # Ray is imported only here, and fails in one line when missing
        from mmtok.engine.ray_engine import require_ray

        require_ray()
        if output is not None and output.to_stdout:  # Ray prints its notices on stdout
            raise MmtokError(
                "the Ray engine writes to a dataset folder, not to -o -", hint="give -o DIR"
            )
    # Stages that keep state from batch to batch run with one worker and no isolation, in
    # this process (dedup's writing pass to stdout); on any engine they stay here.
    in_order = workers == 1
    workers = workers or default_workers()
    if is_cli_process():
        block_pandas()
    # A device stage (a model) runs last, in this process, over the workers' results.
    device = stages[-1] if stages and hasattr(stages[-1], "run_stream") else None
    cpu_stages = _with_output_stages(stages[:-1] if device else stages, output)
    stages = [*cpu_stages, device] if device else cpu_stages
    worker_schema = with_fields(inputs.schema, [f for s in cpu_stages for f in s.output_fields()])
    row_schema = device.output_schema(worker_schema, inputs.schema) if device else worker_schema
    rejects = reject_schema(inputs.schema)
    fingerprint, input_parts = inputs.fingerprint()
    stage_configs = [{"stage": s.name, **s.config()} for s in stages]
    manifest: dict[str, Any] = {
        "mmtok_version": mmtok.__version__,
        "command": command,
        "stages": stage_configs,
        "read_options": dataclasses.asdict(inputs.options),
        "input_fingerprint": fingerprint,
        "inputs": input_parts,
    }
    sink: DatasetSink | StdoutSink
    if output is None:  # summary only: rows are counted, not written
        sink = StdoutSink(count_only=True)
    elif output.to_stdout:
        sink = StdoutSink(include_bytes=output.include_bytes, rejects_path=output.rejects_path)
    else:
        # the output stages are already in `stages`
        sink = dataset_sink(
            dataclasses.replace(output, include_bytes=False),
            inputs,
            stages,
            command=command,
            shard_stats=shard_stats,
            row_schema=row_schema,
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
    position = sink.state.get("position") if skip else None
    rows_read = position[2] if position else 0
    positions: deque[tuple[int, int, int] | None] = deque()  # of the results on their way
    spec: ShardSpec | None = None  # set when the workers write the rows themselves
    try:
        if engine == "ray" and not (in_order and not chain.isolate and not device):
            from mmtok.engine.ray_engine import run_ray

            # Ray tasks read their own slices, as the local workers do (same positions), and
            # write their files where the local workers would (same slices, same shards)
            most = None
            if isinstance(inputs, Inputs) and (position or not skip):
                for source in inputs.sources:  # this pass's figures (dedup reads inputs twice)
                    source.stats = ReadStats()
                rows = None
                spec = _worker_output(sink, device, observers)
                if spec is not None and spec.folder is not None:
                    rows = slice_rows(
                        total, inputs.options.batch_rows, spec.shard_rows, SLICE_BATCHES
                    )
                if chain.recycle_after:  # as locally; a slice too large: the driver writes
                    rows, most = _recycled_slices(inputs, rows, chain.recycle_after)
                    if most is None:
                        spec, rows = None, None
                units = _slices_after(inputs, position, stages, rows)
                reader = SliceReader.of(inputs)
            else:  # inputs that only give batches (a random sample), or an older state file
                units, reader = _batches_after(inputs, skip, stages), None
            ray_results = run_ray(
                units,
                chain,
                device,
                reader=reader,
                address=ray_address,
                options=ray_options,
                row_timeout=row_timeout,
                spec=spec,
                slice_rows=most,
            )
            final = _noting_positions(ray_results, positions)
        else:
            sliced = isinstance(inputs, Inputs) and bool(position or not skip)
            if sliced:
                spec = _worker_output(sink, device, observers)
                rows, most = None, None
                if spec is not None and spec.folder is not None:
                    rows = slice_rows(
                        total, inputs.options.batch_rows, spec.shard_rows, SLICE_BATCHES
                    )
                if chain.recycle_after:
                    rows, most = _recycled_slices(inputs, rows, chain.recycle_after)
                    if most is None:  # a slice too large for a worker's life: batches
                        sliced, spec = False, None
            if sliced:
                for source in inputs.sources:  # this pass's figures (dedup reads inputs twice)
                    source.stats = ReadStats()
                results = run_slices(
                    SliceReader.of(inputs),
                    _slices_after(inputs, position, stages, rows),
                    chain,
                    workers,
                    row_timeout=row_timeout,
                    spec=spec,
                    slice_rows=most,
                )
            else:  # inputs that only give batches (a random sample), or an older state file
                counted = isinstance(sink, StdoutSink) and sink.count_only
                results = run_local(
                    _batches_after(inputs, skip, stages),
                    chain,
                    workers,
                    row_timeout=row_timeout,
                    # rows only counted: the workers send the summaries' parts, not the rows
                    spec=_worker_output(sink, device, observers) if counted else None,
                )
            stream = _noting_positions(results, positions)
            final = device.run_stream(stream) if device else stream
        for result in final:
            where = positions.popleft()  # a device stage keeps the order, one result per batch
            if result.end:  # a slice's end: its summaries' parts, and the files it wrote
                Observer.see_all(observers, result)
                if result.written is not None:  # they become shards
                    assert isinstance(sink, DatasetSink)
                    sink.adopt(result.written, [result.written.index + 1, 0, rows_read])
                continue
            if spec is not None and where is not None:  # a summary of rows written by a worker
                rows_read += where[2]
                if isinstance(sink, StdoutSink):  # counts only
                    sink.write(result.kept, result.rejected, result.num_records)
            elif where is not None:
                rows_read += where[2]
                sink.write(
                    result.kept, result.rejected, result.num_records, [*where[:2], rows_read]
                )
            else:
                sink.write(result.kept, result.rejected, result.num_records)
            Observer.see_all(observers, result)
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
        **({"engine": engine} if engine != "local" else {}),
        "rows_per_second": round((done - done_before) / seconds, 1) if seconds > 0 else None,
    }
    if notes := inputs.notes():
        manifest["notes"] = notes
    if not isinstance(sink, DatasetSink):
        manifest = sink.finish(manifest)
        if any(s.expands_rows for s in stages):  # as DatasetSink.finish counts them
            counts = manifest["counts"]
            counts["in_kept"] = counts["in"] - counts["rejected"]
        return manifest
    try:
        manifest = sink.finish(manifest)
        if hold:
            output.held = sink  # the command adds its side outputs, then `publish_output`
            return manifest
        return sink.publish()
    except KeyboardInterrupt:
        raise Interrupted(_interrupted_while_finishing(output.path)) from None
    finally:
        if not hold:
            sink.release()


def _noting_positions(
    results: Iterator[BatchResult], positions: deque[tuple[int, int, int] | None]
) -> Iterator[BatchResult]:
    """The results, each one's position noted first (a device stage makes new results)."""
    try:
        for result in results:
            positions.append(result.position)
            yield result
    finally:
        close = getattr(results, "close", None)
        if close:
            close()  # ends the worker pool now, not when the generator is collected


def _worker_output(
    sink: DatasetSink | StdoutSink, device: Stage | None, observers: list[Observer]
) -> ShardSpec | None:
    """How workers hand back their rows: they write them into the dataset's staging themselves
    and send only what the observers read (a ShardSpec: the columns of plain observers, the
    parts of mergeable summaries), or, with no output, send only that and the reject reasons;
    None when every row must come here (stdout, a device stage)."""
    columns = [c for o in observers if o.summary is None for c in o.columns]
    summaries = [(o.columns, o.summary.empty()) for o in observers if o.summary is not None]
    if device is not None:
        return None
    if isinstance(sink, DatasetSink):
        spec = sink.shard_spec(columns)
        spec.summaries = summaries
        return spec
    if sink.count_only:
        return ShardSpec(None, pa.schema([]), send_columns=columns, summaries=summaries)
    return None


def _recycled_slices(inputs: Inputs, rows: int | None, limit: int) -> tuple[int, int | None]:
    """Slices for a chain whose workers retire after `limit` rows (`Stage.recycle_after`, video
    decoders): (records per slice: `rows`, or `plan_slices`'s default, cut to `limit` in whole
    batches; the most records a slice of that plan holds). A worker then runs whole slices and
    retires between two. The most is None when a slice can be larger than the limit (a tar
    shard, a JSON array or a Parquet row group read whole, of unknown or too many records):
    the run then goes in batches, which a worker can retire between."""
    batch = inputs.options.batch_rows
    rows = min(rows or SLICE_BATCHES * batch, max(1, limit // batch) * batch)
    plan = plan_slices(inputs, rows)
    most = 0
    for i, part in enumerate(plan):
        if i + 1 < len(plan) and plan[i + 1].source == part.source and part.kind != "whole":
            end: int | None = plan[i + 1].first_row
        else:
            end = inputs.sources[part.source].count_rows()
        if end is None or end - part.first_row > max(limit, rows):
            return rows, None
        most = max(most, end - part.first_row)
    return rows, most


def _slices_after(
    inputs: Inputs, position: list[int] | None, stages: list[Stage], rows: int | None = None
) -> Iterator[tuple[int, Slice, int]]:
    """(index, slice, batches to skip) from where a resumed run stopped (`position`: slice,
    batches of it done, rows read); stages that count rows learn how many were read. `rows`:
    records per slice (default: `plan_slices`'s)."""
    plan = plan_slices(inputs, rows)
    first, skip = (position[0], position[1]) if position else (0, 0)
    if position:
        for stage in stages:
            stage.resume_after(position[2])
        for part in plan[: first + (skip > 0)]:  # read by the run this one resumes
            inputs.sources[part.source].stats.read_before = True
    for index in range(first, len(plan)):
        yield index, plan[index], skip if index == first else 0


def _batches_after(
    inputs: Inputs, skip: int, stages: list[Stage]
) -> Iterator[tuple[pa.Table, pa.Table | None, int]]:
    """The input batches a resumed run has left; stages that count rows learn how many the
    skipped batches held (read, not processed)."""
    batches = inputs.batches()
    if skip:
        rows = sum(b.rows.num_rows for b in islice(batches, skip))
        for stage in stages:
            stage.resume_after(rows)
    return ((b.rows, b.rejected, b.num_records) for b in batches)


def command_line() -> str:
    """The command as run, as valid text: an argument's bytes that are not UTF-8 (a file name
    in Latin-1) are written as backslash escapes (`caf\\xe9.jsonl`)."""
    args = (os.fsencode(a).decode("utf-8", "backslashreplace") for a in sys.argv[1:])
    return " ".join(["mmtok", *args])
