"""A model stage for the Ray fault tests; imported by the cluster's workers (the cluster's
PYTHONPATH holds this folder)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa

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
