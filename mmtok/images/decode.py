"""Safe decode of one image to uint8 RGB, with explicit policies for every awkward case."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum

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
    WHITE = "white"  # composite over a white background, as a viewer would show it


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
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}


@contextmanager
def _truncated_policy(allow: bool) -> Iterator[None]:
    # Pillow reads this module flag at load time; workers decode one image at a time.
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = allow
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _sixteen_bit_to_rgb(im: Image.Image) -> Image.Image:
    values = np.clip(np.asarray(im, dtype=np.int64), 0, 65535)
    gray = ((values * 255 + 32767) // 65535).astype(np.uint8)  # round to nearest
    return Image.fromarray(np.repeat(gray[..., None], 3, axis=2), "RGB")


def _to_rgb(im: Image.Image, alpha: AlphaPolicy) -> Image.Image:
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in _SIXTEEN_BIT:
        return _sixteen_bit_to_rgb(im)
    if mode == "F":
        raise BadImage(Reason.UNSUPPORTED_MODE, "32-bit float pixels have no defined 8-bit mapping")
    if mode == "P" and "transparency" in im.info or mode == "PA":
        im, mode = im.convert("RGBA"), "RGBA"
    if mode in _ALPHA_MODES and alpha is AlphaPolicy.WHITE:
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return im.convert("RGB")
    except ValueError as e:
        raise BadImage(Reason.UNSUPPORTED_MODE, f"mode {mode}: {e}") from None


def decode_image(
    src: str | bytes,
    *,
    exif_transpose: bool = True,
    alpha: AlphaPolicy = AlphaPolicy.DROP,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    allow_truncated: bool = False,
) -> Image.Image:
    """Decode the first frame of an image to an RGB Pillow image.

    Grayscale, palette, CMYK and 16-bit images are converted to RGB (16-bit values are scaled
    to 8 bits with rounding); alpha is dropped or blended on white; animated and multi-page
    files give their first frame. Raises `BadImage` for bad data.
    """
    alpha = AlphaPolicy(alpha)
    with open_source(src) as (fp, _), decoder_errors():
        im = open_image(fp, max_pixels)
        orientation = im.getexif().get(EXIF_ORIENTATION_TAG) if exif_transpose else None
        with _truncated_policy(allow_truncated):
            im.load()
        rgb = _to_rgb(im, alpha)
        if orientation in _ORIENTATION_TRANSPOSE:
            rgb = rgb.transpose(_ORIENTATION_TRANSPOSE[orientation])
        return rgb


def decode_rgb(src: str | bytes, **policies) -> np.ndarray:
    """`decode_image` as a contiguous (height, width, 3) uint8 array."""
    return np.ascontiguousarray(np.asarray(decode_image(src, **policies), dtype=np.uint8))
