"""`read_webp_header` must give exactly what Pillow gives, or step aside (None).

Files are encoded by Pillow (libwebp) in every layout: lossy, lossless, alpha (ALPH chunk or
lossless alpha), extended with ICC, EXIF and XMP, animated; then cut and bit-flipped.
"""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image

from mmtok.images.probe import BadImage, probe_image
from mmtok.images.webp_header import read_webp_header
from tests.conftest import encode, photo
from tests.images.header_oracle import pillow_only, probed


def transparent(w: int, h: int, seed: int = 0) -> Image.Image:
    im = photo(w, h, seed).convert("RGBA")
    im.putalpha(Image.linear_gradient("L").resize((w, h)))
    return im


def tiff(orientation: int, big_endian: bool = False) -> bytes:
    if big_endian:
        ifd = struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0)
        return b"MM\0*" + struct.pack(">I", 8) + ifd + b"\0\0\0\0"
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "A camera maker"
    return exif.tobytes()


def webp_cases() -> dict[str, bytes]:
    small = photo(48, 32)
    xmp = b'<x:xmpmeta><rdf:Description tiff:Orientation="6"/></x:xmpmeta>'
    frames = [photo(40, 30, seed=i) for i in range(3)]
    cases = {
        "lossy": encode(small, "WEBP", quality=80),
        "lossless": encode(small, "WEBP", lossless=True),
        "lossy_alpha": encode(transparent(48, 32), "WEBP", quality=80),
        "lossless_alpha": encode(transparent(48, 32), "WEBP", lossless=True),
        "icc": encode(small, "WEBP", icc_profile=b"\0" * 120),
        "exif_big_endian_8": encode(small, "WEBP", exif=tiff(8, big_endian=True)),
        "exif_without_orientation": encode(small, "WEBP", exif=b"II*\0\x08\0\0\0\0\0"),
        "xmp_orientation": encode(small, "WEBP", xmp=xmp),
        "exif_and_xmp": encode(small, "WEBP", exif=tiff(3), xmp=xmp),
        "animated_3": encode(frames[0], "WEBP", save_all=True, append_images=frames[1:]),
        "animated_alpha": encode(
            transparent(40, 30), "WEBP", save_all=True, append_images=[transparent(40, 30, 1)]
        ),
        "animated_lossless": encode(
            frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True
        ),
        "odd_sizes_1x1": encode(photo(1, 1), "WEBP"),
        "wide_3000x2": encode(photo(3000, 2), "WEBP"),
    }
    for orientation in range(1, 9):
        cases[f"exif_{orientation}"] = encode(small, "WEBP", exif=tiff(orientation))
    return cases


@pytest.mark.parametrize("name", sorted(webp_cases()))
def test_same_facts_as_pillow(name):
    data = webp_cases()[name]
    assert probed(data) == pillow_only(data)


def test_fast_path_answers_plain_files_and_steps_aside_otherwise():
    cases = webp_cases()

    def header(name):
        return read_webp_header(io.BytesIO(cases[name]), len(cases[name]))

    for name in ("lossy", "lossless", "lossy_alpha", "lossless_alpha", "icc", "exif_6",
                 "animated_3", "animated_alpha", "animated_lossless"):  # fmt: skip
        assert header(name) is not None, name
    assert header("exif_6").exif_orientation == 6
    assert header("animated_3").frames == 3
    assert header("lossless_alpha").mode == "RGBA" == header("lossy_alpha").mode
    assert header("lossy").mode == "RGB"
    assert header("xmp_orientation") is None  # Pillow's own rule reads the XMP packet
    assert probe_image(cases["xmp_orientation"]).exif_orientation == 6


def test_cut_files_match_pillow():
    for name in ("lossy", "exif_6", "animated_alpha", "lossless"):
        data = webp_cases()[name]
        for cut in range(len(data)):
            assert probed(data[:cut]) == pillow_only(data[:cut]), (name, cut)


def test_flipped_bytes_match_pillow():
    rng = np.random.default_rng(3)
    for name in ("lossy", "lossy_alpha", "exif_6", "animated_alpha", "lossless_alpha", "icc"):
        data = webp_cases()[name]
        for _ in range(400):
            corrupt = bytearray(data)
            at = int(rng.integers(0, min(len(data), 120)))  # the headers, not the entropy data
            corrupt[at] = int(rng.integers(0, 256))
            assert probed(bytes(corrupt)) == pillow_only(bytes(corrupt)), (name, at)


def test_bomb_sizes_are_refused_by_the_fast_path_too():
    data = bytearray(webp_cases()["exif_6"])  # VP8X: canvas size at bytes 24-29
    data[24:30] = (16000).to_bytes(3, "little") * 2
    with pytest.raises(BadImage) as e:
        probe_image(bytes(data))
    assert e.value.reason == pillow_only(bytes(data)) == "bomb"
