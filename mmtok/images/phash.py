"""64-bit DCT perceptual hash, bit for bit the `imagehash.phash` rule, and its mirror image.

imagehash 4.3 `phash(image, hash_size=8, highfreq_factor=4)`: grey ("L"), resize to 32x32 with
Lanczos, 2-D DCT-II, keep the top-left 8x8 coefficients, bit = coefficient > their median,
bits in row-major order (the first coefficient is the most significant bit here).
The DCT is a matrix product (scipy's unnormalised DCT-II up to a constant factor, which does
not move the median), so no scipy is needed.

The grey image comes from the one pixel-mode policy (`mmtok.images.decode.eight_bit`, alpha
over white): bit for bit imagehash on opaque 8-bit images (RGB, L, P, CMYK, 1), and a 16-bit or
transparent copy of a picture hashes like the picture, where imagehash's `convert("L")` clips
16-bit values to white and shows whatever colour lies under transparent pixels.

Decoding for hashing uses libjpeg's DCT scaling (`draft`) to at least 64 px: a 512 px JPEG
decodes about 3x faster, and the hash moves by at most a few bits, far below --max-distance.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from mmtok.images.decode import AlphaPolicy, eight_bit, load_pixels

SIDE = 32  # hash_size 8 x highfreq_factor 4
HASH_ALPHA = AlphaPolicy.WHITE  # as the model references see a transparent image
_n = np.arange(SIDE)
# rows k = 0..7 of the DCT-II matrix: cos(pi * k * (2n + 1) / (2N))
_DCT8 = np.cos(np.pi * np.arange(8)[:, None] * (2 * _n[None, :] + 1) / (2 * SIDE))
# a horizontal mirror multiplies horizontal frequency k by (-1)^k
_MIRROR = np.where(np.arange(8) % 2 == 0, 1.0, -1.0)[None, :]
_WEIGHTS = (1 << np.arange(63, -1, -1, dtype=np.uint64)).astype(np.uint64)


def _bits(low: np.ndarray) -> int:
    bits = (low > np.median(low)).ravel()
    return int(np.bitwise_or.reduce(_WEIGHTS[bits])) if bits.any() else 0


def phash_pixels(grey32: np.ndarray) -> tuple[int, int]:
    """(hash, hash of the mirrored image) of a 32x32 grey array."""
    low = _DCT8 @ grey32.astype(np.float64) @ _DCT8.T  # [vertical k, horizontal k]
    return _bits(low), _bits(low * _MIRROR)


def phash_image(image: Image.Image) -> tuple[int, int]:
    """(hash, mirrored hash) of a loaded image of any mode, as imagehash.phash computes the
    first on opaque 8-bit images."""
    grey = eight_bit(image, HASH_ALPHA, "L").resize((SIDE, SIDE), Image.Resampling.LANCZOS)
    return phash_pixels(np.asarray(grey))


def decode_for_hash(image: Image.Image, exif_transpose: bool = True) -> Image.Image:
    """The opened image decoded small (JPEG DCT scaling to >= 64 px), EXIF-rotated, as 8-bit
    grey under the pixel-mode policy (call inside `pixel_errors`)."""
    return load_pixels(
        image, exif_transpose=exif_transpose, alpha=HASH_ALPHA, mode="L", draft=2 * SIDE
    )


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.bitwise_count(np.bitwise_xor(a, b))
