"""A tar reader that survives damaged WebDataset shards and says where the damage is.

Python's `tarfile` in stream mode ends quietly at the first bad header, so every sample after a
flipped bit or a cut download vanishes without a trace. This reader walks the 512-byte blocks
itself and, at a header whose checksum is wrong, resynchronises at the next valid header as
GNU tar does ("skipping to next header"), reporting the bytes it skipped. A stream that cannot
be read further (a truncated file, corrupt gzip data) ends with one report for the unread rest.

Formats (all with 512-byte blocks):
- POSIX ustar header layout and checksum: IEEE Std 1003.1-2017, pax "ustar Interchange Format"
  (name 0-100, size 124-136 octal, chksum 148-156, typeflag 156, magic 257 "ustar\\0",
  prefix 345-500); pax extended headers (typeflag `x` / `g`, records "LEN key=value\\n").
- GNU tar: the manual's "Basic Tar Format" (magic "ustar  \\0", long names in `L` members,
  base-256 sizes whose first byte has the high bit set). Checksums are accepted as unsigned or
  signed byte sums, like GNU tar and Python's `tarfile.calc_chksums`.
Members are never written to disk, so a name like `../../etc/passwd` is only a sample key.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)
_READ_CHUNK = 1 << 20
_GZIP_CHUNK = 1 << 18
_INFLATE_MAX = 1 << 22  # decompressed bytes per step: memory stays bounded on a gzip bomb
_MAGIC = b"ustar"
_MAGIC_AT = 257
REGULAR_TYPES = (b"0", b"\0", b"7")  # regular file, old regular file, contiguous file
# Types whose size field counts data blocks that follow (tarfile: `isreg() or not supported`).
_NO_DATA_TYPES = (b"1", b"2", b"3", b"4", b"5", b"6")  # links, devices, directory, FIFO


@dataclass(frozen=True)
class Member:
    """A regular file of the archive: its name as stored (bytes) and its data."""

    name: bytes
    data: bytes
    offset: int  # byte offset of its header in the uncompressed tar stream


@dataclass(frozen=True)
class Damage:
    """Bytes that could not be read as members; `message` says where and what."""

    offset: int
    message: str


@dataclass(frozen=True)
class Header:
    name: bytes
    size: int
    type: bytes


def _number(field: bytes) -> int:
    """A numeric header field: octal text, or GNU base-256 when the high bit of byte 0 is set
    (as `tarfile.nti`)."""
    if field[:1] in (b"\x80", b"\xff"):
        value = int.from_bytes(field[1:], "big")
        return value - (256 ** (len(field) - 1)) if field[:1] == b"\xff" else value
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def parse_header(block: bytes) -> Header | None:
    """The header in a 512-byte block, or None when its checksum (or a number) is invalid."""
    try:
        stored = _number(block[148:156])
        size = _number(block[124:136])
    except ValueError:
        return None
    chk = block[148:156]
    unsigned = sum(block) - sum(chk) + 8 * 32  # the checksum field counts as 8 spaces
    if stored != unsigned:
        signed = (
            unsigned - 256 * sum(1 for b in block if b > 127) + 256 * sum(1 for b in chk if b > 127)
        )
        if stored != signed:
            return None
    if size < 0:
        return None
    name = block[:100].split(b"\0", 1)[0]
    if block[257:263] == b"ustar\0":  # POSIX: the prefix field extends the name
        prefix = block[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    return Header(name, size, block[156:157])


def parse_pax(data: bytes) -> dict[bytes, bytes]:
    """The records of a pax extended header: "LEN key=value\\n", LEN counting the whole record."""
    records, pos = {}, 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(data[pos:space])
        except ValueError:
            break
        if length <= 0:
            break
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        records[key] = value
        pos += length
    return records


class TarStream:
    """The uncompressed bytes of a shard (plain or gzip, several gzip members allowed).

    A read error, a truncated file or corrupt gzip data ends the stream early: `read` returns
    what could be read and `error` says why it stopped."""

    def __init__(self, file: BinaryIO):
        self.file = file
        self.gzip = file.read(2) == b"\x1f\x8b"
        file.seek(0)
        self.error: str | None = None
        self.offset = 0  # uncompressed bytes handed out
        self._buf, self._at, self._eof = b"", 0, False
        self._inflate: Any = None  # a zlib decompressor inside a gzip member
        self._pending = b""  # compressed input not yet inflated
        self._compressed_at = 0  # compressed bytes consumed

    def read(self, n: int) -> bytes:
        if len(self._buf) - self._at < n:
            parts, have = [self._buf[self._at :]], len(self._buf) - self._at
            while have < n and not self._eof:
                chunk = self._next_chunk()
                parts.append(chunk)
                have += len(chunk)
            self._buf, self._at = b"".join(parts), 0
        out = self._buf[self._at : self._at + n]
        self._at += len(out)
        self.offset += len(out)
        return out

    def push_back(self, data: bytes) -> None:
        """Put bytes already read back in front of the stream (used when resynchronising)."""
        self._buf, self._at = data + self._buf[self._at :], 0
        self.offset -= len(data)

    def _fail(self, message: str) -> None:
        self.error, self._eof = message, True

    def _next_chunk(self) -> bytes:
        try:
            return self._next_gzip_chunk() if self.gzip else self._next_plain_chunk()
        except OSError as e:
            self._fail(f"read error: {e}")
            return b""

    def _next_plain_chunk(self) -> bytes:
        chunk = self.file.read(_READ_CHUNK)
        if not chunk:
            self._eof = True
        return chunk

    def _next_gzip_chunk(self) -> bytes:
        if not self._pending:
            self._pending = self.file.read(_GZIP_CHUNK)
            if not self._pending:
                if self._inflate is not None:
                    self._fail(
                        f"the gzip stream ends early at compressed byte {self._compressed_at:,} "
                        "(a truncated file)"
                    )
                self._eof = True
                return b""
        if self._inflate is None:  # the start of a gzip member (RFC 1952 allows several)
            if not self._pending.strip(b"\0"):
                self._compressed_at += len(self._pending)
                self._pending = b""  # zero padding after the last member
                return b""
            if len(self._pending) < 2:
                self._pending += self.file.read(_GZIP_CHUNK)
            if not self._pending.startswith(b"\x1f\x8b"):
                self._fail(f"bytes at compressed byte {self._compressed_at:,} are not gzip data")
                return b""
            self._inflate = zlib.decompressobj(zlib.MAX_WBITS | 16)
        data, self._pending = self._pending, b""
        saved = self._inflate.copy()
        try:
            out = self._inflate.decompress(data, _INFLATE_MAX)
        except zlib.error as e:
            out, at = self._salvage(saved, data)
            self._fail(f"corrupt gzip data near compressed byte {at:,} ({e})")
            return out
        if self._inflate.eof:
            self._pending = self._inflate.unused_data
            self._inflate = None
        else:
            self._pending = self._inflate.unconsumed_tail
        self._compressed_at += len(data) - len(self._pending)
        return out

    def _salvage(self, inflate: Any, data: bytes) -> tuple[bytes, int]:
        """What inflates before the corrupt byte: the failed chunk again, in small steps."""
        out, at = [], self._compressed_at
        for start in range(0, len(data), BLOCK):
            try:
                out.append(inflate.decompress(data[start : start + BLOCK]))
            except zlib.error:
                break
            at = self._compressed_at + start + BLOCK
        return b"".join(out), at


def _resync(stream: TarStream, bad_block: bytes) -> tuple[Header, int] | None:
    """The next valid header after a bad one, found by its "ustar" magic at any byte offset
    (GNU tar resynchronises at block boundaries only; a byte search also survives garbage of a
    size that is not a multiple of 512). Returns the header and its offset, or None at the end."""
    window, start = bad_block, stream.offset - BLOCK  # `start`: stream offset of window[0]
    first = 1  # candidate headers start at window[first:] or later
    while True:
        hit = window.find(_MAGIC, first + _MAGIC_AT)
        while hit >= 0 and hit - _MAGIC_AT + BLOCK <= len(window):
            begin = hit - _MAGIC_AT
            header = parse_header(window[begin : begin + BLOCK])
            if header is not None:
                stream.push_back(window[begin + BLOCK :])
                return header, start + begin
            hit = window.find(_MAGIC, hit + 1)
        # Keep the bytes of a candidate not read to its end, or of a magic cut by the chunk end.
        keep_from = hit - _MAGIC_AT if hit >= 0 else len(window) - _MAGIC_AT - len(_MAGIC) + 1
        keep_from = max(keep_from, first)
        more = stream.read(_READ_CHUNK)
        if not more:
            return None
        window, start, first = window[keep_from:] + more, start + keep_from, 0


def tar_members(file: BinaryIO) -> Iterator[Member | Damage]:
    """The regular files of a (possibly damaged) tar stream, in order, and the damage between."""
    stream = TarStream(file)
    pax: dict[bytes, bytes] = {}
    long_name: bytes | None = None
    zeros = 0  # consecutive zero blocks: two are the end-of-archive marker
    ended = False  # the marker was seen: what follows it is not read as damage
    while True:
        offset = stream.offset
        block = stream.read(BLOCK)
        if len(block) < BLOCK:
            # A stream error is reported even after an end-of-archive marker: a gzip CRC that
            # fails at the end means the bytes inflated before it (zero blocks too) were wrong.
            if stream.error:
                yield Damage(
                    offset, f"{stream.error}; the rest of the shard from byte {offset:,} is unread"
                )
            elif block.strip(b"\0") and not ended:
                yield Damage(offset, f"the shard ends inside a header at byte {offset:,}")
            elif not ended:  # tar writers end with two zero blocks; without them, a cut file
                yield Damage(
                    offset,
                    f"the shard ends at byte {offset:,} without the end-of-archive marker: "
                    "it was probably cut there (samples after it, if any, are lost)",
                )
            return
        if block == ZERO_BLOCK:
            zeros += 1
            ended = ended or zeros >= 2
            continue
        zeros = 0
        header = parse_header(block)
        if header is None:
            found = _resync(stream, block)
            if found is None:
                if not ended or stream.error:  # junk after the end marker is not damage
                    why = f" ({stream.error})" if stream.error else ""
                    yield Damage(
                        offset,
                        f"bad tar header at byte {offset:,} and no valid header after it{why}; "
                        f"the rest of the shard from byte {offset:,} is unread",
                    )
                return
            header, at = found
            yield Damage(
                offset,
                f"bad tar header at byte {offset:,}: skipped {at - offset:,} bytes to the next "
                f"valid header at byte {at:,} (as GNU tar's 'skipping to next header'); "
                "samples stored in them are lost",
            )
            offset, pax, long_name = at, {}, None
        ended = False
        size = header.size
        if pax.get(b"size", b"").isdigit():  # pax sizes are not limited to 8 GiB
            size = int(pax[b"size"])
        data_size = 0 if header.type in _NO_DATA_TYPES else size
        data = stream.read(data_size)
        if len(data) < data_size:
            name = pax.get(b"path") or long_name or header.name
            why = stream.error or "the shard ends early"
            yield Damage(
                offset,
                f"member {name!r} at byte {offset:,} is cut after {len(data):,} of "
                f"{data_size:,} bytes ({why}); the rest of the shard is unread",
            )
            return
        stream.read(-data_size % BLOCK)  # a cut padding is reported by the next read
        if header.type == b"x":
            pax = parse_pax(data)
        elif header.type == b"L":
            long_name = data.split(b"\0", 1)[0]
        elif header.type not in (b"g", b"K"):  # global pax records, GNU long link names: unused
            name = pax.get(b"path") or long_name or header.name
            pax, long_name = {}, None
            if header.type in REGULAR_TYPES:
                yield Member(name, data, offset)
