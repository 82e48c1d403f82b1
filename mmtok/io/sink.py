"""Sinks: a dataset folder (Parquet shards, side outputs, manifest), or JSON Lines on stdout.

The dataset sink builds the output in a staging folder next to it and publishes it with one
rename, so a folder with a manifest is always complete:

    .OUT.mmtok-staging/       lock (pid, host, start time), state.json, rejects/ (chunks),
                              slices/ (the workers' files, until adopted)
    .OUT.mmtok-staging/out/   the output being built (the layout of `mmtok.io.layout`)

Every step is ordered: write a `.tmp`, fsync, rename, and only then record it in `state.json`
(itself replaced atomically). `--resume` drops whatever `state.json` does not list, so an
interrupt or a kill -9 at any instant leaves either a run that resumes to the same rows or a
complete output. Commits fall on input batch boundaries: when a shard closes, the rejects so
far are flushed and `state.json` records how many input batches are fully written.

Most runs do not write rows here: the workers write each slice of the input into its own files
under `slices/` (`mmtok.io.shard_writer`), and `adopt` renames a finished slice's files into
place as the next shards and reject chunk, in input order, then records the slice in
`state.json` (so a resume starts at the first slice not adopted). `write` remains for the rows
that must pass through the main process (a device stage, and batches read here).

Side outputs (clusters, budget report) are written into the staging folder and listed in the
manifest before the rename. A lock on the staging folder keeps a second run (and its
--overwrite) away from a running one.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mmtok.errors import MmtokError
from mmtok.io.hf_features import hf_schema
from mmtok.io.layout import MANIFEST_FILE, REJECTS_FILE, SIDE_DIR
from mmtok.io.output_guard import (
    check_not_input,
    check_replaceable,
    read_manifest,
    real,
    remove_output,
)
from mmtok.io.shard_writer import ShardSpec, SliceOutput, cast_for_write, write_options

STATE_FILE = "state.json"
LOCK_FILE = "lock"
SLICES_DIR = "slices"  # the workers' finished slice files, until adopted as shards
# Adopted slices are recorded in the state file at most this often: a killed run redoes at most
# this much work more on --resume.
STATE_EVERY = 1.0
STATE_VERSION = 4  # 3: "position" (slice, batches of it done, rows read); 4: slices adopted whole
_PART = re.compile(r"^part-\d{5}\.parquet(\.tmp)?$")
_CHUNK = re.compile(r"^chunk-\d{5}\.parquet(\.tmp)?$")


def crash_point(step: str) -> None:
    """A named step of the commit protocol. Does nothing; tests inject interrupts here."""


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _fsync(path: Path) -> None:
    """Flush a file (or a folder's entries) to disk, so a rename never outlives its data."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace(tmp: Path, path: Path) -> None:
    _fsync(tmp)
    os.replace(tmp, path)
    _fsync(path.parent)


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, default=str)
    _replace(tmp, path)


def reason_counts(rejected: pa.Table) -> Counter:
    counts = pc.value_counts(rejected.column("reason")).to_pylist()
    return Counter({c["values"]: c["counts"] for c in counts})


def staging_path(out_dir: Path) -> Path:
    return out_dir.parent / f".{out_dir.name}.mmtok-staging"


def _take_lock(path: Path, out: str) -> IO[str]:
    """Hold an exclusive lock on `path` for this process's life; who holds it is written in it."""
    f = open(path, "a+")  # noqa: SIM115 -- held open for the whole run
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read()
        f.close()
        raise MmtokError(
            f"another mmtok run is writing {out}: {_describe_holder(holder)}",
            hint="wait for it to end, or stop it and continue with --resume",
        ) from None
    f.seek(0)
    f.truncate()
    started = datetime.now(UTC).isoformat(timespec="seconds")
    f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started}))
    f.flush()
    return f


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _describe_holder(text: str) -> str:
    try:
        h = json.loads(text)
        return f"pid {h['pid']} on {h['host']}, started {h['started']}"
    except (ValueError, KeyError, TypeError):
        return "a run that is starting"


class ShardStats(Protocol):
    """Per-shard figures written into each shard's Parquet key-value metadata."""

    def add(self, kept: pa.Table) -> None: ...

    def take(self) -> dict[str, str]:
        """The metadata of the shard being closed; starts the next shard from zero."""
        ...


