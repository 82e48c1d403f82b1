"""`read_jpeg_header` must give exactly what Pillow gives, or step aside (None).

Each case compares `probe_image` (fast path first) with Pillow alone on the same bytes: the
same facts, or the same reject reason. Cut and bit-flipped copies cover the corrupt headers.
"""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image

from mmtok.images.jpeg_header import read_jpeg_header
from mmtok.images.probe import BadImage, probe_image
from tests.conftest import build_image_files, encode, photo
from tests.images.header_oracle import pillow_only, probed


def exif_bytes(big_endian: bool = False, **tags) -> bytes:
    exif = Image.Exif()
    for tag, value in tags.items():
        exif[int(tag[1:], 16)] = value
    data = exif.tobytes()
    if big_endian:  # Pillow writes little-endian; rebuild IFD0 big-endian by hand
        entries = [(0x0112, 3, 1, struct.pack(">HH", tags["x0112"], 0))]
        ifd = struct.pack(">H", len(entries))
        ifd += b"".join(struct.pack(">HHI", t, k, n) + v for t, k, n, v in entries)
        data = b"Exif\0\0MM\0*" + struct.pack(">I", 8) + ifd + b"\0\0\0\0"
    return data


def xmp_orientation(jpeg: bytes, orientation: int) -> bytes:
    packet = (
        b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta><rdf:Description "
        + f'tiff:Orientation="{orientation}"/></x:xmpmeta>'.encode()
    )
    segment = b"\xff\xe1" + struct.pack(">H", len(packet) + 2) + packet
    return jpeg[:2] + segment + jpeg[2:]


def mpo(frames: int = 2) -> bytes:
    ims = [photo(48, 32, seed=i) for i in range(frames)]
    return encode(ims[0], "MPO", save_all=True, append_images=ims[1:])


def jpeg_cases() -> dict[str, bytes]:
    small = photo(96, 64)
    cases = {
        "baseline": encode(small, "JPEG", quality=90),
        "progressive": encode(small, "JPEG", progressive=True),
        "optimized_q30": encode(small, "JPEG", quality=30, optimize=True),
        "subsampling_444": encode(small, "JPEG", subsampling=0),
        "gray": encode(small.convert("L"), "JPEG"),
        "cmyk": encode(small.convert("CMYK"), "JPEG"),
        "icc_comment_dpi": encode(
            small, "JPEG", icc_profile=b"\0" * 300, comment=b"hello", dpi=(300, 300)
        ),
        "exif_big_endian_6": encode(small, "JPEG", exif=exif_bytes(big_endian=True, x0112=6)),
        "exif_long_values": encode(
            small, "JPEG", exif=exif_bytes(x010f="A camera maker", x0110="model X", x0112=3)
        ),
        "exif_without_orientation": encode(small, "JPEG", exif=exif_bytes(x010f="Maker")),
        "xmp_orientation_8": xmp_orientation(encode(small, "JPEG"), 8),
        "xmp_and_exif": xmp_orientation(encode(small, "JPEG", exif=exif_bytes(x0112=5)), 8),
        "mpo_2_frames": mpo(),
        "wide_4000x3": encode(photo(4000, 3), "JPEG"),
    }
    for orientation in range(1, 9):
        cases[f"exif_{orientation}"] = encode(small, "JPEG", exif=exif_bytes(x0112=orientation))
    return cases


@pytest.mark.parametrize("name", sorted(jpeg_cases()))
def test_same_facts_as_pillow(name):
    data = jpeg_cases()[name]
    assert probed(data) == pillow_only(data)


def test_fast_path_answers_plain_jpegs_and_steps_aside_otherwise():
    cases = jpeg_cases()
    for name in ("baseline", "progressive", "gray", "cmyk", "exif_6", "exif_big_endian_6"):
        assert read_jpeg_header(io.BytesIO(cases[name])) is not None, name
    assert read_jpeg_header(io.BytesIO(cases["exif_6"])).exif_orientation == 6
    # Pillow's own rules decide these: XMP orientation, several frames
    for name in ("xmp_orientation_8", "mpo_2_frames"):
        assert read_jpeg_header(io.BytesIO(cases[name])) is None, name
    assert probe_image(cases["xmp_orientation_8"]).exif_orientation == 8
    assert probe_image(cases["mpo_2_frames"]).frames == 2


def test_every_fixture_matches_pillow(tmp_path):
    for name, path in build_image_files(tmp_path).items():
        data = path.read_bytes()
        assert probed(data) == pillow_only(data), name


def test_cut_files_match_pillow():
    """Cut inside every header segment: the fast path must never answer differently."""
    for name in ("baseline", "exif_long_values", "icc_comment_dpi", "progressive"):
        data = jpeg_cases()[name]
        scan = data.index(b"\xff\xda")
        for cut in [*range(0, scan + 8), len(data) // 2]:
            assert probed(data[:cut]) == pillow_only(data[:cut]), (name, cut)


def test_flipped_header_bytes_match_pillow():
    rng = np.random.default_rng(7)
    for name in ("baseline", "exif_long_values", "exif_big_endian_6", "cmyk"):
        data = jpeg_cases()[name]
        scan = data.index(b"\xff\xda")
        for _ in range(300):
            corrupt = bytearray(data)
            at = int(rng.integers(2, scan + 4))
            corrupt[at] = int(rng.integers(0, 256))
            assert probed(bytes(corrupt)) == pillow_only(bytes(corrupt)), (name, at)


def test_bomb_sizes_are_refused_by_the_fast_path_too():
    data = bytearray(encode(photo(16, 16), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 65000, 65000)  # height, width
    assert read_jpeg_header(io.BytesIO(bytes(data))) is not None
    with pytest.raises(BadImage) as e:
        probe_image(bytes(data))
    assert e.value.reason == pillow_only(bytes(data)) == "bomb"
