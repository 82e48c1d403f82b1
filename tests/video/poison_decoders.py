"""A sample-frames stage whose decoder misbehaves on chosen videos, as real decoders do, for
the isolation tests (spawned workers import it by name).

The video's file name says what its decode does: `hang_decord*` sleeps when the decoder is
decord (and decodes with PyAV), `hang*` sleeps whatever the decoder, `crash*` sends itself
SIGSEGV, as a crashing native decoder does, `exit*` ends its process (`os._exit`). Anything
else decodes normally.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from mmtok.stages.frames import SampleFramesStage


class PoisonDecoders(SampleFramesStage):
    def decode(self, source: str | bytes, meta: Any, indices: list[int], decoder: str) -> Any:
        name = os.path.basename(source) if isinstance(source, str) else ""
        hangs = decoder == "decord" if name.startswith("hang_decord") else name.startswith("hang")
        if hangs:
            time.sleep(3600)
        elif name.startswith("crash"):
            os.kill(os.getpid(), signal.SIGSEGV)
        elif name.startswith("exit"):
            os._exit(3)
        return super().decode(source, meta, indices, decoder)


class PidStage(SampleFramesStage):
    """Notes in each frame's `decoder` which process decoded it."""

    def video_rows(self, row: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        rows, info = super().video_rows(row)
        for r in rows:
            r["decoder"] = f"{r['decoder']}@{os.getpid()}"
        return rows, info


class InterruptAt(SampleFramesStage):
    """Raises KeyboardInterrupt (as Ctrl-C does) on videos whose name holds `stop`."""

    def decode(self, source: str | bytes, meta: Any, indices: list[int], decoder: str) -> Any:
        if isinstance(source, str) and "stop" in os.path.basename(source):
            raise KeyboardInterrupt
        return super().decode(source, meta, indices, decoder)


class PausingDecoders(SampleFramesStage):
    """With FRAMES_PAUSE set: on a video whose name holds `pause`, writes its pid to that file
    and sleeps a minute (so a test can kill the whole run while a worker writes a slice)."""

    def decode(self, source: str | bytes, meta: Any, indices: list[int], decoder: str) -> Any:
        flag = os.environ.get("FRAMES_PAUSE")
        if flag and isinstance(source, str) and "pause" in os.path.basename(source):
            with open(flag, "w") as f:
                f.write(str(os.getpid()))
            time.sleep(60)
        return super().decode(source, meta, indices, decoder)
