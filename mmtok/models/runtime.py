"""The device half of a model stage, shared by `embed` and `tokenize-images`.

CPU workers (the local executor's pool) decode and resize to uint8 (`ModelInputStage`). Their
results arrive here, in the main process, in input order, and go through three threads:

    feeder   pulls the workers' results (keeping the pool busy), makes host tensors,
             pins them on CUDA
    compute  copies batch k+1 to the device on a side stream while batch k runs the model;
             normalises on the device; `inference_mode`, bf16 autocast on CUDA, fp32 on CPU
    caller   (the sink) writes batch k-1 meanwhile

With an automatic batch size, a CUDA out-of-memory error halves the batch and retries the same
rows, so no row is lost or repeated. torch is imported only inside methods.
"""

from __future__ import annotations

import queue
import re
import threading
import warnings
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyarrow as pa

from mmtok.engine.local import BatchResult
from mmtok.engine.stage import Stage, StageResult
from mmtok.errors import MmtokError
from mmtok.io.schema import conform, make_rejects, reject_schema, with_fields
from mmtok.models.inputs import PIXELS

if TYPE_CHECKING:
    import torch

CPU_BATCH = 64  # auto batch size on CPU: big enough to amortise, small enough to stream
CUDA_BATCH = 512  # auto batch size on CUDA: the start; halved on out-of-memory


def resolve_device(text: str) -> str:
    """`auto`, `cpu`, `cuda` or `cuda:N` -> a torch device string; a clear error without a GPU."""
    import torch

    if text == "cpu":
        return "cpu"
    if text == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if not match:
        raise MmtokError(f"unknown device {text!r}", hint="use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise MmtokError(
            f"--device {text}: no CUDA GPU is visible to torch",
            hint="use --device cpu (or auto), or check the driver and CUDA_VISIBLE_DEVICES",
        )
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise MmtokError(f"--device {text}: only {torch.cuda.device_count()} CUDA device(s)")
    return f"cuda:{index}"


