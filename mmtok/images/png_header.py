"""A PNG's EXIF without inflating its pixels: walk the chunks that follow the image data.

Pillow's header open of a PNG stops at the first IDAT chunk, so an `eXIf` chunk written after
the pixels (where most writers put it) is only found by `getexif()`, which loads, that is
inflates and unfilters, the whole image (seconds and gigabytes for a 169-megapixel file). This
walks the same chunks by their lengths instead, with the rules of Pillow's `load_read` and
`load_end` (`PngImagePlugin`, Pillow 13.0): IDAT chunks are skipped, a chunk header that cannot
be read ends the walk, IEND ends it, so does an fcTL in an animated file; an `eXIf` chunk gives
the EXIF (the last one wins). It answers None, and the caller lets Pillow load the image, for
anything Pillow would handle differently: pixel data cut short, a text chunk whose key feeds
`getexif` ("Raw profile type exif", XMP, "exif"), a compressed text chunk, or any other chunk
with a Pillow handler after the image data. Bad pixel data inside well-formed IDAT chunks is
not seen here: finding it takes a decode (`--decode-check`), as for a JPEG.
`tests/images/test_png_header.py` checks it against Pillow's own `getexif()` on every fixture
and on cut and bit-flipped files.
"""

from __future__ import annotations

import io
import os
import re
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

# Chunk types Pillow's PngStream has a handler for (its `chunk_*` methods).
_HANDLED = frozenset(
    {b"IHDR", b"IDAT", b"IEND", b"PLTE", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"pHYs", b"iCCP",
     b"tEXt", b"zTXt", b"iTXt", b"eXIf", b"acTL", b"fcTL", b"fdAT"}
)  # fmt: skip
# tEXt keys whose value `Image.getexif` reads (or trips on): leave those files to Pillow.
_EXIF_TEXT_KEYS = frozenset({b"exif", b"Raw profile type exif", b"XML:com.adobe.xmp", b"xmp"})
_MAX_TAIL_TEXT = 1 << 20  # far below Pillow's MAX_TEXT_MEMORY (64 MiB over the whole file)
_IS_CID = re.compile(rb"\w\w\w\w").match  # Pillow's `is_cid`


@dataclass(frozen=True, slots=True)
class PngTail:
    exif: bytes | None  # the last eXIf chunk after the image data (raw TIFF bytes), if any


def read_png_tail(fp: BinaryIO, idat_start: int, size: int, animated: bool) -> PngTail | None:
    """The chunks after the image data whose first IDAT chunk begins at `idat_start`; None
    when Pillow must decide (it then has to load the image)."""
    with _contents(fp) as data:
        return _walk(data, idat_start, size, animated)


def _walk(data: bytes | _Positional, pos: int, size: int, animated: bool) -> PngTail | None:
    head = data[pos : pos + 8]
    if len(head) < 8 or head[4:] != b"IDAT":
        return None
    # The run of IDAT chunks the decoder reads: all of it must be in the file.
    while True:
        length = int.from_bytes(head[:4], "big")
        if pos + 8 + length > size:
            return None  # cut inside the pixel data: truncated or not, only a decode knows
        pos += 12 + length
        head = data[pos : pos + 8]
        if head[4:] != b"IDAT":
            break
    if len(head) < 8 or not _IS_CID(head[4:]):
        return None  # the data ends without a next chunk: cut short unless the decoder is done
    exif = None
    text = 0
    while True:  # Pillow's load_end from here
        if len(head) < 8 or not _IS_CID(head[4:]):
            break  # Pillow: struct.error or "broken PNG file": the walk ends quietly
        cid = head[4:]
        length = int.from_bytes(head[:4], "big")
        if cid == b"IEND" or (cid == b"fcTL" and animated):
            break
        if pos + 8 + length > size:
            return None  # Pillow's `_safe_read` raises on it
        body = data[pos + 4 : pos + 12 + length]  # type, data, CRC
        if zlib.crc32(body[:-4]) != int.from_bytes(body[-4:], "big"):
            # Pillow reads on, but a chunk that does not add up may be pixel data the walk
            # misread after a corrupt IDAT length: a decode must decide
            return None
        if cid == b"eXIf":
            exif = body[4:-4]
        elif cid == b"tEXt":
            key = body[4 : min(length, 80) + 4].split(b"\0", 1)[0]
            text += length
            if key in _EXIF_TEXT_KEYS or text > _MAX_TAIL_TEXT:
                return None
        elif cid in _HANDLED:
            return None  # its handler may change info or raise (an IDAT after other chunks
            # may be pixel data the decoder still wants): Pillow's own rules
        pos += 12 + length
        head = data[pos : pos + 8]
    return PngTail(exif)


class _Positional:
    """Slices of a file by `pread` (one system call each, no buffer refill), or of bytes."""

    def __init__(self, fd: int):
        self.fd = fd

    def __getitem__(self, at: slice) -> bytes:
        return os.pread(self.fd, at.stop - at.start, at.start)


@contextmanager
def _contents(fp: BinaryIO) -> Iterator[bytes | _Positional]:
    if isinstance(fp, io.BytesIO):
        yield fp.getvalue()  # the caller's bytes object itself while unmodified: no copy
    else:
        yield _Positional(fp.fileno())
