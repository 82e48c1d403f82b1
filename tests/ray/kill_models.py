"""Model stages for the Ray tests; imported by the cluster's workers (the cluster's
PYTHONPATH holds this folder)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa

from mmtok.models.runtime import DeviceStage
from mmtok.stages.embed import EmbedStage


class DieOnceEmbed(EmbedStage):
    """The real embed stage, whose process dies (`os._exit`, as a crashed CUDA driver or the
    out-of-memory killer would end it) the first time it sees the row named by
    MMTOK_TEST_DIE_ONCE=`marker:id` in the driver that builds it; the marker file (the dead
    process's pid) says it happened, so the retry goes through."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.marker, self.victim = os.environ["MMTOK_TEST_DIE_ONCE"].rsplit(":", 1)

    def host_inputs(self, kept: pa.Table) -> dict:
        if self.victim in kept.column("id").to_pylist() and not Path(self.marker).exists():
            Path(self.marker).write_text(str(os.getpid()))
            os._exit(1)
        return super().host_inputs(kept)


class OutOfMemoryAboveTwo(DeviceStage):
    """A model stage on the CPU that runs out of memory (`torch.OutOfMemoryError`, as CUDA
    raises it) on more than two rows at once: an automatic batch size halves until it fits.
    Adds each caption's length."""

    name: ClassVar[str] = "oom_above_two"

    def output_fields(self) -> list[pa.Field]:
        return [pa.field("length", pa.int64())]

    def host_inputs(self, kept: pa.Table) -> dict:
        import torch

        lengths = [len(c or "") for c in kept.column("caption").to_pylist()]
        return {"x": torch.tensor(lengths, dtype=torch.int64)}

    def forward(self, inputs: dict) -> dict:
        import torch

        if len(inputs["x"]) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (a test's)")
        return {"y": inputs["x"]}

    def columns(self, outputs: dict, kept: pa.Table) -> dict:
        return {"length": pa.array(outputs["y"])}
