"""A fast JPEG header reader that gives exactly what Pillow's header open gives, or None.

Pillow's `Image.open` builds a Python object per marker, tries other plugins first and parses
every APP segment; on a header-only pass that is most of the time per image (about 37 us).
This walks the same markers over the first 4 KiB (reading on only for a longer header) and
answers only when the file is plain: every marker has a length, the EXIF block is one
well-formed IFD, no MPF (MPO) segment and no XMP orientation. Anything else returns None and
the caller asks Pillow, so reject reasons and edge cases stay Pillow's. The rules copied here
are Pillow's `JpegImagePlugin` (13.0): `_open`, `SOF`, `DQT`, `APP` and `jpeg_factory`, and
`Image.getexif` for the orientation.
`tests/images/test_jpeg_header.py` checks it against Pillow on every fixture and on cut files;
`tests/images/test_probe_paths.py` from files, headers longer than the first read included.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import BinaryIO

# Markers Pillow reads with the SOF handler (its MARKER table, DHP included).
_SOF = frozenset(
    {*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC), *range(0xCD, 0xD0), 0xDE}
)
# Markers Pillow skips over by their length (DHT, DAC, DNL, DRI, EXP), plus COM and APPn.
_SKIP = frozenset({0xC4, 0xCC, 0xDC, 0xDD, 0xDF, 0xFE, *range(0xE0, 0xF0)})
_DHT, _DQT, _SOS, _APP0, _APP1, _APP2, _APP14 = 0xC4, 0xDB, 0xDA, 0xE0, 0xE1, 0xE2, 0xEE
_MODES = {1: "L", 3: "RGB", 4: "CMYK"}
_XMP = b"http://ns.adobe.com/xap/1.0/\x00"
_ORIENTATION = 0x0112
# TIFF field type -> bytes per value (Pillow's TiffTags.TYPES that it can read)
_TIFF_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4,
               16: 8, 17: 8, 18: 8}  # fmt: skip
_FIRST_READ = 4096
_SEGMENT = struct.Struct(">BBH").unpack_from  # 0xFF, marker, length
_SOF_BODY = struct.Struct(">BHHB").unpack_from  # precision, height, width, components
# byte order -> (u16, u32, IFD entry: tag, type, count) readers
_LE = (struct.Struct("<H").unpack_from, struct.Struct("<I").unpack_from,
       struct.Struct("<HHI").unpack_from)  # fmt: skip
_BE = (struct.Struct(">H").unpack_from, struct.Struct(">I").unpack_from,
       struct.Struct(">HHI").unpack_from)  # fmt: skip


@dataclass(frozen=True, slots=True)
class JpegHeader:
    width: int
    height: int
    mode: str
    exif_orientation: int | None


class Unsure(Exception):
    """The file is not plain enough to answer without Pillow."""


def read_jpeg_header(fp: BinaryIO) -> JpegHeader | None:
    """The header facts of a plain JPEG at the start of `fp`, or None (ask Pillow)."""
    facts = jpeg_facts(fp.read(_FIRST_READ), fp)
    return None if facts is None else JpegHeader(*facts)


def jpeg_facts(buf: bytes, more: BinaryIO | int | None) -> tuple[int, int, str, int | None] | None:
    """(width, height, mode, EXIF orientation) of a plain JPEG whose first bytes are `buf`, or
    None (ask Pillow). `more`: where the bytes after `buf` are read from (a raw descriptor at
    its position, or a file), None when `buf` is the whole file."""
    if not buf.startswith(b"\xff\xd8\xff"):
        return None
    try:
        return _walk(buf, more)
    except Unsure:
        return None


def _read_more(buf: bytes, more: BinaryIO | int | None, n: int) -> bytes:
    if more is None:
        return buf
    return buf + (os.read(more, n) if type(more) is int else more.read(n))


def _walk(buf: bytes, more: BinaryIO | int | None) -> tuple[int, int, str, int | None]:
    # Offsets into `buf`, no slice per segment: this loop is most of a JPEG probe's CPU.
    n = len(buf)
    pos = 2
    size = mode = exif = None
    xmp = False
    while True:
        if n < pos + 4:
            buf = _read_more(buf, more, _FIRST_READ)
            n = len(buf)
            if n < pos + 4:
                raise Unsure  # EOF before the scan
        ff, marker, length = _SEGMENT(buf, pos)
        if ff != 0xFF or length < 2:
            raise Unsure  # junk between markers (Pillow skips it), or a bad length
        end = pos + 2 + length
        if n < end:
            buf = _read_more(buf, more, max(end - n, _FIRST_READ))
            n = len(buf)
            if n < end:
                raise Unsure  # truncated segment
        if marker == _DHT:
            pass  # the most common segment: skipped by its length
        elif marker == _DQT:
            at = pos + 4
            while at < end:
                at += 65 if buf[at] < 16 else 129
            if at > end:
                raise Unsure  # "bad quantization table marker"
        elif marker == _SOS:
            break  # Pillow reads the scan header (above), then stops
        elif marker in _SOF:
            # body: precision, height, width, components
            if length < 8 or buf[pos + 4] != 8 or buf[pos + 9] not in _MODES:
                raise Unsure  # Pillow raises for these
            _, height, width, components = _SOF_BODY(buf, pos + 4)
            size = (width, height)
            mode = _MODES[components]
        elif marker in _SKIP:
            if marker == _APP1:
                if buf.startswith(b"Exif\0\0", pos + 4, end):
                    if exif is not None:
                        raise Unsure  # Pillow concatenates several EXIF segments
                    exif = buf[pos + 10 : end]
                elif buf.startswith(_XMP, pos + 4, end):
                    xmp = True
            elif marker == _APP2:
                if buf.startswith(b"MPF\0", pos + 4, end):
                    raise Unsure  # maybe an MPO (several frames)
            elif length < 9 and (
                (marker == _APP0 and buf.startswith(b"JFIF", pos + 4, end))
                or (marker == _APP14 and buf.startswith(b"Adobe", pos + 4, end))
            ):
                raise Unsure  # Pillow reads a 16-bit field at offset 5 unguarded
        else:
            raise Unsure  # RSTn, SOI, EOI, JPGn, fill bytes: rare, Pillow's own rules
        pos = end
    if size is None or mode is None or size[0] <= 0 or size[1] <= 0:
        raise Unsure
    orientation = exif_orientation(exif) if exif is not None else None
    if orientation is None and xmp:
        raise Unsure  # Pillow then takes tiff:Orientation from the XMP packet
    return size[0], size[1], mode, orientation


def exif_orientation(tiff: bytes) -> int | None:
    """IFD0's Orientation as Pillow's `Exif` reads it; `Unsure` on anything it might read
    differently (a truncated IFD, an out-of-range value, an odd type)."""
    head = tiff[:4]
    if head == b"II*\0":
        u16, u32, entry_of = _LE
    elif head == b"MM\0*":
        u16, u32, entry_of = _BE
    else:
        raise Unsure
    n = len(tiff)
    if n < 8:
        raise Unsure
    (ifd,) = u32(tiff, 4)
    if ifd + 2 > n:
        raise Unsure
    (count,) = u16(tiff, ifd)
    orientation = None
    entry = ifd + 2
    for _ in range(count):
        if entry + 8 > n:
            raise Unsure
        tag, kind, values = entry_of(tiff, entry)
        size = _TIFF_SIZES.get(kind)
        if size is None:
            raise Unsure
        size *= values
        # Pillow stops reading the IFD at the first value out of range
        if size > 4 and (entry + 12 > n or u32(tiff, entry + 8)[0] + size > n):
            raise Unsure
        if tag == _ORIENTATION:
            if kind != 3 or values != 1:
                raise Unsure
            if entry + 10 > n:
                raise Unsure
            orientation = u16(tiff, entry + 8)[0]
        entry += 12
    if entry + 4 > n:
        raise Unsure  # the next-IFD pointer Pillow reads after the entries
    return orientation
