"""Stages that misbehave on chosen rows, as real decoders do, for the isolation tests.

Spawned workers import this module by name (pytest puts tests/engine on sys.path, and spawn
passes sys.path to its children), and the scripts of the subprocess tests run it directly:

  python poison_stages.py INPUT.jsonl OUT_DIR WORKERS [--resume]

A row's caption says what to do: `#kill` (SIGKILL, as the out-of-memory killer does), `#exit`
(os._exit(3)), `#hang` (sleep `POISON_HANG` seconds, default an hour), `#pid:FILE` (write the
worker's pid to FILE, then sleep `POISON_SLOW` seconds), `#slow` (sleep `POISON_SLOW` seconds).
Anything else is probed.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

from mmtok.stages.probe import ProbeStage


class PoisonProbe(ProbeStage):
    input_columns: ClassVar[tuple[str, ...]] = ("image", "caption")

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        caption = row.get("caption") or ""
        slow = float(os.environ.get("POISON_SLOW", "1"))
        if caption == "#kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif caption == "#exit":
            os._exit(3)
        elif caption == "#hang":
            time.sleep(float(os.environ.get("POISON_HANG", "3600")))
        elif caption.startswith("#pid:"):
            Path(caption[5:] + ".tmp").write_text(str(os.getpid()))
            os.replace(caption[5:] + ".tmp", caption[5:])
            time.sleep(slow)
        elif caption == "#slow":
            time.sleep(slow)
        return super().process_row(row)


class DieInSetup(PoisonProbe):
    """Its worker dies in `setup`: every time, or only the first time (while `marker` is absent)."""

    def __init__(self, marker: str | None = None):
        super().__init__()
        self.marker = marker

    def setup(self) -> None:
        if self.marker is None or not os.path.exists(self.marker):
            if self.marker is not None:
                Path(self.marker).touch()
            os.kill(os.getpid(), signal.SIGKILL)
        super().setup()


def main(argv: list[str]) -> int:
    from mmtok.engine.pipeline import OutputOptions, run_pipeline
    from mmtok.errors import MmtokError
    from mmtok.io.sources import Inputs, ReadOptions

    source, out, workers = argv[0], argv[1], int(argv[2])
    try:
        run_pipeline(
            Inputs([source], ReadOptions(batch_rows=4)),
            [PoisonProbe()],
            OutputOptions(out, resume="--resume" in argv, shard_rows=4),
            workers=workers,
        )
    except MmtokError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


class ReportModules(ProbeStage):
    """Adds `cli_modules`: the CLI modules (and pandas, which pyarrow would import on its first
    conversion) loaded in the worker: a worker should load none of them."""

    def output_fields(self):
        import pyarrow as pa

        return [*super().output_fields(), pa.field("cli_modules", pa.string())]

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        names = ("typer", "rich", "mmtok.cli.app", "pandas")
        loaded = sorted(m for m in names if sys.modules.get(m) is not None)
        return {**super().process_row(row), "cli_modules": ",".join(loaded)}


class ReportProcess(ProbeStage):
    """Adds where each row ran: `worker_pid`, `worker_parent`, `from_server` (the worker is a
    fork of the worker server) and `mark` (the MMTOK_TEST_MARK variable it sees)."""

    def output_fields(self):
        import pyarrow as pa

        fields = [pa.field(n, pa.int64()) for n in ("worker_pid", "worker_parent")]
        fields += [pa.field("from_server", pa.bool_()), pa.field("mark", pa.string())]
        return [*super().output_fields(), *fields]

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        return {
            **super().process_row(row),
            "worker_pid": os.getpid(),
            "worker_parent": os.getppid(),
            "from_server": "mmtok.engine.worker_server" in sys.modules,
            "mark": os.environ.get("MMTOK_TEST_MARK"),
        }