class DatasetSink:
    """Writes `part-NNNNN.parquet` shards and `__mmtok__/` (manifest, rejects, side outputs)."""

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
        inputs: list[str] | None = None,
        hf_features: dict[str, Any] | None = None,
        shard_rows: int = 50_000,
        shard_bytes: int = 512 << 20,
        row_group_rows: int = 8_192,
        row_group_bytes: int = 64 << 20,
        reject_commit_rows: int = 20_000,
        shard_stats: ShardStats | None = None,
        expands_rows: bool = False,
    ):
        self.expands_rows = expands_rows  # one input row gives several output rows
        self.shown = str(out_dir)
        self.out_dir = real(out_dir)  # a symlinked -o writes where the link points
        self.root = staging_path(self.out_dir)
        self.build = self.root / "out"
        self.inputs = inputs or []
        self.metadata = {k.encode(): v.encode() for k, v in metadata.items()}
        self.row_schema = row_schema
        self.reject_schema = reject_schema
        # what is written: the image column in the `datasets` Image layout, with its features
        self.row_write_schema = hf_schema(row_schema.with_metadata(self.metadata), hf_features)
        self.reject_write_schema = hf_schema(
            reject_schema.with_metadata(self.metadata), hf_features
        )
        self.run_key = json.loads(json.dumps(run_key, default=str))  # as state.json holds it
        self.overwrite, self.resume = overwrite, resume
        self.shard_rows, self.shard_bytes = shard_rows, shard_bytes
        self.row_group_rows, self.row_group_bytes = row_group_rows, row_group_bytes
        self.shard_stats = shard_stats
        self.reject_commit_rows = reject_commit_rows
        self._lock: IO[str] | None = None
        self._busy = False  # inside write/commit: an interrupt here leaves buffers half-done
        self._unsynced: set[Path] = set()  # folders with renames the state file does not list
        self._state_written = time.monotonic()
        self._reset_buffers()
        self._manifest: dict[str, Any] | None = None
        self._side_files: list[dict[str, Any]] = []

    def _reset_buffers(self) -> None:
        self._writer: pq.ParquetWriter | None = None
        self._open_rows = self._open_bytes = 0
        self._row_buffer: list[pa.Table] = []
        self._buffered_rows = self._buffered_bytes = 0
        self._pending_rejects: list[pa.Table] = []
        self._pending_reject_rows = 0
        self._batches_since_commit = self._records_since_commit = 0
        self._position: Any = None  # where the last batch written was in the input

    # -- checks ------------------------------------------------------------------------------

    def check(self) -> None:
        """The checks `open` makes, without writing: run them before an expensive first pass."""
        check_not_input(self.shown, self.inputs)
        self._clear_leftovers()
        if self.root.exists():
            with _take_lock(self.root / LOCK_FILE, self.shown):
                pass  # not held by a running job
            if not (self.resume or self.overwrite):
                self._refuse_unfinished()
            if self.resume:
                return
        self._check_existing_output(self.overwrite)

    def _clear_leftovers(self) -> None:
        """Remove what a killed run of ours left and no run holds: a staging folder whose
        output was already published, or one killed while it was being created."""
        for tmp in self.root.parent.glob(f"{self.root.name}.*"):
            if not tmp.name.rsplit(".", 1)[-1].isdigit() or not tmp.is_dir():
                continue
            if not any(tmp.iterdir()):
                if not _alive(int(tmp.name.rsplit(".", 1)[-1])):
                    tmp.rmdir()
            elif (tmp / LOCK_FILE).is_file():
                with contextlib.suppress(MmtokError), _take_lock(tmp / LOCK_FILE, self.shown):
                    shutil.rmtree(tmp)
        if self.root.is_dir() and not self.root.is_symlink() and not any(self.root.iterdir()):
            self.root.rmdir()  # killed between removing its lock and itself: nothing to lose
        if self.root.exists():
            if not self._own_staging():
                self._refuse_foreign_staging()
            published = not self.build.exists() and (self.root / LOCK_FILE).is_file()
            if published:  # a kill after the rename left only the staging's leftovers
                self._lock = _take_lock(self.root / LOCK_FILE, self.shown)
                self._remove_staging()

    def _own_staging(self) -> bool:
        return (self.root / LOCK_FILE).is_file() or (self.root / STATE_FILE).is_file()

    def _refuse_foreign_staging(self) -> None:
        raise MmtokError(
            f"{self.root} exists and was not written by mmtok", hint="move it away or rename it"
        )

    def _refuse_unfinished(self) -> None:
        raise MmtokError(
            f"an unfinished run left {self.root}",
            hint="pass --resume to continue it, or --overwrite to start again",
        )

    def _check_existing_output(self, replace: bool) -> None:
        out = self.out_dir
        if not out.exists():
            return
        if not out.is_dir():
            raise MmtokError(f"output {self.shown} is a file", hint="choose a folder for -o")
        if not any(out.iterdir()):
            return  # an empty folder: nothing to lose
        if replace:
            check_replaceable(out, self.shown)
            return
        complete = read_manifest(out) is not None
        if complete and self.resume:
            raise MmtokError(
                f"output {self.shown} is already complete: nothing to resume",
                hint="pass --overwrite to run it again",
            )
        raise MmtokError(
            f"output {self.shown} already exists"
            + (" and is a complete mmtok output" if complete else " and is not an mmtok output"),
            hint="pass --overwrite to replace it, or choose another -o"
            if complete
            else "choose a new folder for -o",
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self) -> int:
        """Prepare the staging folder; returns how many input batches a resume skips."""
        try:
            return self._open()
        except BaseException:
            self.release()  # a refused run holds no lock
            raise

    def _open(self) -> int:
        check_not_input(self.shown, self.inputs)
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self._clear_leftovers()
        if self.root.exists():
            self._lock = _take_lock(self.root / LOCK_FILE, self.shown)
            if self.resume:
                return self._resume()
            if not self.overwrite:
                self._refuse_unfinished()
            self._remove_staging()
        self._check_existing_output(self.overwrite)
        self._create()
        return 0

    def _remove_staging(self) -> None:
        """Delete a staging folder no run holds, entry by entry: only names mmtok writes."""
        root = self.root
        for name in ("out", "rejects", SLICES_DIR):
            if (root / name).is_dir() and not (root / name).is_symlink():
                shutil.rmtree(root / name)
        if (root / "replaced").is_dir():
            remove_output(root / "replaced")
        for path in root.iterdir():
            if path.name in (STATE_FILE, STATE_FILE + ".tmp") or _PART.match(path.name):
                path.unlink()
        # The lock goes last: until it goes the folder says it is mmtok's, and after it the
        # folder is empty (a kill in between leaves an empty folder, see _clear_leftovers).
        with contextlib.suppress(FileNotFoundError):
            (root / LOCK_FILE).unlink()
        with contextlib.suppress(OSError):
            root.rmdir()  # what is left was not written by mmtok, and stays
        self.release()

    def _create(self) -> None:
        # Build the staging folder under a private name with the lock taken, then rename it into
        # place: a second run either sees no staging or one whose lock is already held.
        tmp = self.root.with_name(f"{self.root.name}.{os.getpid()}")
        if tmp.exists():
            shutil.rmtree(tmp)  # our own pid's leftover
        tmp.mkdir()
        lock = _take_lock(tmp / LOCK_FILE, self.shown)
        (tmp / "rejects").mkdir()
        (tmp / SLICES_DIR).mkdir()
        (tmp / "out" / SIDE_DIR).mkdir(parents=True)
        self.state = {
            "version": STATE_VERSION,
            "run_key": self.run_key,
            "replace": self.overwrite,
            "batches_done": 0,
            "records_done": 0,
            "position": None,
            "parts": [],
            "reject_chunks": [],
            "resumed": 0,
        }
        _write_json_atomic(tmp / STATE_FILE, self.state)
        try:
            os.rename(tmp, self.root)
        except OSError:
            shutil.rmtree(tmp)
            lock.close()
            with _take_lock(self.root / LOCK_FILE, self.shown):
                pass
            raise MmtokError(f"another mmtok run started writing {self.shown}") from None
        self._lock = lock

    def _resume(self) -> int:
        try:
            state = json.loads((self.root / STATE_FILE).read_text())
        except (OSError, ValueError) as e:
            raise MmtokError(
                f"cannot resume: {self.root / STATE_FILE} is unreadable ({e})",
                hint="pass --overwrite to start again",
            ) from None
        if state.get("version") != STATE_VERSION:
            raise MmtokError(
                f"cannot resume: {self.root} was left by another version of mmtok",
                hint="pass --overwrite to start again",
            )
        if state["run_key"] != self.run_key:
            raise MmtokError(
                "cannot resume: the inputs or settings differ from the run that was killed",
                hint="run the same command again with --resume, or --overwrite to start again",
            )
        self.overwrite = self.overwrite or state["replace"]
        if self.out_dir.exists() and (self.root / "replaced").exists():
            raise MmtokError(f"cannot resume: {self.shown} reappeared while it was replaced")
        self._check_existing_output(self.overwrite)
        # Anything the state does not list was written after the last commit: drop it. Only
        # names mmtok writes are touched; the side folder is rebuilt by finish and publish.
        parts = {p["name"] for p in state["parts"]}
        for path in self.build.iterdir():
            if _PART.match(path.name) and path.name not in parts:
                path.unlink()
        missing = [n for n in parts if not (self.build / n).is_file()]
        if missing:
            raise MmtokError(
                f"cannot resume: {self.build / missing[0]} is gone",
                hint="pass --overwrite to start again",
            )
        side = self.build / SIDE_DIR
        side.mkdir(exist_ok=True)
        for path in side.iterdir():
            if path.is_file():
                path.unlink()
        # the files of slices not adopted run again: none of them is listed anywhere
        slices = self.root / SLICES_DIR
        if slices.is_dir() and not slices.is_symlink():
            # what is left is never adopted (only the files a finished slice names are): a file
            # that a dying worker of the killed run still wrote may stay, and does no harm
            shutil.rmtree(slices, ignore_errors=True)
        slices.mkdir(exist_ok=True)
        chunks = set(state["reject_chunks"])
        for path in (self.root / "rejects").iterdir():
            if _CHUNK.match(path.name) and path.name not in chunks:
                path.unlink()
        state["resumed"] += 1
        _write_json_atomic(self.root / STATE_FILE, state)
        self.state = state
        return state["batches_done"]

    def committed_parts(self) -> Iterator[Path]:
        """Part files finished before this run started (for summaries of a resumed run)."""
        for part in self.state["parts"]:
            yield self.build / part["name"]

    # -- writing -----------------------------------------------------------------------------

    def write(
        self, kept: pa.Table, rejected: list[pa.Table], num_records: int, position: Any = None
    ) -> None:
        """`position`: where the batch was in the input (JSON); a commit records the last one,
        so a resumed run knows where to start reading (`state["position"]`)."""
        self._busy = True  # stays set if this raises: `abandon` must not commit half a write
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
        self._position = position
        if (
            self._open_rows >= self.shard_rows
            or self._open_bytes >= self.shard_bytes
            or self._pending_reject_rows >= self.reject_commit_rows
        ):
            self.commit()
        self._busy = False

    def _part_name(self) -> str:
        return f"part-{len(self.state['parts']):05d}.parquet"

    def _flush_row_group(self) -> None:
        if not self._row_buffer:
            return
        if self._writer is None:
            path = self.build / (self._part_name() + ".tmp")
            schema = self.row_write_schema
            self._writer = pq.ParquetWriter(path, schema, **write_options(schema))
        table = cast_for_write(self._row_buffer, self.row_write_schema)
        self._row_buffer, self._buffered_rows, self._buffered_bytes = [], 0, 0
        crash_point("row-group")
        self._writer.write_table(table, row_group_size=self.row_group_rows)

    def shard_spec(self, send_columns: list[str]) -> ShardSpec:
        """What a worker needs to write its slices into this staging folder itself."""
        return ShardSpec(
            str(self.root / SLICES_DIR),
            self.row_write_schema,
            self.shard_rows,
            self.shard_bytes,
            self.row_group_rows,
            self.row_group_bytes,
            self.shard_stats,
            send_columns,
        )

    def adopt(self, output: SliceOutput, position: Any) -> None:
        """Publish a finished slice's files (written by a worker, see `mmtok.io.shard_writer`)
        as the next shards and reject chunk, by renaming them, then record them in the state
        file, at most every `STATE_EVERY` seconds (and at `commit`): with fsyncs, a state write
        costs ~10 ms of the main process, which otherwise paid it for every slice. Slices are
        adopted in input order; a kill before the state is written leaves renamed files that no
        state lists, which `--resume` drops (and runs those slices again)."""
        assert not self._row_buffer and self._writer is None, "adopt() after write()"
        self._busy = True
        slices = self.root / SLICES_DIR
        # a new state (the old one stands until this one is complete): only these lists grow,
        # so they are copied, not the whole state (a deep copy per slice grew with the run)
        state = {
            **self.state,
            "parts": list(self.state["parts"]),
            "reject_chunks": list(self.state["reject_chunks"]),
        }
        for name, rows, sha256 in output.parts:
            part = f"part-{len(state['parts']):05d}.parquet"
            os.replace(slices / name, self.build / part)
            crash_point("part-renamed")
            state["parts"].append({"name": part, "rows": rows, "sha256": sha256})
        if output.rejects:
            chunk = f"chunk-{len(state['reject_chunks']):05d}.parquet"
            os.replace(slices / output.rejects, self.root / "rejects" / chunk)
            crash_point("chunk-renamed")
            state["reject_chunks"].append(chunk)
        if output.parts:
            self._unsynced.add(self.build)
        if output.rejects:
            self._unsynced.add(self.root / "rejects")
        state["position"] = position
        state["batches_done"] += output.batches
        state["records_done"] += output.records
        self.state = state
        if time.monotonic() - self._state_written >= STATE_EVERY:
            self._write_state()
        self._busy = False  # complete: an interrupt from here on has `abandon` write the state
        crash_point("committed")

    def _write_state(self) -> None:
        """Record `self.state` in the state file, once the renames it lists are durable."""
        for folder in sorted(self._unsynced):
            _fsync(folder)
        self._unsynced.clear()
        _write_json_atomic(self.root / STATE_FILE, self.state)
        self._state_written = time.monotonic()

    def commit(self) -> None:
        """Make everything written so far durable, then record it in the state file."""
        self._busy = True
        self._flush_row_group()
        state = copy.deepcopy(self.state)
        if self._writer is not None:
            if self.shard_stats is not None:
                self._writer.add_key_value_metadata(self.shard_stats.take())
            self._writer.close()
            self._writer = None
            name = self._part_name()
            crash_point("part-closed")
            _replace(self.build / (name + ".tmp"), self.build / name)
            crash_point("part-renamed")
            state["parts"].append({"name": name, "rows": self._open_rows})
        if self._pending_rejects:
            name = f"chunk-{len(state['reject_chunks']):05d}.parquet"
            tmp = self.root / "rejects" / (name + ".tmp")
            pq.write_table(pa.concat_tables(self._pending_rejects), tmp, compression="zstd")
            crash_point("chunk-written")
            _replace(tmp, self.root / "rejects" / name)
            crash_point("chunk-renamed")
            state["reject_chunks"].append(name)
        if self._batches_since_commit:
            state["position"] = self._position
        state["batches_done"] += self._batches_since_commit
        state["records_done"] += self._records_since_commit
        self.state = state
        self._write_state()
        self._reset_buffers()
        crash_point("committed")
        self._busy = False

    def abandon(self) -> None:
        """Stop after an interruption or error: commit what is complete, keep staging for
        --resume. After an interrupt inside `write` or `commit`, the buffers are in an unknown
        state: they are dropped instead, and --resume redoes the batches since the last commit."""
        if not self._busy:
            # a second Ctrl-C inside this commit: the state file is still the last one written
            with contextlib.suppress(KeyboardInterrupt):
                self.commit()
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
            self._writer = None
        self.release()

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # -- finishing ---------------------------------------------------------------------------

    def finish(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Commit, merge the rejects and count everything; returns the manifest. The output is
        published by `publish`, after the command has added its side outputs."""
        self.commit()
        crash_point("finish")
        side = self.build / SIDE_DIR
        reject_counts: Counter = Counter()
        tmp = side / (REJECTS_FILE + ".tmp")
        with pq.ParquetWriter(tmp, self.reject_write_schema, compression="zstd") as w:
            for name in self.state["reject_chunks"]:
                table = pq.read_table(self.root / "rejects" / name)
                table = table.cast(self.reject_schema).cast(self.reject_write_schema)
                reject_counts += reason_counts(table)
                w.write_table(table, row_group_size=self.row_group_rows)
        _replace(tmp, side / REJECTS_FILE)
        crash_point("rejects-merged")
        rows_out = sum(p["rows"] for p in self.state["parts"])
        rejected = sum(reject_counts.values())
        files = [
            {
                "name": p["name"],
                "kind": "rows",
                "rows": p["rows"],
                "sha256": p.get("sha256") or sha256_file(self.build / p["name"]),
            }
            for p in self.state["parts"]
        ]
        files.append(
            {
                "name": f"{SIDE_DIR}/{REJECTS_FILE}",
                "kind": "rejects",
                "rows": rejected,
                "sha256": sha256_file(side / REJECTS_FILE),
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
        if self.expands_rows:  # every input row not rejected wrote at least one row
            counts = manifest["counts"]
            counts["in_kept"] = counts["in"] - rejected
            if not 0 <= counts["in_kept"] <= rows_out:
                raise AssertionError(f"row accounting broken: {counts}")  # a bug, not data
        elif manifest["counts"]["in"] != rows_out + rejected:
            raise AssertionError(f"row accounting broken: {manifest['counts']}")  # a bug, not data
        self._manifest = manifest
        return manifest

    def write_side(
        self, name: str, value: pa.Table | dict[str, Any] | Callable[[Path], Any]
    ) -> None:
        """A side output (`clusters.parquet`, `budget.json`) into the staging side folder. A
        callable writes a folder of files, `__mmtok__/<name>/`, given the staged output folder
        (its shards are there); each file it writes is listed in the manifest."""
        if callable(value):
            self._write_side_folder(name, value)
            return
        path = self.build / SIDE_DIR / name
        tmp = path.with_name(name + ".tmp")
        entry: dict[str, Any] = {"name": f"{SIDE_DIR}/{name}", "kind": name.split(".")[0]}
        if isinstance(value, pa.Table):
            pq.write_table(value, tmp, compression="zstd")
            entry["rows"] = value.num_rows
        else:
            with open(tmp, "w") as f:
                json.dump(value, f, indent=2, default=str)
        _replace(tmp, path)
        entry["sha256"] = sha256_file(path)
        self._side_files = [f for f in self._side_files if f["name"] != entry["name"]] + [entry]
        crash_point("side-written")

    def _write_side_folder(self, name: str, write: Callable[[Path], Any]) -> None:
        folder = self.build / SIDE_DIR / name
        if folder.exists():  # a resumed run writes it again, whole
            shutil.rmtree(folder)
        write(self.build)
        entries = [
            {
                "name": path.relative_to(self.build).as_posix(),
                "kind": name,
                "sha256": sha256_file(path),
            }
            for path in sorted(folder.rglob("*"))
            if path.is_file()
        ]
        prefix = f"{SIDE_DIR}/{name}/"
        self._side_files = [f for f in self._side_files if not f["name"].startswith(prefix)]
        self._side_files += entries
        crash_point("side-written")

    def publish(self) -> dict[str, Any]:
        """Write the manifest and rename the staged output into place; returns the manifest."""
        assert self._manifest is not None, "publish() before finish()"
        manifest = {**self._manifest, "files": self._manifest["files"] + self._side_files}
        _write_json_atomic(self.build / SIDE_DIR / MANIFEST_FILE, manifest)
        crash_point("manifest-written")
        replaced = self.root / "replaced"
        if self.out_dir.exists():
            if any(self.out_dir.iterdir()):
                check_replaceable(self.out_dir, self.shown)  # checked at open; check again
                os.replace(self.out_dir, replaced)
                crash_point("old-moved")
            else:
                self.out_dir.rmdir()
        os.replace(self.build, self.out_dir)
        _fsync(self.out_dir.parent)
        crash_point("published")
        self._remove_staging()
        return manifest


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


def _is_null_device(stream: IO[str]) -> bool:
    try:
        return os.path.samestat(os.fstat(stream.fileno()), os.stat(os.devnull))
    except (OSError, ValueError, AttributeError):  # not a file (a test's StringIO, a pipe...)
        return False


class StdoutSink:
    """JSON Lines of kept rows on stdout; rejects as JSON Lines to a file, or to stderr. With
    `count_only` (a run without output), rows are counted, never serialised."""

    def __init__(
        self,
        *,
        include_bytes: bool = False,
        rejects_path: str | None = None,
        stdout: IO[str] | None = None,
        stderr: IO[str] | None = None,
        count_only: bool = False,
    ):
        self.count_only = count_only
        self.include_bytes = include_bytes
        self.stdout = stdout or sys.stdout
        self._rows_unread = _is_null_device(self.stdout)  # `-o - > /dev/null`: nobody reads rows
        self._rejects_file = open(rejects_path, "w") if rejects_path else None  # noqa: SIM115
        self.rejects_out = self._rejects_file or stderr or sys.stderr
        self.counts = {"in": 0, "out": 0, "rejected": 0}
        self.reasons: Counter = Counter()

    def open(self) -> int:
        return 0

    def committed_parts(self) -> Iterator[Path]:
        return iter(())

    def write(
        self, kept: pa.Table, rejected: list[pa.Table], num_records: int, position: Any = None
    ) -> None:
        if self.count_only:
            for table in rejected:
                self.reasons += reason_counts(table)
                self.counts["rejected"] += table.num_rows
            self.counts["in"] += num_records
            self.counts["out"] += kept.num_rows
            return
        try:
            if not self._rows_unread:
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
