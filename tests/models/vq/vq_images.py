"""Real image files for the VQ tests: photo-like pixels (gradients, blobs, noise) saved as
JPEG and PNG in the modes the preprocessing must handle, named by what they are."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from mmtok.models.vq.tiny import synthetic_images


def rgb(width: int, height: int, seed: int = 0) -> np.ndarray:
    """(height, width, 3) uint8 photo-like pixels."""
    side = max(width, height)
    return synthetic_images(1, side, seed)[0][:height, :width].copy()


def alpha_ramp(width: int, height: int) -> np.ndarray:
    """An alpha plane with every value 0..255 (a diagonal ramp), some fully opaque rows."""
    yy, xx = np.mgrid[0:height, 0:width]
    ramp = (xx * 255 // max(width - 1, 1) + yy * 37) % 256
    ramp[: height // 4] = 255
    return ramp.astype(np.uint8)


def write_images(folder: Path) -> dict[str, Path]:
    """One file per case, opened later with `Image.open` as a user's file would be."""
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}

    def save(name: str, im: Image.Image, **kw) -> None:
        files[name] = folder / name
        im.save(files[name], **kw)

    save("rgb_97x131.jpg", Image.fromarray(rgb(97, 131, 1)), quality=90)
    save("rgb_300x200.png", Image.fromarray(rgb(300, 200, 2)))
    rgba = np.dstack([rgb(131, 77, 3), alpha_ramp(131, 77)])
    save("rgba_131x77.png", Image.fromarray(rgba, "RGBA"))
    palette = Image.fromarray(rgb(90, 120, 4)).quantize(64)
    save("p_trns_90x120.png", palette, transparency=5)  # palette index 5 is transparent
    alphas = bytes(range(0, 256, 4))  # a tRNS alpha per palette entry
    save(
        "p_alpha_palette_77x50.png",
        Image.fromarray(rgb(77, 50, 12)).quantize(64),
        transparency=alphas,
    )
    save("p_90x120.gif", Image.fromarray(rgb(90, 120, 5)).quantize(32))
    save("l_150x64.jpg", Image.fromarray(rgb(150, 64, 6)[:, :, 1]), quality=92)
    save(
        "la_70x70.png",
        Image.fromarray(np.dstack([rgb(70, 70, 7)[:, :, 0], alpha_ramp(70, 70)]), "LA"),
    )
    grey16 = (
        rgb(80, 45, 8)[:, :, 2].astype(np.uint16) * 257 + np.arange(80, dtype=np.uint16)
    ) & 0xFFFF
    save("i16_80x45.png", Image.fromarray(grey16.astype(np.uint16)))
    save(
        "i16_trns_80x45.png",
        Image.fromarray(grey16.astype(np.uint16)),
        transparency=int(grey16[3, 3]),
    )
    trns = rgb(60, 90, 11)
    save(
        "rgb_trns_60x90.png", Image.fromarray(trns), transparency=tuple(int(v) for v in trns[0, 0])
    )
    save("rgb_513x37.png", Image.fromarray(rgb(513, 37, 9)))  # extreme aspect ratio
    cmyk = Image.fromarray(rgb(64, 100, 10)).convert("CMYK")
    save("cmyk_64x100.jpg", cmyk, quality=90)
    return files
