"""A fast WebP header reader that gives exactly what Pillow's open gives, or None.

Pillow opens a WebP by reading the whole file into libwebp's animation decoder, which also
allocates the full canvas (about 1 ms for a 1-megapixel file, against 10-20 us to read its
RIFF chunks). This walks the chunks instead and answers only when the file is plain in the
sense of libwebp's demuxer (`src/demux/demux.c`: `ReadHeader`, `ParseSingleImage`,
`ParseVP8X`, `ParseVP8XChunks`, `ParseAnimationFrame`, `StoreFrame`, `IsValidSimpleFormat`,
`IsValidExtendedFormat`, `CheckFrameBounds`) and of its bitstream headers (`VP8GetInfo`,
`VP8LGetInfo`): the RIFF size is the file size, every chunk is whole, the frame headers are
valid and agree with the canvas. Anything else returns None and the caller asks Pillow.
Facts as Pillow 13 reports them (`WebPImagePlugin._open`): the canvas size, mode RGBA when the
alpha flag is set (VP8X) or the lossless bitstream says alpha is used, else RGB; the frame
count; the orientation of the EXIF chunk, read as `Image.getexif` reads it.
`tests/images/test_webp_header.py` checks it against Pillow on encoded files, cut files and
bit flips.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import BinaryIO

from mmtok.images.jpeg_header import Unsure, exif_orientation

_ALPHA, _ANIMATION, _EXIF, _XMP, _ICCP = 0x10, 0x02, 0x08, 0x04, 0x20
_VALID_FLAGS = _ALPHA | _ANIMATION | _EXIF | _XMP | _ICCP
_IMAGE = (b"VP8 ", b"VP8L")
_FIRST_CHUNKS = (*_IMAGE, b"VP8X")
_MAX_READ = 1 << 24  # larger files are left to Pillow


@dataclass(frozen=True, slots=True)
class WebpHeader:
    width: int
    height: int
    mode: str
    frames: int
    exif_orientation: int | None


def read_webp_header(fp: BinaryIO, size: int) -> WebpHeader | None:
    """The header facts of a plain WebP file at the start of `fp`, or None (ask Pillow)."""
    if size > _MAX_READ or size < 20:
        return None
    fp.seek(0)
    data = fp.read(16)
    if not _is_webp(data):
        return None
    facts = webp_facts(data + fp.read(size - 16), size)
    return None if facts is None else WebpHeader(*facts)


def _is_webp(head: bytes) -> bool:
    return head[:4] == b"RIFF" and head[8:12] == b"WEBP" and head[12:16] in _FIRST_CHUNKS


def webp_head(head: bytes, fd: int | None, size: int) -> bytes | None:
    """The whole file (`size` bytes at most) when its first bytes `head` (all of it when `fd`
    is None) start a WebP small enough to read here; None otherwise."""
    if size > _MAX_READ or size < 20 or not _is_webp(head):
        return None
    if len(head) >= size or fd is None:
        return head[:size]
    return head + os.pread(fd, size - len(head), len(head))


def webp_facts(data: bytes, size: int) -> tuple[int, int, str, int, int | None] | None:
    """(width, height, mode, frames, EXIF orientation) of the WebP file `data` (its first
    `size` bytes, as read), or None (ask Pillow)."""
    if int.from_bytes(data[4:8], "little") + 8 != size or size % 2:
        return None  # trailing or missing bytes: libwebp's partial-file rules
    try:
        if data[12:16] == b"VP8X":
            return _extended(data)
        width, height, alpha, end = _image(data, 12)
        if end != size:
            raise Unsure
        return width, height, "RGBA" if alpha else "RGB", 1, None
    except Unsure:
        return None


def _chunk(data: bytes, pos: int) -> tuple[bytes, int, int]:
    """(fourcc, payload start, next chunk start) of the whole chunk at `pos`."""
    if pos + 8 > len(data):
        raise Unsure
    length = int.from_bytes(data[pos + 4 : pos + 8], "little")
    end = pos + 8 + length + (length & 1)
    if end > len(data):
        raise Unsure
    return data[pos : pos + 4], pos + 8, end


def _image(data: bytes, pos: int) -> tuple[int, int, bool, int]:
    """(width, height, alpha used, next chunk start) of the VP8/VP8L chunk at `pos`."""
    kind, start, end = _chunk(data, pos)
    length = int.from_bytes(data[pos + 4 : pos + 8], "little")
    body = data[start : start + length]
    if kind == b"VP8 ":
        if len(body) < 10 or body[3:6] != b"\x9d\x01\x2a":
            raise Unsure
        bits = body[0] | body[1] << 8 | body[2] << 16
        # keyframe, known profile, shown, first partition inside the chunk (VP8GetInfo)
        if bits & 1 or (bits >> 1) & 7 > 3 or not (bits >> 4) & 1 or bits >> 5 >= length:
            raise Unsure
        width = int.from_bytes(body[6:8], "little") & 0x3FFF
        height = int.from_bytes(body[8:10], "little") & 0x3FFF
        if not width or not height:
            raise Unsure
        return width, height, False, end
    if kind == b"VP8L":
        if len(body) < 5 or body[0] != 0x2F or body[4] >> 5:
            raise Unsure  # signature, version 0 (VP8LCheckSignature, VP8LGetInfo)
        bits = int.from_bytes(body[1:5], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, bool((bits >> 28) & 1), end
    raise Unsure


def _extended(data: bytes) -> tuple[int, int, str, int, int | None]:
    kind, start, pos = _chunk(data, 12)
    if data[16:20] != (10).to_bytes(4, "little"):
        raise Unsure
    flags = data[start]
    if flags & ~_VALID_FLAGS or data[start + 1 : start + 4] != b"\0\0\0":
        raise Unsure
    width = int.from_bytes(data[start + 4 : start + 7], "little") + 1
    height = int.from_bytes(data[start + 7 : start + 10], "little") + 1
    animated = bool(flags & _ANIMATION)
    frames = 0
    seen: dict[bytes, int] = {}
    exif = None
    while pos < len(data):
        kind, body, end = _chunk(data, pos)
        seen[kind] = seen.get(kind, 0) + 1
        if kind == b"ANIM":
            if not animated or frames or seen[kind] > 1 or end - body < 6:
                raise Unsure
        elif kind == b"ANMF":
            if not animated or b"ANIM" not in seen:
                raise Unsure
            _frame(data, body, end, width, height)
            frames += 1
        elif kind in (b"ALPH", *_IMAGE):
            if animated or frames:
                raise Unsure
            if kind == b"ALPH" and data[end : end + 4] != b"VP8 ":
                raise Unsure  # alpha belongs to the lossy image right after it
            frame_width, frame_height, _, end = _image(data, end if kind == b"ALPH" else pos)
            if (frame_width, frame_height) != (width, height):
                raise Unsure  # a still image fills the canvas (CheckFrameBounds)
            frames += 1
        elif kind == b"EXIF":
            if seen[kind] > 1 or not flags & _EXIF:
                raise Unsure
            exif = data[body : body + int.from_bytes(data[pos + 4 : pos + 8], "little")]
        elif kind in (b"XMP ", b"ICCP"):
            flag = _XMP if kind == b"XMP " else _ICCP
            if seen[kind] > 1 or not flags & flag:
                raise Unsure
        elif kind in (b"VP8X", b"FRGM"):
            raise Unsure
        pos = end
    if frames == 0 or (flags & _EXIF and exif is None):
        raise Unsure
    orientation = None
    if exif is not None:
        tiff = exif[6:] if exif.startswith(b"Exif\0\0") else exif
        orientation = exif_orientation(tiff)
    if orientation is None and flags & _XMP:
        raise Unsure  # Pillow then looks for tiff:Orientation in the XMP packet
    return width, height, "RGBA" if flags & _ALPHA else "RGB", frames, orientation


def _frame(data: bytes, body: int, end: int, width: int, height: int) -> None:
    """Check one ANMF chunk: offsets and size inside the canvas, one image that matches it."""
    if end - body < 16 + 8:
        raise Unsure
    x = 2 * int.from_bytes(data[body : body + 3], "little")
    y = 2 * int.from_bytes(data[body + 3 : body + 6], "little")
    frame_width = int.from_bytes(data[body + 6 : body + 9], "little") + 1
    frame_height = int.from_bytes(data[body + 9 : body + 12], "little") + 1
    if x + frame_width > width or y + frame_height > height:
        raise Unsure
    pos = body + 16
    kind = data[pos : pos + 4]
    if kind == b"ALPH":
        pos = _chunk(data, pos)[2]
        if data[pos : pos + 4] != b"VP8 ":
            raise Unsure
    image_width, image_height, _, pos = _image(data, pos)
    if (image_width, image_height) != (frame_width, frame_height) or pos != end:
        raise Unsure
