"""Inputs that can be read only once (standard input, a named pipe, a shell's `<(zcat x.gz)`,
which is /dev/fd/63) are copied to a temporary file first, and read from there: mmtok reads an
input more than once (the schema scan, then each slice; dedup makes two passes), and a second
open of a pipe waits for a writer that never comes. The copy is named so that its format is
told as the original's name tells it; a name that tells nothing (/dev/fd/63) is told by the
first bytes (gzip, Parquet, tar; lines with no JSON object and a header with commas or tabs:
CSV or TSV), else it is JSON Lines, as on stdin. The copy is removed with its source
(`Source.__del__`), and a resumed run knows the same data by its content."""

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
        head = f.read(_HEAD)
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as g:
                inner = g.read(_HEAD)
        except (OSError, EOFError):
            inner = b""
        return ".tar.gz" if inner[257:262] == b"ustar" else _text_ending(inner) + ".gz"
    if head[:4] == b"PAR1":
        return ".parquet"
    if head[257:262] == b"ustar":
        return ".tar"
    return _text_ending(head)


_HEAD = 1 << 16  # bytes looked at: a CSV header line fits


def _text_ending(head: bytes) -> str:
    """JSON Lines when any of the first lines starts as JSON does (a damaged first line
    stays one reject), or there is no text; else a header line: tab-separated when it has a
    tab, comma-separated when it has a comma; else JSON Lines, whose reader says what is
    wrong."""
    lines = [x.strip() for x in head.removeprefix(b"\xef\xbb\xbf").splitlines()[:20]]
    lines = [x for x in lines if x]
    if not lines or any(x[:1] in (b"{", b"[") for x in lines):
        return ".jsonl"
    if b"\t" in lines[0]:
        return ".tsv"
    return ".csv" if b"," in lines[0] else ".jsonl"
