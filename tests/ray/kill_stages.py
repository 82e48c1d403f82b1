"""Stages for the Ray fault tests; imported by the cluster's workers (the cluster's
PYTHONPATH holds this folder)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import pyarrow as pa

from mmtok.engine.stage import Stage, StageResult
from mmtok.io.schema import make_rejects
from mmtok.models.runtime import DeviceStage, RowVerdicts


class KillOnce(Stage):
    """Kills its own worker process (SIGKILL, like the out-of-memory killer) the first time it
    sees the row `victim`: the marker file says it happened, so the retry goes through. Adds
    the pid that processed each row, so a test can see work ran on the workers."""

    name: ClassVar[str] = "kill_once"
    isolate: ClassVar[bool] = True

    def __init__(self, marker: str, victim: str):
        self.marker, self.victim = marker, victim

    def output_fields(self) -> list[pa.Field]:
        return [pa.field("worker_pid", pa.int64())]

    def process(self, rows: pa.Table) -> StageResult:
        if self.victim in rows.column("id").to_pylist() and not Path(self.marker).exists():
            Path(self.marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), 9)
        kept = rows.append_column("worker_pid", pa.array([os.getpid()] * rows.num_rows))
        return StageResult(kept, make_rejects(rows.slice(0, 0), self.name, [], []))


class CaptionLengthModel(DeviceStage):
    """A model stage on the CPU with torch: twice each caption's length; rejects the rows whose
    caption length is a multiple of 5 (a device stage's own rejects)."""

    name: ClassVar[str] = "caption_length_model"
    consumes: ClassVar[tuple[str, ...]] = ("worker_pid",)  # what the CPU stage before it adds

    def output_fields(self) -> list[pa.Field]:
        return [pa.field("double_length", pa.int64())]

    def host_inputs(self, kept: pa.Table) -> dict:
        import torch

        lengths = [len(c or "") for c in kept.column("caption").to_pylist()]
        return {"x": torch.tensor(lengths, dtype=torch.float32)}

    def forward(self, inputs: dict) -> dict:
        return {"y": inputs["x"] * 2}

    def columns(self, outputs: dict, kept: pa.Table) -> dict:
        return {"double_length": pa.array(outputs["y"].astype("int64"))}

    def rejects(self, outputs: dict, kept: pa.Table) -> RowVerdicts | None:
        keep = (outputs["y"].astype("int64") // 2) % 5 != 0
        gone = int((~keep).sum())
        return RowVerdicts(keep, ["caption_too_short"] * gone, ["length is a multiple of 5"] * gone)


class Buggy(Stage):
    """A stage with a bug: raises on the row `victim` (not a bad row: the run must stop)."""

    name: ClassVar[str] = "buggy"

    def __init__(self, victim: str):
        self.victim = victim

    def process(self, rows: pa.Table) -> StageResult:
        if self.victim in rows.column("id").to_pylist():
            raise ZeroDivisionError(f"a bug met {self.victim}")
        return StageResult(rows, make_rejects(rows.slice(0, 0), self.name, [], []))
