"""Sinks: a dataset directory (Parquet shards, rejects, manifest), or JSON Lines on stdout.

The dataset sink writes into a staging directory next to the output and publishes it with a
rename, so a killed run never leaves a directory that looks finished. It commits at batch
boundaries: when a shard closes, the rejects so far are flushed and `state.json` records how
many input batches are fully written. `--resume` skips exactly those batches.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mmtok.errors import MmtokError

STATE_FILE = "state.json"
MANIFEST_FILE = "manifest.json"
REJECTS_FILE = "rejects.parquet"


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def reason_counts(rejected: pa.Table) -> Counter:
    counts = pc.value_counts(rejected.column("reason")).to_pylist()
    return Counter({c["values"]: c["counts"] for c in counts})


class ShardStats(Protocol):
    """Per-shard figures written into each shard's Parquet key-value metadata."""

    def add(self, kept: pa.Table) -> None: ...

    def take(self) -> dict[str, str]:
        """The metadata of the shard being closed; starts the next shard from zero."""
        ...


class DatasetSink:
    """Writes `part-NNNNN.parquet` shards, `rejects.parquet` and `manifest.json` into `out_dir`."""

    def __init__(
        self,
        out_dir: str | Path,
        row_schema: pa.Schema,
        reject_schema: pa.Schema,
        *,
        run_key: dict[str, Any],
        metadata: dict[str, str],
        overwrite: bool = False,
        resume: bool = False,
        shard_rows: int = 50_000,
        shard_bytes: int = 512 << 20,
        row_group_rows: int = 8_192,
        row_group_bytes: int = 64 << 20,
        reject_commit_rows: int = 20_000,
        shard_stats: ShardStats | None = None,
    ):
        self.out_dir = Path(out_dir).absolute()
        self.staging = self.out_dir.parent / f".{self.out_dir.name}.mmtok-staging"
        self.metadata = {k.encode(): v.encode() for k, v in metadata.items()}
        self.row_schema = row_schema.with_metadata(self.metadata)
        self.reject_schema = reject_schema.with_metadata(self.metadata)
        self.run_key = run_key  # what must match for a resume: inputs, config, sharding
        self.overwrite, self.resume = overwrite, resume
        self.shard_rows, self.shard_bytes = shard_rows, shard_bytes
        self.row_group_rows, self.row_group_bytes = row_group_rows, row_group_bytes
        self.shard_stats = shard_stats
        self._buffered_bytes = 0
        self.reject_commit_rows = reject_commit_rows
        self._writer: pq.ParquetWriter | None = None
        self._open_rows = self._open_bytes = 0
        self._row_buffer: list[pa.Table] = []
        self._buffered_rows = 0
        self._pending_rejects: list[pa.Table] = []
        self._pending_reject_rows = 0
        self._batches_since_commit = 0
        self._records_since_commit = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self) -> int:
        """Prepare the staging directory; returns how many input batches a resume skips."""
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        if self.out_dir.exists() and not self.overwrite:
            done = (self.out_dir / MANIFEST_FILE).exists()
            raise MmtokError(
                f"output {self.out_dir} already exists" + (" and is complete" if done else ""),
                hint="pass --overwrite to replace it, or choose another -o",
            )
        if self.staging.exists():
            if self.resume:
                return self._load_state()
            if not self.overwrite:
                raise MmtokError(
                    f"an unfinished run left {self.staging}",
                    hint="pass --resume to continue it, or --overwrite to start again",
                )
            shutil.rmtree(self.staging)
        self.staging.mkdir()
        (self.staging / "rejects").mkdir()
        self.state = {
            "run_key": self.run_key,
            "batches_done": 0,
            "records_done": 0,
            "parts": [],
            "reject_chunks": [],
            "resumed": 0,
        }
        _write_json_atomic(self.staging / STATE_FILE, self.state)
        return 0

    def _load_state(self) -> int:
        try:
            with open(self.staging / STATE_FILE) as f:
                state = json.load(f)
        except (OSError, ValueError) as e:
            raise MmtokError(
                f"cannot resume: {self.staging / STATE_FILE} is unreadable ({e})",
                hint="pass --overwrite to start again",
            ) from None
        if state["run_key"] != json.loads(json.dumps(self.run_key, default=str)):
            raise MmtokError(
                "cannot resume: the inputs or settings differ from the run that was killed",
                hint="run the same command again with --resume, or --overwrite to start again",
            )
        # Anything not recorded in the state was written after the last commit: drop it.
        keep = {p["name"] for p in state["parts"]} | {STATE_FILE, "rejects"}
        for path in self.staging.iterdir():
            if path.name not in keep:
                path.unlink()
        chunks = set(state["reject_chunks"])
        for path in (self.staging / "rejects").iterdir():
            if path.name not in chunks:
                path.unlink()
        state["resumed"] += 1
        self.state = state
        return state["batches_done"]

    def committed_parts(self) -> Iterator[Path]:
        """Part files finished before this run started (for summaries of a resumed run)."""
        for part in self.state["parts"]:
            yield self.staging / part["name"]

    # -- writing -----------------------------------------------------------------------------

    def write(self, kept: pa.Table, rejected: list[pa.Table], num_records: int) -> None:
        if kept.num_rows:
            if self.shard_stats is not None:
                self.shard_stats.add(kept)
            self._row_buffer.append(kept)
            self._buffered_rows += kept.num_rows
            self._buffered_bytes += kept.nbytes
            self._open_rows += kept.num_rows
            self._open_bytes += kept.nbytes
            # rows of pixels are large: cut row groups by bytes too, so memory stays bounded
            if (
                self._buffered_rows >= self.row_group_rows
                or self._buffered_bytes >= self.row_group_bytes
            ):
                self._flush_row_group()
        for table in rejected:
            self._pending_rejects.append(table)
            self._pending_reject_rows += table.num_rows
        self._batches_since_commit += 1
        self._records_since_commit += num_records
        if (
            self._open_rows >= self.shard_rows
            or self._open_bytes >= self.shard_bytes
            or self._pending_reject_rows >= self.reject_commit_rows
        ):
            self.commit()

    def _part_name(self) -> str:
        return f"part-{len(self.state['parts']):05d}.parquet"

    def _flush_row_group(self) -> None:
        if not self._row_buffer:
            return
        if self._writer is None:
            path = self.staging / (self._part_name() + ".tmp")
            self._writer = pq.ParquetWriter(path, self.row_schema, compression="zstd")
        self._writer.write_table(
            pa.concat_tables(self._row_buffer), row_group_size=self.row_group_rows
        )
        self._row_buffer, self._buffered_rows, self._buffered_bytes = [], 0, 0

    def commit(self) -> None:
        """Make everything written so far durable and record it in the state file."""
        self._flush_row_group()
        if self._writer is not None:
            if self.shard_stats is not None:
                self._writer.add_key_value_metadata(self.shard_stats.take())
            self._writer.close()
            self._writer = None
            name = self._part_name()
            os.replace(self.staging / (name + ".tmp"), self.staging / name)
            self.state["parts"].append({"name": name, "rows": self._open_rows})
        self._open_rows = self._open_bytes = 0
        if self._pending_rejects:
            name = f"chunk-{len(self.state['reject_chunks']):05d}.parquet"
            tmp = self.staging / "rejects" / (name + ".tmp")
            pq.write_table(pa.concat_tables(self._pending_rejects), tmp, compression="zstd")
            os.replace(tmp, self.staging / "rejects" / name)
            self.state["reject_chunks"].append(name)
            self._pending_rejects, self._pending_reject_rows = [], 0
        self.state["batches_done"] += self._batches_since_commit
        self.state["records_done"] += self._records_since_commit
        self._batches_since_commit = self._records_since_commit = 0
        _write_json_atomic(self.staging / STATE_FILE, self.state)

    def abandon(self) -> None:
        """Stop after an interruption: commit what is complete and leave staging for --resume."""
        if self._writer is not None or self._row_buffer or self._pending_rejects:
            self.commit()

    # -- finishing ---------------------------------------------------------------------------

    def finish(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Merge rejects, write the manifest and publish the directory; returns the manifest."""
        self.commit()
        reject_counts: Counter = Counter()
        with pq.ParquetWriter(
            self.staging / REJECTS_FILE, self.reject_schema, compression="zstd"
        ) as w:
            for name in self.state["reject_chunks"]:
                table = pq.read_table(self.staging / "rejects" / name).cast(self.reject_schema)
                reject_counts += reason_counts(table)
                w.write_table(table, row_group_size=self.row_group_rows)
        shutil.rmtree(self.staging / "rejects")
        rows_out = sum(p["rows"] for p in self.state["parts"])
        rejected = sum(reject_counts.values())
        files = [
            {
                "name": p["name"],
                "kind": "rows",
                "rows": p["rows"],
                "sha256": sha256_file(self.staging / p["name"]),
            }
            for p in self.state["parts"]
        ]
        files.append(
            {
                "name": REJECTS_FILE,
                "kind": "rejects",
                "rows": rejected,
                "sha256": sha256_file(self.staging / REJECTS_FILE),
            }
        )
        manifest = {
            **manifest,
            "files": files,
            "counts": {
                "in": self.state["records_done"],
                "out": rows_out,
                "rejected": rejected,
                "rejected_by_reason": dict(sorted(reject_counts.items())),
            },
            "resumed": self.state["resumed"],
        }
        if manifest["counts"]["in"] != rows_out + rejected:
            raise AssertionError(f"row accounting broken: {manifest['counts']}")  # a bug, not data
        (self.staging / STATE_FILE).unlink()
        _write_json_atomic(self.staging / MANIFEST_FILE, manifest)
        self._publish()
        return manifest

    def _publish(self) -> None:
        old = None
        if self.out_dir.exists():
            old = self.out_dir.parent / f".{self.out_dir.name}.mmtok-old-{os.getpid()}"
            os.replace(self.out_dir, old)
        os.replace(self.staging, self.out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    return value


def row_to_json(row: dict[str, Any], include_bytes: bool) -> str:
    """One row as a JSON line; the image becomes a path, or a data URI when it has no path."""
    image = row.get("image")
    if image is not None:
        if image.get("path") and not include_bytes:
            row["image"] = image["path"]
        elif image.get("bytes") is not None:
            row["image"] = (
                "data:application/octet-stream;base64," + base64.b64encode(image["bytes"]).decode()
            )
        else:
            row["image"] = image.get("path")
    return json.dumps(_json_value(row), ensure_ascii=False, default=str)


class StdoutSink:
    """JSON Lines of kept rows on stdout; rejects as JSON Lines to a file, or to stderr."""

    def __init__(
        self,
        *,
        include_bytes: bool = False,
        rejects_path: str | None = None,
        stdout: IO[str] | None = None,
        stderr: IO[str] | None = None,
    ):
        self.include_bytes = include_bytes
        self.stdout = stdout or sys.stdout
        self._rejects_file = open(rejects_path, "w") if rejects_path else None  # noqa: SIM115
        self.rejects_out = self._rejects_file or stderr or sys.stderr
        self.counts = {"in": 0, "out": 0, "rejected": 0}
        self.reasons: Counter = Counter()

    def open(self) -> int:
        return 0

    def committed_parts(self) -> Iterator[Path]:
        return iter(())

    def write(self, kept: pa.Table, rejected: list[pa.Table], num_records: int) -> None:
        try:
            for row in kept.to_pylist():
                self.stdout.write(row_to_json(row, self.include_bytes) + "\n")
            self.stdout.flush()
        except BrokenPipeError:
            # The reader went away (e.g. `| head`): stop quietly, as Unix tools do.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise SystemExit(0) from None
        for table in rejected:
            self.reasons += reason_counts(table)
            for row in table.to_pylist():
                self.rejects_out.write(row_to_json(row, self.include_bytes) + "\n")
            self.counts["rejected"] += table.num_rows
        self.counts["in"] += num_records
        self.counts["out"] += kept.num_rows

    def abandon(self) -> None:
        self.finish({})

    def finish(self, manifest: dict[str, Any]) -> dict[str, Any]:
        if self._rejects_file:
            self._rejects_file.close()
        counts = {**self.counts, "rejected_by_reason": dict(sorted(self.reasons.items()))}
        return {**manifest, "counts": counts}
