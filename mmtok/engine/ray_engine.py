"""The Ray engine (`engine="ray"`, `pip install 'mmtok[ray]'`): the local executor's stage
chain as Ray Data `map_batches` over Arrow batches; the model stage (a device stage, see
`mmtok.models.runtime`) as an actor pool. Imported only when a run asks for Ray.

The unit of work is one input batch, read in the driver exactly as the local engine reads it
(same batches, row ids, read rejects, resume point). Each Ray row carries one such batch as
Arrow IPC with its sequence number, its record count and its rejects, so a batch's accounting
travels with it through every stage. Results stream back to the driver in input order
(`preserve_order`) and mmtok's own sink writes and commits them (staging, manifest, rename),
not Ray's writers, which have no commit protocol (design/engine.md §2). The driver checks the
sequence numbers, so a block that Ray retried, dropped or repeated can never reach the output
unnoticed: rows in = rows out + rejected, each row once. Ray never drops errored blocks here
(`max_errored_blocks` stays 0): a stage that raises stops the run, as it does locally.

Traps handled (design/engine.md): CPU stages are tasks, the model an actor pool whose
resources differ (`memory`), so Ray does not fuse the decoding into the GPU actors; a GPU
request the cluster cannot satisfy fails before any work instead of hanging; a worker that
dies is retried a bounded number of times, never forever.

Swappable unit: `_envelopes` turns the driver's batch iterator into Ray rows; when inputs can
be planned as slices read on the workers (INTERFACES.md, "Slices"), only it changes.
"""

from __future__ import annotations

import logging
import sys
import uuid
import warnings
from collections.abc import Iterable, Iterator
from contextlib import redirect_stdout
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from mmtok.engine.local import BatchResult, StageChain, _with_read_rejects
from mmtok.engine.stage import Stage
from mmtok.errors import MmtokError

if TYPE_CHECKING:
    import ray

RAY_INSTALL = "pip install 'mmtok[ray]'"
# A worker that dies this many times more on the same batch is not a lost node but a row that
# kills its process (the local engine isolates such a row; here the run stops and says so).
MAX_RETRIES = 3
MODEL_ACTOR_MEMORY = 1 << 30  # reserved per model actor; also keeps CPU stages out of it

ENVELOPE = pa.schema(
    [
        pa.field("seq", pa.int64()),  # the batch's position in the input stream
        pa.field("num_records", pa.int64()),  # input records the batch accounts for
        pa.field("rows", pa.large_binary()),  # kept rows, Arrow IPC stream
        pa.field("rejected", pa.list_(pa.large_binary())),  # reject tables, Arrow IPC each
    ]
)


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
        import ray.data  # noqa: F401
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
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    # Ray Data says at each run that its progress bars are off: mmtok turned them off
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    return ray


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _table(buffer: Any) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(buffer)).read_all()


def _envelope(seqs: list[int], counts: list[int], rows: list, rejected: list) -> pa.Table:
    return pa.table(
        {"seq": seqs, "num_records": counts, "rows": rows, "rejected": rejected}, schema=ENVELOPE
    )


def _open(envelope: pa.Table) -> Iterator[tuple[int, int, pa.Table, list[pa.Table]]]:
    columns = [envelope.column(n).to_pylist() for n in ENVELOPE.names]
    for seq, count, rows, rejected in zip(*columns, strict=True):
        yield seq, count, _table(rows), [_table(r) for r in rejected]


# One set-up chain per worker process and run: Ray reuses a task's worker process for the next
# tasks of the same function, so `setup()` (models, decoders) runs once per process.
_CHAINS: dict[str, StageChain] = {}


def _run_chain(envelope: pa.Table, *, chain: StageChain, run: str) -> pa.Table:
    """The CPU stages over the batches of one Ray block (a Ray task)."""
    if run not in _CHAINS:
        _CHAINS.clear()  # an earlier run's stages are done with
        chain.setup()
        _CHAINS[run] = chain
    chain = _CHAINS[run]
    out: tuple[list, list, list, list] = ([], [], [], [])
    for seq, count, rows, read_rejects in _open(envelope):
        kept, rejected = chain(rows)
        rejected = _with_read_rejects(
            pa.concat_tables(read_rejects) if read_rejects else None, rejected, chain
        )
        for column, value in zip(
            out, (seq, count, _ipc(kept), [_ipc(t) for t in rejected]), strict=True
        ):
            column.append(value)
    return _envelope(*out)


