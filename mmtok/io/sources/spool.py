"""Inputs that can be read only once (standard input, a named pipe, a shell's `<(zcat x.gz)`,
which is /dev/fd/63) are copied to a temporary file first, and read from there: mmtok reads an
input more than once (the schema scan, then each slice; dedup makes two passes), and a second
open of a pipe waits for a writer that never comes. The copy is named so that its format is
told as the original's name tells it; a name that tells nothing (/dev/fd/63) is told by the
first bytes (gzip, Parquet, tar), else it is JSON Lines, as on stdin. The copy is removed with
its source (`Source.__del__`), and a resumed run knows the same data by its content."""

from __future__ import annotations

import gzip
import os
import shutil
import stat
import tempfile
from typing import BinaryIO

# Names a pipe may have: the formats of data (an image or a video is a file, not a stream).
STREAM_ENDINGS = (
    ".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet", ".tar", ".tgz",
    ".jsonl.gz", ".ndjson.gz", ".json.gz", ".csv.gz", ".tsv.gz", ".tar.gz",
)  # fmt: skip


def is_stream(path: str) -> bool:
    """A named pipe, a character device (/dev/stdin on a terminal) or a socket: data that
    can be read once."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode)


def spool(stream: BinaryIO, name: str) -> str:
    """`stream` copied to a new temporary file, whose name ends as `name` does, or as its first
    bytes say when `name` has no data format's ending. The caller removes it."""
    ending = next((e for e in STREAM_ENDINGS if name.lower().endswith(e)), "")
    with tempfile.NamedTemporaryFile(prefix="mmtok-spool-", suffix=ending, delete=False) as f:
        try:
            shutil.copyfileobj(stream, f, 1 << 20)
        except BaseException:
            f.close()
            os.unlink(f.name)
            raise
    if ending:
        return f.name
    told = f.name + _ending_of(f.name)
    os.rename(f.name, told)
    return told


def _ending_of(path: str) -> str:
    """The ending that the first bytes of an unnamed stream call for."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as g:
                inner = g.read(512)
        except (OSError, EOFError):
            inner = b""
        return ".tar.gz" if inner[257:262] == b"ustar" else ".jsonl.gz"
    if head[:4] == b"PAR1":
        return ".parquet"
    if head[257:262] == b"ustar":
        return ".tar"
    return ".jsonl"
