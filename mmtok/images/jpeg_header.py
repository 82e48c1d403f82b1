"""A fast JPEG header reader that gives exactly what Pillow's header open gives, or None.

Pillow's `Image.open` builds a Python object per marker, tries other plugins first and parses
every APP segment; on a header-only pass that is most of the time per image (about 37 us).
This walks the same markers over one buffered read and answers only when the file is plain:
every marker has a length, the EXIF block is one well-formed IFD, no MPF (MPO) segment and no
XMP orientation. Anything else returns None and the caller asks Pillow, so reject reasons and
edge cases stay Pillow's. The rules copied here are Pillow's `JpegImagePlugin` (13.0):
`_open`, `SOF`, `DQT`, `APP` and `jpeg_factory`, and `Image.getexif` for the orientation.
`tests/images/test_jpeg_header.py` checks it against Pillow on every fixture and on cut files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

# Markers Pillow reads with the SOF handler (its MARKER table, DHP included).
_SOF = frozenset(
    {*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC), *range(0xCD, 0xD0), 0xDE}
)
# Markers Pillow skips over by their length (DHT, DAC, DNL, DRI, EXP), plus COM and APPn.
_SKIP = frozenset({0xC4, 0xCC, 0xDC, 0xDD, 0xDF, 0xFE, *range(0xE0, 0xF0)})
_DQT, _SOS, _APP0, _APP1, _APP2, _APP14 = 0xDB, 0xDA, 0xE0, 0xE1, 0xE2, 0xEE
_MODES = {1: "L", 3: "RGB", 4: "CMYK"}
_XMP = b"http://ns.adobe.com/xap/1.0/\x00"
_ORIENTATION = 0x0112
# TIFF field type -> bytes per value (Pillow's TiffTags.TYPES that it can read)
_TIFF_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4,
               16: 8, 17: 8, 18: 8}  # fmt: skip
_FIRST_READ = 4096


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
    buf = fp.read(_FIRST_READ)
    if not buf.startswith(b"\xff\xd8\xff"):
        return None
    try:
        return _walk(fp, buf)
    except Unsure:
        return None


def _walk(fp: BinaryIO, buf: bytes) -> JpegHeader:
    pos = 2
    size = mode = None
    exif: bytes | None = None
    xmp = False
    while True:
        if len(buf) < pos + 4:
            buf += fp.read(_FIRST_READ)
            if len(buf) < pos + 4:
                raise Unsure  # EOF before the scan
        if buf[pos] != 0xFF:
            raise Unsure  # junk between markers: Pillow skips it; leave that to Pillow
        marker = buf[pos + 1]
        length = (buf[pos + 2] << 8) | buf[pos + 3]
        if length < 2:
            raise Unsure
        end = pos + 2 + length
        if len(buf) < end:
            buf += fp.read(max(end - len(buf), _FIRST_READ))
            if len(buf) < end:
                raise Unsure  # truncated segment
        if marker == _SOS:
            break  # Pillow reads the scan header (above), then stops
        body = buf[pos + 4 : end]
        if marker in _SOF:
            if len(body) < 6 or body[0] != 8 or body[5] not in _MODES:
                raise Unsure  # Pillow raises for these
            size = ((body[3] << 8) | body[4], (body[1] << 8) | body[2])
            mode = _MODES[body[5]]
        elif marker == _DQT:
            _check_dqt(body)
        elif marker in _SKIP:
            if marker == _APP1 and body.startswith(b"Exif\0\0"):
                if exif is not None:
                    raise Unsure  # Pillow concatenates several EXIF segments
                exif = body
            elif marker == _APP1 and body.startswith(_XMP):
                xmp = True
            elif marker == _APP2 and body.startswith(b"MPF\0"):
                raise Unsure  # maybe an MPO (several frames)
            elif len(body) < 7 and (
                (marker == _APP0 and body.startswith(b"JFIF"))
                or (marker == _APP14 and body.startswith(b"Adobe"))
            ):
                raise Unsure  # Pillow reads a 16-bit field at offset 5 unguarded
        else:
            raise Unsure  # RSTn, SOI, EOI, JPGn, fill bytes: rare, Pillow's own rules
        pos = end
    if size is None or mode is None or size[0] <= 0 or size[1] <= 0:
        raise Unsure
    orientation = exif_orientation(exif[6:]) if exif is not None else None
    if orientation is None and xmp:
        raise Unsure  # Pillow then takes tiff:Orientation from the XMP packet
    return JpegHeader(size[0], size[1], mode, orientation)


def _check_dqt(body: bytes) -> None:
    pos = 0
    while pos < len(body):
        table = 1 + (64 if body[pos] < 16 else 128)
        if len(body) - pos < table:
            raise Unsure  # "bad quantization table marker"
        pos += table


def exif_orientation(tiff: bytes) -> int | None:
    """IFD0's Orientation as Pillow's `Exif` reads it; `Unsure` on anything it might read
    differently (a truncated IFD, an out-of-range value, an odd type)."""
    if tiff[:4] == b"II*\0":
        order = "little"
    elif tiff[:4] == b"MM\0*":
        order = "big"
    else:
        raise Unsure

    def u(at: int, n: int) -> int:
        if at + n > len(tiff):
            raise Unsure
        return int.from_bytes(tiff[at : at + n], order)

    ifd = u(4, 4)
    count = u(ifd, 2)
    orientation = None
    for i in range(count):
        entry = ifd + 2 + 12 * i
        tag, kind, n = u(entry, 2), u(entry + 2, 2), u(entry + 4, 4)
        if kind not in _TIFF_SIZES:
            raise Unsure
        size = _TIFF_SIZES[kind] * n
        # Pillow stops reading the IFD at the first value out of range
        if size > 4 and u(entry + 8, 4) + size > len(tiff):
            raise Unsure
        if tag == _ORIENTATION:
            if kind != 3 or n != 1:
                raise Unsure
            orientation = u(entry + 8, 2)
    u(ifd + 2 + 12 * count, 4)  # the next-IFD pointer Pillow reads after the entries
    return orientation
