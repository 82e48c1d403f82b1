"""Dedup writing stages for the fault tests, imported by the worker processes (pickled by
reference): the real `DedupStage`, plus a kill or a pause at a chosen row."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pyarrow as pa

from mmtok.engine.stage import StageResult
from mmtok.stages.dedup import DedupStage


class KillOnceDedup(DedupStage):
    """SIGKILLs its own process (as the out-of-memory killer would) the first time a batch
    holds the row `victim`; the marker file says it happened (so the retry goes through)."""

    def __init__(self, decisions, settings, marker: str, victim: str):
        super().__init__(decisions, settings)
        self.marker, self.victim = marker, victim

    def process(self, rows: pa.Table) -> StageResult:
        if self.victim in rows.column("id").to_pylist() and not Path(self.marker).exists():
            Path(self.marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return super().process(rows)


class PausingDedup(DedupStage):
    """With DEDUP_PAUSE set: writes its pid to that file and sleeps a minute on the batch that
    holds the row `DEDUP_PAUSE_AT` (so a test can kill the run during the writing pass)."""

    def process(self, rows: pa.Table) -> StageResult:
        pause = os.environ.get("DEDUP_PAUSE")
        if pause and os.environ["DEDUP_PAUSE_AT"] in rows.column("id").to_pylist():
            Path(pause).write_text(str(os.getpid()))
            time.sleep(60)
        return super().process(rows)
