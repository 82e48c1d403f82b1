"""Image probing and safe decoding: pure functions over a path or encoded bytes."""

from mmtok.images.decode import AlphaPolicy, decode_image, decode_rgb
from mmtok.images.probe import DEFAULT_MAX_PIXELS, BadImage, ImageInfo, image_input, probe_image

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "AlphaPolicy",
    "BadImage",
    "ImageInfo",
    "decode_image",
    "decode_rgb",
    "image_input",
    "probe_image",
]