class _ModelActor:
    """The device stage in a Ray actor: set up once, then one model batch per Ray row."""

    def __init__(self, stage: Stage, worker_schema: pa.Schema):
        if getattr(stage, "device", "cpu").startswith("cuda"):
            stage.device = "cuda:0"  # Ray sets CUDA_VISIBLE_DEVICES to this actor's GPU
        stage.setup()
        stage.output_schema(worker_schema)  # sets the stage's reject schema
        self.stage = stage

    def __call__(self, envelope: pa.Table) -> pa.Table:
        out: tuple[list, list, list, list] = ([], [], [], [])
        for seq, count, rows, rejected in _open(envelope):
            result = self.stage.process(rows)
            if result.rejected.num_rows:
                rejected = [*rejected, result.rejected]
            for column, value in zip(
                out, (seq, count, _ipc(result.kept), [_ipc(t) for t in rejected]), strict=True
            ):
                column.append(value)
        return _envelope(*out)


def _envelopes(
    ray: Any, batches: Iterable[tuple[pa.Table, pa.Table | None, int]]
) -> list[ray.ObjectRef]:
    """The driver's batches into the object store, one Ray block each (spilled to disk past
    the object store's size)."""
    refs = []
    for seq, (rows, read_rejects, count) in enumerate(batches):
        rejected = (
            [_ipc(read_rejects)] if read_rejects is not None and read_rejects.num_rows else []
        )
        refs.append(ray.put(_envelope([seq], [count], [_ipc(rows)], [rejected])))
    return refs


def _model_resources(ray: Any, device: Stage, options: RayOptions) -> tuple[float, int]:
    """(GPUs per model actor, actors); a GPU request the cluster cannot satisfy is an error
    now, not a dataset that waits forever for an actor."""
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


def run_ray(
    batches: Iterable[tuple[pa.Table, pa.Table | None, int]],
    chain: StageChain,
    device: Stage | None,
    *,
    address: str | None = None,
    options: RayOptions | None = None,
) -> Iterator[BatchResult]:
    """Run `chain` (then `device`, the model stage) over the batches on a Ray cluster; yield
    the results in input order, each batch exactly once."""
    ray = connect(address)
    options = options or RayOptions()
    model = _model_resources(ray, device, options) if device is not None else None
    import ray.data

    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # results in input order
    context.max_errored_blocks = 0  # never drop a block that failed (Ray's default, kept)
    context.enable_progress_bars = False  # the CLI shows its own
    context.print_on_execution_start = False
    refs = _envelopes(ray, batches)
    if not refs:
        return
    run = uuid.uuid4().hex
    with warnings.catch_warnings():
        # max_retries / max_restarts have no named parameter yet in Ray 2.60
        warnings.filterwarnings("ignore", "`ray_remote_args` is deprecated")
        dataset = ray.data.from_arrow_refs(refs)
        if chain.stages:
            dataset = dataset.map_batches(
                _run_chain,
                batch_size=1,  # one input batch per call: its rows are the unit of work
                batch_format="pyarrow",
                zero_copy_batch=True,
                fn_kwargs={"chain": chain, "run": run},
                num_cpus=options.cpus_per_task,
                max_retries=MAX_RETRIES,
            )
        if device is not None and model is not None:
            gpus, actors = model
            dataset = dataset.map_batches(
                _ModelActor,
                batch_size=1,  # one model batch (device.rows_per_batch rows) per call
                batch_format="pyarrow",
                fn_constructor_kwargs={"stage": device, "worker_schema": chain.output_schema},
                compute=ray.data.ActorPoolStrategy(size=actors),
                num_gpus=gpus or None,
                memory=MODEL_ACTOR_MEMORY,
                max_restarts=MAX_RETRIES,
                max_task_retries=MAX_RETRIES,
            )
    try:
        with redirect_stdout(sys.stderr):  # Ray prints worker deaths on the driver's stdout
            yield from _in_order(dataset, len(refs))
    except Exception as e:
        raise _cause(e) from None


def _in_order(dataset: Any, batches: int) -> Iterator[BatchResult]:
    """The results, checked: each batch once, in input order, none missing."""
    expected = 0
    for block in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
        for seq, count, kept, rejected in _open(block):
            if seq != expected:
                raise RuntimeError(f"the Ray engine got batch {seq} where batch {expected} was due")
            expected += 1
            yield BatchResult(kept, rejected, count)
    if expected != batches:
        raise RuntimeError(f"the Ray engine returned {expected} of {batches} batches")


def _cause(error: Exception) -> Exception:
    """A stage's own MmtokError (a bad configuration) out of Ray's wrappers, so the user
    sees one line; any other error as it came (a bug keeps its traceback)."""
    seen: Exception | BaseException | None = error
    while seen is not None:
        if isinstance(seen, MmtokError):
            return seen
        seen = seen.__cause__ or seen.__context__
    if "WorkerCrashedError" in repr(error) or "ActorDiedError" in repr(error):
        return MmtokError(
            f"a Ray worker died {MAX_RETRIES + 1} times on the same batch: {error}",
            hint="a row may crash its decoder; the local engine (--engine local) isolates "
            "such rows as rejects",
        )
    return error
