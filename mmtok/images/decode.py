"""Safe decode of one image to 8-bit pixels, under one pixel-mode policy for every path.

Every path that turns pixels into numbers (the perceptual hash of `mmtok dedup`, the tiles of
`mmtok tile`, the model stages) converts through `eight_bit` here, so one picture gives the
same numbers whichever mode its file stores it in. The policy, mode by mode (Pillow 13 names):

- RGB, L: as stored. 1 (bilevel): 0 and 255. YCbCr, LAB, HSV: Pillow's conversion to RGB.
- 16-bit grey (I;16, I;16L, I;16B, I;16N) and I (32-bit integers: 16-bit data in older Pillow,
  `Image.fromarray(int32)`): clipped to 0..65535, then the most significant byte, `v >> 8`.
  This is how Pillow itself decodes every other 16-bit sample (the PNG and TIFF raw modes
  `RGB;16B`, `RGBA;16B`, `LA;16B` unpack the high byte, so a 48-bit RGB PNG opens as its high
  bytes) and how torchvision's `to_dtype(uint16 -> uint8, scale=True)` converts (a right shift
  by 8); it inverts the usual 8-to-16-bit expansion `v * 257` exactly. Pillow's own
  `convert("L")` / `convert("RGB")` of these modes clips at 255 instead (everything above 255
  turns white), and transformers' `convert_to_rgb` (image_transforms.py, v5.24) inherits that
  clip: mmtok deliberately does not.
- F (32-bit float): Pillow's conversion (the values are on the 8-bit scale, clipped to 0..255
  and truncated), which is what transformers' `convert_to_rgb` hands a model; no scale in the
  file says otherwise.
- CMYK: Pillow's conversion (no ICC profile), as transformers.
- P: through its palette. Transparency (RGBA, LA, PA, and a tRNS colour on P, L, RGB or 16-bit
  grey): `AlphaPolicy.WHITE` composites over opaque white exactly as transformers'
  `convert_to_rgb` does (`Image.alpha_composite` on an RGBA white canvas, then RGB); `DROP`
  keeps the colour channels as stored.
- Anything Pillow cannot convert to RGB (La, RGBa, ...) is `unsupported_mode`.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile

from mmtok.images.probe import (
    DEFAULT_MAX_PIXELS,
    EXIF_ORIENTATION_TAG,
    BadImage,
    decoder_errors,
    open_image,
    open_source,
)
from mmtok.reasons import Reason


class AlphaPolicy(StrEnum):
    DROP = "drop"  # keep the colour channels as stored
    WHITE = "white"  # composite over a white background, as transformers' convert_to_rgb


# The same transposes as PIL.ImageOps.exif_transpose, applied to the converted image.
_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA"})


@contextmanager
def _truncated_policy(allow: bool) -> Iterator[None]:
    # Pillow reads this module flag at load time; workers decode one image at a time.
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = allow
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _sixteen_bit(im: Image.Image) -> Image.Image:
    """L (or LA when a tRNS grey value marks transparent pixels): the high byte of each sample."""
    values = np.asarray(im)  # uint16 in native order for I;16*, int32 for I
    grey = Image.fromarray((np.clip(values, 0, 65535) >> 8).astype(np.uint8), "L")
    transparent = im.info.get("transparency")
    if isinstance(transparent, int):
        alpha = Image.fromarray(np.where(values == transparent, 0, 255).astype(np.uint8), "L")
        return Image.merge("LA", (grey, alpha))
    return grey


def eight_bit(im: Image.Image, alpha: AlphaPolicy, mode: str = "RGB") -> Image.Image:
    """The loaded image `im` as 8-bit `mode` ("RGB" or "L") under the module's policy.

    "L" is the luma of the "RGB" result (`convert("L")`, ITU-R 601-2 as Pillow), taken
    directly where that gives the same values (L stays L; 16-bit grey scales straight to L)."""
    if im.mode in SIXTEEN_BIT_MODES:
        im = _sixteen_bit(im)
    elif im.mode == "F":
        im = im.convert("L")
    if im.mode in ("P", "L", "RGB") and "transparency" in im.info or im.mode == "PA":
        im = im.convert("RGBA")
    if im.mode in _ALPHA_MODES:
        if alpha is AlphaPolicy.WHITE:  # transformers' convert_to_rgb, call for call
            rgba = im.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            im = Image.alpha_composite(background, rgba).convert("RGB")
        else:
            im = im.convert("RGB" if im.mode != "LA" else "L")
    if im.mode == mode:
        return im
    try:
        return im.convert(mode) if im.mode in ("L", "RGB") else im.convert("RGB").convert(mode)
    except ValueError as e:
        raise BadImage(Reason.UNSUPPORTED_MODE, f"mode {im.mode}: {e}") from None


def load_pixels(
    im: Image.Image,
    *,
    exif_transpose: bool = True,
    alpha: AlphaPolicy = AlphaPolicy.DROP,
    mode: str = "RGB",
    allow_truncated: bool = False,
    draft: int | None = None,
) -> Image.Image:
    """Decode an opened image (`open_image`; call inside `pixel_errors`) to 8-bit `mode`,
    EXIF-rotated. `draft`: let a JPEG decode at a DCT scale no smaller than `draft` px per side
    (libjpeg scaling: several times faster for a thumbnail-sized use such as a hash)."""
    orientation = im.getexif().get(EXIF_ORIENTATION_TAG) if exif_transpose else None
    if draft is not None:
        im.draft("RGB", (draft, draft))
    with _truncated_policy(allow_truncated):
        im.load()
    out = eight_bit(im, AlphaPolicy(alpha), mode)
    if orientation in _ORIENTATION_TRANSPOSE:
        out = out.transpose(_ORIENTATION_TRANSPOSE[orientation])
    return out


def declared_shortfall(fp: BinaryIO) -> str | None:
    """Why the file is shorter than its own container says, or None: the RIFF size of a WebP,
    the first IFD offset of a TIFF, the box lengths of a JPEG 2000 file and the end-of-codestream
    marker of its codestream. Pillow reports a cut WebP as "could not create decoder object", a
    cut TIFF as no image at all and a cut JPEG 2000 as "broken data stream"."""
    size = fp.seek(0, io.SEEK_END)
    fp.seek(0)
    head = fp.read(16)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        declared = struct.unpack("<I", head[4:8])[0] + 8
        return f"{size:,} bytes, the RIFF header says {declared:,}" if size < declared else None
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        offset = struct.unpack("<I" if head[:2] == b"II" else ">I", head[4:8])[0]
        return f"{size:,} bytes, the first IFD is at {offset:,}" if offset + 2 > size else None
    if head[:4] == b"\xff\x4f\xff\x51":  # a bare JPEG 2000 codestream
        return _codestream_end(fp, size)
    if head[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n":
        return _jp2_boxes(fp, size)
    return None


def _codestream_end(fp: BinaryIO, size: int) -> str | None:
    fp.seek(size - 2)
    return None if fp.read(2) == b"\xff\xd9" else f"{size:,} bytes, no end-of-codestream marker"


def _jp2_boxes(fp: BinaryIO, size: int) -> str | None:
    position = 0
    while position + 8 <= size:
        fp.seek(position)
        length, kind = struct.unpack(">I4s", fp.read(8))
        if length == 1:
            (length,) = struct.unpack(">Q", fp.read(8))
        if length == 0:  # the last box runs to the end of the file
            return _codestream_end(fp, size) if kind == b"jp2c" else None
        if length < 8 or position + length > size:
            return f"{size:,} bytes, a {kind!r} box needs {position + length:,}"
        position += length
    return None


@contextmanager
def pixel_errors(fp: BinaryIO) -> Iterator[None]:
    """`decoder_errors`, and a file cut short of what its container declares is `truncated`
    whatever the decoder said about it."""
    try:
        with decoder_errors():
            yield
    except BadImage as e:
        if e.reason in (Reason.DECODE_ERROR, Reason.NOT_IMAGE):
            short = declared_shortfall(fp)
            if short is not None:
                raise BadImage(Reason.TRUNCATED, f"the file ends early ({short})") from None
        raise


def decode_image(
    src: str | bytes,
    *,
    exif_transpose: bool = True,
    alpha: AlphaPolicy = AlphaPolicy.DROP,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    allow_truncated: bool = False,
    mode: str = "RGB",
) -> Image.Image:
    """Decode the first frame of an image to an 8-bit RGB (or "L") Pillow image, converted
    under the module's pixel-mode policy and EXIF-rotated. Raises `BadImage` for bad data."""
    with open_source(src) as (fp, _), pixel_errors(fp):
        im = open_image(fp, max_pixels)
        return load_pixels(
            im,
            exif_transpose=exif_transpose,
            alpha=alpha,
            mode=mode,
            allow_truncated=allow_truncated,
        )


def decode_rgb(src: str | bytes, **policies) -> np.ndarray:
    """`decode_image` as a contiguous (height, width, 3) uint8 array."""
    return np.ascontiguousarray(np.asarray(decode_image(src, **policies), dtype=np.uint8))