def pixels_array(column: pa.ChunkedArray | pa.Array, height: int, width: int) -> np.ndarray:
    """A fixed-size binary pixel column as an (N, height, width, 3) uint8 view (no copy when the
    column is one chunk)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    n, size = len(column), height * width * 3
    data = np.frombuffer(column.buffers()[1], np.uint8)[column.offset * size :][: n * size]
    return data.reshape(n, height, width, 3)


def fp16_vectors(vectors: np.ndarray) -> pa.FixedSizeListArray:
    """(N, D) floats -> `fixed_size_list<float16>[D]`."""
    n, dim = vectors.shape
    flat = pa.array(np.ascontiguousarray(vectors, np.float16).reshape(-1), pa.float16())
    return (
        pa.FixedSizeListArray.from_arrays(flat, dim)
        if n
        else pa.array([], pa.list_(pa.float16(), dim))
    )


@dataclass
class RowVerdicts:
    """Which rows of a batch a device stage keeps, and why the others go (in row order)."""

    keep: np.ndarray  # bool, one per row
    reasons: list[str]  # one per rejected row
    messages: list[str]


@dataclass
class _Failure:
    error: BaseException


_END = object()


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue, stop: threading.Event) -> Any:
    while not stop.is_set():
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            continue
    return None


class DeviceStage(Stage):
    """A stage that runs in the main process over the CPU workers' results.

    Subclasses say which host tensors a batch needs (`host_inputs`), what the model makes of a
    chunk of them on the device (`forward`), and how the outputs become columns (`columns`).
    The engine recognises a device stage by `run_stream` and runs it last.
    """

    name: ClassVar[str] = "device"
    consumes: ClassVar[tuple[str, ...]] = (PIXELS,)  # worker columns dropped from the output
    _input_schema: pa.Schema | None = None  # the run's input columns: what rejects carry

    def __init__(
        self, *, device: str = "cpu", batch_size: int | None = None, precision: str = "auto"
    ):
        self.device = device
        self.fixed_batch = batch_size  # None: automatic (halved on out-of-memory)
        self.precision = precision
        self._batch = batch_size or (CUDA_BATCH if device.startswith("cuda") else CPU_BATCH)
        self.halvings = 0

    # --- what a subclass provides -------------------------------------------------------------

    def host_inputs(self, kept: pa.Table) -> dict[str, torch.Tensor]:
        """CPU tensors with one row per kept row (runs on the feeder thread)."""
        raise NotImplementedError

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The model on one chunk of device tensors; one output row per input row."""
        raise NotImplementedError

    def columns(self, outputs: dict[str, np.ndarray], kept: pa.Table) -> dict[str, pa.Array]:
        """Output columns of one batch from the model's outputs (float32 numpy; integer
        outputs keep their dtype)."""
        raise NotImplementedError

    # --- the runtime ----------------------------------------------------------------------------

    @property
    def rows_per_batch(self) -> int:
        """Rows per unit of work from the workers: one model batch at the starting size."""
        return self._batch

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        import torch

        if self.device.startswith("cuda") and self.precision in ("auto", "bf16"):
            return torch.bfloat16
        return None  # fp32: bf16 autocast on CPU is ~8x slower (design note B.3)

    @property
    def precision_name(self) -> str:
        return (
            "bf16-autocast"
            if self.device.startswith("cuda") and self.precision != "fp32"
            else "fp32"
        )

    def rejects(self, outputs: dict[str, np.ndarray], kept: pa.Table) -> RowVerdicts | None:
        """Rows the stage rejects after the model (e.g. a low CLIP score); None keeps all."""
        return None

    def output_schema(
        self, worker_schema: pa.Schema, input_schema: pa.Schema | None = None
    ) -> pa.Schema:
        """The kept rows' schema: the workers' columns less the consumed ones, plus ours.

        Rejects carry the input's columns (`input_schema`, kept from the engine's first call),
        as the workers' rejects do: worker stages may add columns of their own (filter's probe)
        that rejects leave out."""
        names = [n for n in worker_schema.names if n not in self.consumes]
        base = pa.schema([worker_schema.field(n) for n in names], metadata=worker_schema.metadata)
        if input_schema is not None:
            self._input_schema = input_schema
        inputs = self._input_schema
        self._reject_schema = reject_schema(inputs if inputs is not None else base)
        return with_fields(base, self.output_fields())

    def process(self, rows: pa.Table) -> StageResult:
        """One batch, synchronously (tests and single calls); `run_stream` is the fast path."""
        kept, rejected = self._finish(self._stage(self._host(rows)), rows)
        return StageResult(kept, rejected or make_rejects(rows.slice(0, 0), self.name, [], []))

    def run_stream(self, results: Iterator[BatchResult]) -> Iterator[BatchResult]:
        """The workers' results with this stage's columns, in order, overlapping host work,
        transfers, compute and the caller's writes."""
        stop = threading.Event()
        prepared: queue.Queue = queue.Queue(maxsize=2)
        finished: queue.Queue = queue.Queue(maxsize=2)

        def feed() -> None:
            try:
                for result in results:
                    if stop.is_set():
                        return
                    if not _put(prepared, (result, self._host(result.kept)), stop):
                        return
                _put(prepared, _END, stop)
            except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
                _put(prepared, _Failure(e), stop)
            finally:
                close = getattr(results, "close", None)
                if close:
                    close()  # shuts the worker pool down from the thread that iterates it

        def compute() -> None:
            pending = None
            try:
                if self.device.startswith("cuda"):
                    import torch

                    torch.cuda.set_device(self.device)
                while True:
                    item = _get(prepared, stop)
                    if item is None:  # the caller stopped early
                        return
                    if isinstance(item, _Failure):
                        _put(finished, item, stop)
                        return
                    staged = None if item is _END else (item[0], self._stage(item[1]))
                    if pending is not None:  # batch k runs while batch k+1 is copied
                        result, inputs = pending
                        kept, rejected = self._finish(inputs, result.kept)
                        rejects = [*result.rejected, *([rejected] if rejected else [])]
                        if not _put(finished, BatchResult(kept, rejects, result.num_records), stop):
                            return
                    if staged is None:
                        _put(finished, _END, stop)
                        return
                    pending = staged
            except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
                _put(finished, _Failure(e), stop)

        threads = [
            threading.Thread(target=feed, name="mmtok-feed", daemon=True),
            threading.Thread(target=compute, name="mmtok-compute", daemon=True),
        ]
        for thread in threads:
            thread.start()
        try:
            while True:
                item = finished.get()
                if item is _END:
                    return
                if isinstance(item, _Failure):
                    raise item.error
                yield item
        finally:
            stop.set()
            for q in (prepared, finished):  # unblock a thread waiting to put
                while not q.empty():
                    q.get_nowait()
            for thread in threads:
                thread.join()

    def host_tensor(self, array: np.ndarray) -> torch.Tensor:
        """`array` as a CPU tensor: copied once into pinned memory on CUDA (so the copy to the
        device can be asynchronous), shared without a copy on CPU (the model only reads it)."""
        import torch

        if self.device.startswith("cuda"):
            dtype = torch.from_numpy(np.empty(0, array.dtype)).dtype
            tensor = torch.empty(array.shape, dtype=dtype, pin_memory=True)
            tensor.numpy()[...] = array
            return tensor
        with warnings.catch_warnings():  # Arrow buffers are read-only; nothing writes to them
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(array)

    def _host(self, kept: pa.Table) -> dict[str, torch.Tensor]:
        return self.host_inputs(kept)

    def _stage(self, inputs: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Start the host-to-device copies on a side stream (CUDA); returns the device tensors
        and the event the model waits on."""
        if not self.device.startswith("cuda"):
            return {"tensors": inputs, "event": None}
        import torch

        stream = getattr(self, "_copy_stream", None)
        if stream is None:
            stream = self._copy_stream = torch.cuda.Stream(self.device)
        with torch.cuda.stream(stream):
            tensors = {
                k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                for k, v in inputs.items()
            }
            event = torch.cuda.Event()
            event.record(stream)
        # The host tensors stay referenced until the copy is done (the event is waited on).
        return {"tensors": tensors, "event": event, "host": inputs}

    def on_device(self, tensors: dict[str, Any], kept: pa.Table) -> RowVerdicts | None:
        """Work on the device before the model that may find bad rows (e.g. decoding JPEGs);
        may replace entries of `tensors`. None keeps all rows."""
        return None

    def _finish(self, staged: dict[str, Any], kept: pa.Table) -> tuple[pa.Table, pa.Table | None]:
        tensors = staged["tensors"]
        if staged["event"] is not None:
            import torch

            current = torch.cuda.current_stream(self.device)
            current.wait_event(staged["event"])
            for t in tensors.values():
                if isinstance(t, torch.Tensor):
                    t.record_stream(current)  # the copy stream's memory is now used here
        schema = self.output_schema(kept.schema)
        dropped = []
        early = self.on_device(tensors, kept)
        if early is not None and not early.keep.all():
            keep = np.asarray(early.keep, bool)
            dropped.append(self._reject(kept, ~keep, early))
            kept = kept.filter(pa.array(keep))
            index = np.flatnonzero(keep)
            tensors = {k: v[index] if hasattr(v, "shape") else v for k, v in tensors.items()}
        outputs = self._forward_in_chunks(tensors, kept.num_rows)
        table = kept.drop_columns([c for c in self.consumes if c in kept.column_names])
        for name, column in self.columns(outputs, kept).items():
            table = table.drop_columns([name]) if name in table.column_names else table
            table = table.append_column(name, column)
        late = self.rejects(outputs, kept)
        if late is not None and not late.keep.all():
            dropped.append(self._reject(table, ~np.asarray(late.keep, bool), late))
            table = table.filter(pa.array(np.asarray(late.keep, bool)))
        rejected = pa.concat_tables(dropped) if dropped else None
        return conform(table, schema), rejected

    def _reject(self, rows: pa.Table, mask: np.ndarray, verdicts: RowVerdicts) -> pa.Table:
        chosen = rows.filter(pa.array(mask))
        table = make_rejects(chosen, self.name, verdicts.reasons, verdicts.messages)
        return conform(table, self._reject_schema)

    def _forward_in_chunks(self, tensors: dict[str, torch.Tensor], n: int) -> dict[str, np.ndarray]:
        import torch

        autocast = (
            torch.autocast("cuda", dtype=self.autocast_dtype)
            if self.autocast_dtype is not None
            else nullcontext()
        )
        parts: list[dict[str, torch.Tensor]] = []
        start = 0
        while start < n:
            size = min(self._batch, n - start)
            chunk = {k: v[start : start + size] for k, v in tensors.items() if hasattr(v, "shape")}
            try:
                with torch.inference_mode(), autocast:
                    out = self.forward(chunk)
            except torch.OutOfMemoryError:
                if self.fixed_batch is not None or size == 1:
                    raise MmtokError(
                        f"out of memory on {self.device} with a batch of {size} images",
                        hint="give a smaller --batch-size, or leave it out to find one",
                    ) from None
                del chunk
                self._batch, self.halvings = max(1, size // 2), self.halvings + 1
                if self.device.startswith("cuda"):
                    torch.cuda.empty_cache()
                continue  # the same rows again, in smaller batches
            # float outputs as float32; integer outputs (token ids, pixels) as they are
            parts.append({k: v.float() if v.is_floating_point() else v for k, v in out.items()})
            start += size
        if not parts:
            return {}
        return {k: torch.cat([p[k] for p in parts]).cpu().numpy() for k in parts[0]}
