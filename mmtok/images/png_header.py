"""A PNG's header facts and EXIF without inflating its pixels.

`read_png_header` reads a plain still PNG alone (Pillow's open rules for the chunks before the
image data, then the walk below); `read_png_tail` is the walk, used after Pillow's own open
for the files the header reader leaves to Pillow.

Pillow's header open of a PNG stops at the first IDAT chunk, so unless an `eXIf` chunk comes
before the pixels, `getexif()` looks for one after them by loading, that is inflating and
unfiltering, the whole image: for nearly every PNG (most have no EXIF at all), seconds and
gigabytes for a 169-megapixel file. This
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
import struct
import sys
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

from mmtok.images.jpeg_header import Unsure, exif_orientation

# Chunk types Pillow's PngStream has a handler for (its `chunk_*` methods).
_HANDLED = frozenset(
    {b"IHDR", b"IDAT", b"IEND", b"PLTE", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"pHYs", b"iCCP",
     b"tEXt", b"zTXt", b"iTXt", b"eXIf", b"acTL", b"fcTL", b"fdAT"}
)  # fmt: skip
# tEXt keys whose value `Image.getexif` reads (or trips on): leave those files to Pillow.
_EXIF_TEXT_KEYS = frozenset({b"exif", b"Raw profile type exif", b"XML:com.adobe.xmp", b"xmp"})
_MAX_TEXT_CHUNK = 1 << 20  # Pillow's PngImagePlugin.MAX_TEXT_CHUNK (ImageFile.SAFEBLOCK)
_MAX_TAIL_TEXT = 1 << 20  # far below Pillow's MAX_TEXT_MEMORY (64 MiB over the whole file)
_IS_CID = re.compile(rb"\w\w\w\w").match  # Pillow's `is_cid`


@dataclass(frozen=True, slots=True)
class PngTail:
    exif: bytes | None  # the last eXIf chunk after the image data (raw TIFF bytes), if any


@dataclass(frozen=True, slots=True)
class PngHeader:
    width: int
    height: int
    mode: str
    exif_orientation: int | None


# (bit depth, colour type) -> mode: Pillow's PngImagePlugin._MODES
_MODES = {(1, 0): "1", (2, 0): "L", (4, 0): "L", (8, 0): "L", (16, 0): "I;16", (8, 2): "RGB",
          (16, 2): "RGB", (1, 3): "P", (2, 3): "P", (4, 3): "P", (8, 3): "P", (8, 4): "LA",
          (16, 4): "RGBA", (8, 6): "RGBA", (16, 6): "RGBA"}  # fmt: skip
# Chunks before the image data read here: Pillow's handler only checks a minimum length
# (raising below it) or nothing at all; PLTE and tRNS only set palette and transparency.
_MIN_LENGTH = {b"gAMA": 4, b"cHRM": 32, b"sRGB": 1, b"pHYs": 9, b"PLTE": 0, b"eXIf": 0,
               b"tEXt": 0}  # fmt: skip
_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_U32 = struct.Struct(">I").unpack_from


def read_png_header(fp: BinaryIO, size: int) -> PngHeader | None:
    """The header facts of a plain still PNG, as Pillow's open and `getexif()` give them (the
    EXIF looked for after the image data too, by `read_png_tail`'s walk), or None: then Pillow
    decides. Chunks before the first IDAT must be whole, with right CRCs (Pillow checks them),
    IHDR first, and only kinds whose handler is simple (`_MIN_LENGTH`, tRNS, iCCP) or unknown."""
    with _contents(fp) as data:
        facts = png_facts(data, size)
    return None if facts is None else PngHeader(*facts)


def png_facts(data: bytes | _Positional, size: int) -> tuple[int, int, str, int | None] | None:
    """`read_png_header`'s facts as (width, height, mode, EXIF orientation), over the file's
    bytes or a `_Positional` view of its descriptor."""
    if data[0:8] != _SIGNATURE:
        return None
    try:
        return _header(data, size)
    except Unsure:
        return None


def _header(data: bytes | _Positional, size: int) -> tuple[int, int, str, int | None]:
    pos, mode, dims, exif, text = 8, None, (0, 0), None, 0
    first, in_first = _first_bytes(data)
    while True:
        if pos + 12 > size:
            raise Unsure
        head = first[pos : pos + 8] if pos + 8 <= in_first else data[pos : pos + 8]
        length, cid = int.from_bytes(head[:4], "big"), head[4:]
        if cid == b"IDAT":
            break
        if (mode is None and cid != b"IHDR") or pos + 12 + length > size or not _IS_CID(cid):
            raise Unsure
        end = pos + 12 + length
        chunk = first[pos + 4 : end] if end <= in_first else data[pos + 4 : end]
        if zlib.crc32(chunk[:-4]) != int.from_bytes(chunk[-4:], "big"):
            raise Unsure  # Pillow: "broken PNG file"
        body = chunk[4:-4]
        if cid == b"IHDR":
            if mode is not None or length != 13 or body[11] or (body[8], body[9]) not in _MODES:
                raise Unsure
            dims = int.from_bytes(body[0:4], "big"), int.from_bytes(body[4:8], "big")
            mode = _MODES[(body[8], body[9])]
        elif cid == b"tRNS":
            if mode in ("1", "L", "I;16", "RGB") and length < (6 if mode == "RGB" else 2):
                raise Unsure  # "Truncated tRNS chunk"
        elif cid in _MIN_LENGTH:
            if length < _MIN_LENGTH[cid]:
                raise Unsure
            if cid == b"eXIf":
                exif = body  # the last one before the image data, as Pillow's info keeps
            elif cid == b"tEXt":
                text += length
                if body.split(b"\0", 1)[0] in _EXIF_TEXT_KEYS or text > _MAX_TAIL_TEXT:
                    raise Unsure
        elif cid == b"iCCP":
            _check_icc(body)
        elif cid in _HANDLED:
            raise Unsure  # zTXt, iTXt, APNG chunks, IEND: Pillow's own rules
        pos += 12 + length
    if mode is None or not dims[0] or not dims[1] or dims[0] >= 1 << 31 or dims[1] >= 1 << 31:
        raise Unsure
    if exif is None:  # Pillow's getexif loads the pixels: walk the chunks after them instead
        tail = _walk(data, pos, size, animated=False)
        if tail is None:
            raise Unsure
        exif = tail.exif
    orientation = exif_orientation(exif) if exif is not None else None
    return dims[0], dims[1], mode, orientation


def _check_icc(body: bytes) -> None:
    """Pillow's iCCP handler raises on a missing name terminator, a compression method other
    than 0, or a profile inflating past MAX_TEXT_CHUNK (a zlib error it ignores)."""
    name_end = body.find(b"\0")
    if name_end < 0 or name_end + 1 >= len(body) or body[name_end + 1] != 0:
        raise Unsure
    inflate = zlib.decompressobj()
    try:
        inflate.decompress(body[name_end + 2 :], _MAX_TEXT_CHUNK)
    except zlib.error:
        return
    if inflate.unconsumed_tail:
        raise Unsure


def read_png_tail(fp: BinaryIO, idat_start: int, size: int, animated: bool) -> PngTail | None:
    """The chunks after the image data whose first IDAT chunk begins at `idat_start`; None
    when Pillow must decide (it then has to load the image)."""
    with _contents(fp) as data:
        return _walk(data, idat_start, size, animated)


def _walk(data: bytes | _Positional, pos: int, size: int, animated: bool) -> PngTail | None:
    head = data[pos : pos + 8]
    if len(head) < 8 or head[4:] != b"IDAT":
        return None
    # The run of IDAT chunks the decoder reads: all of it must be in the file. One chunk
    # header per 64 KiB of pixel data (Pillow's and libpng's chunk size): `_Positional`'s
    # slicing inlined, a `pread` each, no more.
    first, in_first = _first_bytes(data)
    fd = data.fd if isinstance(data, _Positional) else -1
    while True:
        (length,) = _U32(head)
        if pos + 8 + length > size:
            return None  # cut inside the pixel data: truncated or not, only a decode knows
        pos += 12 + length
        head = first[pos : pos + 8] if pos + 8 <= in_first else os.pread(fd, 8, pos)
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


def _first_bytes(data: bytes | _Positional) -> tuple[bytes, int]:
    """The bytes read already and how far they go: slices inside them need no call."""
    if isinstance(data, _Positional):
        return data.head, len(data.head)
    return data, sys.maxsize


class _Positional:
    """Slices of a file by `pread` (one system call each, no buffer refill); the first 8 KiB
    (where the header chunks are) read once."""

    def __init__(self, fd: int, head: bytes | None = None):
        self.fd = fd
        # `head`: the file's first bytes when the caller has read them already
        self.head = os.pread(fd, 8192, 0) if head is None else head

    def __getitem__(self, at: slice) -> bytes:
        if at.stop <= len(self.head):
            return self.head[at]
        return os.pread(self.fd, at.stop - at.start, at.start)


@contextmanager
def _contents(fp: BinaryIO) -> Iterator[bytes | _Positional]:
    if isinstance(fp, io.BytesIO):
        yield fp.getvalue()  # the caller's bytes object itself while unmodified: no copy
    else:
        yield _Positional(fp.fileno())
