"""A PNG's header facts, EXIF orientation included, without inflating its pixels.

Each case compares `probe_image` with Pillow alone (`Image.open` + its own `getexif()`, which
loads the pixels) on the same bytes: the same facts, or the same reject reason. Chunks are
moved, added, cut and bit-flipped to reach every branch of the tail walk.
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmtok.images import BadImage, ImageInfo, decode_image, probe_image
from mmtok.images.png_header import read_png_header, read_png_tail
from mmtok.reasons import Reason
from tests.conftest import build_image_files, encode, photo
from tests.images.header_oracle import pillow_only, probed

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    out, pos = [], 8
    while pos < len(png):
        length = struct.unpack(">I", png[pos : pos + 4])[0]
        out.append((png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return out


def build(parts: list[tuple[bytes, bytes]]) -> bytes:
    return SIGNATURE + b"".join(chunk(k, d) for k, d in parts)


def tiff_orientation(orientation: int, big_endian: bool = False) -> bytes:
    """Raw TIFF bytes (an eXIf chunk's body) with IFD0 Orientation."""
    if big_endian:
        ifd = struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0)
        return b"MM\0*" + struct.pack(">I", 8) + ifd + b"\0\0\0\0"
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "A camera maker"
    return exif.tobytes()[6:]


def rearranged(png: bytes, *, before: list | None = None, after: list | None = None) -> bytes:
    """The chunks of `png` with extra chunks before the first IDAT and after the last one."""
    parts = chunks(png)
    first = next(i for i, (k, _) in enumerate(parts) if k == b"IDAT")
    last = max(i for i, (k, _) in enumerate(parts) if k == b"IDAT")
    return build(parts[:first] + (before or []) + parts[first : last + 1] + (after or [])
                 + parts[last + 1 :])  # fmt: skip


def split_idat(png: bytes, size: int) -> bytes:
    """The same image with its pixel data spread over IDAT chunks of `size` bytes."""
    parts = chunks(png)
    data = b"".join(d for k, d in parts if k == b"IDAT")
    first = next(i for i, (k, _) in enumerate(parts) if k == b"IDAT")
    rest = [p for p in parts[first:] if p[0] != b"IDAT"]
    idat = [(b"IDAT", data[i : i + size]) for i in range(0, len(data), size)]
    return build(parts[:first] + idat + rest)


def ImageCms_profile() -> bytes:  # noqa: N802 - named after the module it comes from
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def apng(frames: int = 3) -> bytes:
    ims = [photo(40, 30, seed=i) for i in range(frames)]
    return encode(ims[0], "PNG", save_all=True, append_images=ims[1:])


def png_cases() -> dict[str, bytes]:
    rgb = encode(photo(64, 48), "PNG")
    small = encode(photo(24, 16), "PNG")
    xmp = b"XML:com.adobe.xmp\0\0\0\0\0" + b'<x:xmpmeta tiff:Orientation="6"/>'
    cases = {
        "rgb": rgb,
        "exif_before_idat_6": encode(photo(64, 48), "PNG", exif=b"Exif\0\0" + tiff_orientation(6)),
        "exif_after_idat_big_endian_8": rearranged(
            rgb, after=[(b"eXIf", tiff_orientation(8, big_endian=True))]
        ),
        "two_exif_after_idat": rearranged(
            rgb, after=[(b"eXIf", tiff_orientation(3)), (b"eXIf", tiff_orientation(5))]
        ),
        "exif_before_and_after": rearranged(
            rgb,
            before=[(b"eXIf", tiff_orientation(2))],
            after=[(b"eXIf", tiff_orientation(7))],
        ),
        "exif_without_orientation_after": rearranged(
            rgb, after=[(b"eXIf", b"II*\0\x08\0\0\0\0\0")]
        ),
        "exif_with_prefix_after": rearranged(
            rgb, after=[(b"eXIf", b"Exif\0\0" + tiff_orientation(6))]
        ),
        "text_after_idat": rearranged(
            rgb, after=[(b"tEXt", b"Comment\0hello"), (b"prIv", b"private chunk")]
        ),
        "raw_profile_exif_after": rearranged(
            rgb, after=[(b"tEXt", b"Raw profile type exif\0\nexif\n      0\n")]
        ),
        "xmp_before_idat": rearranged(rgb, before=[(b"iTXt", xmp)]),
        "xmp_after_idat": rearranged(rgb, after=[(b"iTXt", xmp)]),
        "ztxt_after_idat": rearranged(rgb, after=[(b"zTXt", b"Title\0\0" + zlib.compress(b"x"))]),
        "gama_after_idat": rearranged(rgb, after=[(b"gAMA", b"\0\0")]),
        "idat_in_8_byte_chunks_exif_6": split_idat(
            rearranged(small, after=[(b"eXIf", tiff_orientation(6))]), 8
        ),
        "junk_after_iend": rgb + b"garbage after the end",
        "no_iend": rgb[:-12],
        "gray16": encode(Image.fromarray(np.arange(600, dtype=np.uint16).reshape(20, 30)), "PNG"),
        "palette_transparency": encode(
            photo(30, 20).convert("P"), "PNG", transparency=3, optimize=True
        ),
        "la": encode(photo(30, 20).convert("LA"), "PNG"),
        "bilevel": encode(photo(30, 20).convert("1"), "PNG"),
        "rgba_icc_text": encode(
            photo(30, 20).convert("RGBA"), "PNG", icc_profile=b"\0" * 200, dpi=(72, 72)
        ),
        "icc_real_profile": encode(photo(30, 20), "PNG", icc_profile=ImageCms_profile()),
        "icc_method_1": rearranged(rgb, before=[(b"iCCP", b"icc\0\x01" + zlib.compress(b"x"))]),
        "icc_not_zlib": rearranged(rgb, before=[(b"iCCP", b"icc\0\0not zlib at all")]),
        "icc_too_large": rearranged(
            rgb, before=[(b"iCCP", b"icc\0\0" + zlib.compress(bytes(1_100_000)))]
        ),
        "apng_3_frames": apng(),
        "apng_exif_after_first_frame": rearranged(apng(), after=[(b"eXIf", tiff_orientation(6))]),
    }
    for orientation in range(1, 9):
        cases[f"exif_after_idat_{orientation}"] = rearranged(
            rgb, after=[(b"eXIf", tiff_orientation(orientation))]
        )
    return cases


@pytest.mark.parametrize("name", sorted(png_cases()))
def test_same_facts_as_pillow(name):
    data = png_cases()[name]
    assert probed(data) == pillow_only(data)


def test_the_tail_walk_answers_plain_files_and_steps_aside_otherwise():
    cases = png_cases()

    def tail(name):
        im = Image.open(io.BytesIO(cases[name]))
        return read_png_tail(
            io.BytesIO(cases[name]), im.tile[0][2] - 8, len(cases[name]), im.is_animated
        )

    assert tail("rgb").exif is None
    assert tail("exif_after_idat_6").exif == tiff_orientation(6)
    assert tail("two_exif_after_idat").exif == tiff_orientation(5)  # the last one, as Pillow
    assert tail("idat_in_8_byte_chunks_exif_6").exif == tiff_orientation(6)
    assert tail("text_after_idat").exif is None
    for name in ("raw_profile_exif_after", "xmp_after_idat", "ztxt_after_idat", "gama_after_idat"):
        assert tail(name) is None, name
    assert probe_image(cases["exif_after_idat_6"]).display_size == (48, 64)
    assert probe_image(cases["xmp_after_idat"]).exif_orientation == 6
    assert probe_image(cases["apng_3_frames"]).frames == 3


def test_every_fixture_matches_pillow(tmp_path):
    for name, path in build_image_files(tmp_path).items():
        data = path.read_bytes()
        assert probed(data) == pillow_only(data), name


def test_probe_from_a_path_reads_the_tail_too(tmp_path):
    path = tmp_path / "exif_after_idat_6.png"
    path.write_bytes(png_cases()["idat_in_8_byte_chunks_exif_6"])
    assert probe_image(str(path)).exif_orientation == 6


def test_cut_files_match_pillow():
    """Cut at every byte: in the header chunks, in the pixel data and in the tail."""
    for name in ("exif_after_idat_6", "text_after_idat", "idat_in_8_byte_chunks_exif_6"):
        data = png_cases()[name]
        for cut in range(len(data)):
            assert probed(data[:cut]) == pillow_only(data[:cut]), (name, cut)


def test_flipped_bytes_outside_the_pixel_data_match_pillow():
    """Any byte but the pixel stream: IDAT data and lengths (what the decoder reads; their
    corruption needs a decode to see, as a JPEG's scan does)."""
    rng = np.random.default_rng(11)
    for name in ("exif_after_idat_6", "text_after_idat", "idat_in_8_byte_chunks_exif_6",
                 "apng_exif_after_first_frame"):  # fmt: skip
        data = png_cases()[name]
        pixels, pos = set(), 8
        for kind, body in chunks(data):
            if kind in (b"IDAT", b"fdAT"):
                pixels.update(range(pos, pos + 4))  # the length
                pixels.update(range(pos + 8 + (4 if kind == b"fdAT" else 0), pos + 8 + len(body)))
            pos += 12 + len(body)
        places = [i for i in range(len(data)) if i not in pixels]
        for _ in range(400):
            corrupt = bytearray(data)
            at = places[int(rng.integers(len(places)))]
            corrupt[at] = int(rng.integers(0, 256))
            assert probed(bytes(corrupt)) == pillow_only(bytes(corrupt)), (name, at)


def test_bad_pixel_data_is_left_to_the_decode_check():
    """Well-formed chunks around corrupt compressed pixels: the header answers, the decode
    (`--decode-check`) rejects: no header-only pass inflates pixels."""
    data = bytearray(png_cases()["exif_after_idat_6"])
    idat = data.index(b"IDAT") + 4
    data[idat + 2 : idat + 40] = bytes(38)  # zero the start of the zlib stream
    data = bytes(data)
    assert pillow_only(data) in (Reason.DECODE_ERROR, Reason.TRUNCATED)  # Pillow had to decode
    assert probe_image(data).exif_orientation == 6
    with pytest.raises(BadImage):
        decode_image(data)


def zero_png(width: int, height: int) -> bytes:
    """A real grey PNG of zeros, compressed row block by row block (cheap to make)."""
    z = zlib.compressobj(1)
    block = b"\0" * (width + 1) * 1000
    body = [z.compress(block) for _ in range(height // 1000)]
    body += [z.compress(b"\0" * (width + 1) * (height % 1000)), z.flush()]
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = b"".join(body)
    idat = [chunk(b"IDAT", data[i : i + 65536]) for i in range(0, len(data), 65536)]
    return (SIGNATURE + chunk(b"IHDR", ihdr) + b"".join(idat)
            + chunk(b"eXIf", tiff_orientation(6)) + chunk(b"IEND", b""))  # fmt: skip


def test_a_169_megapixel_png_probes_in_milliseconds_with_little_memory(tmp_path):
    """The old probe loaded it (8.4 s, 748 MB here); a fresh process measures the walk alone."""
    path = tmp_path / "zeros_13000x13000.png"
    path.write_bytes(zero_png(13000, 13000))
    script = textwrap.dedent(
        f"""
        import resource, time
        from mmtok.images import probe_image
        probe_image({zero_png(10, 10)!r})  # imports warm, on a small file
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        info = probe_image({str(path)!r})
        took = time.perf_counter() - start
        grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        print(info.width, info.height, info.mode, info.exif_orientation, took, grew)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    width, height, mode, orientation, took, grew_kb = out.stdout.split()
    assert (int(width), int(height), mode, int(orientation)) == (13000, 13000, "L", 6)
    assert float(took) < 0.05  # a decode takes seconds
    assert int(grew_kb) < 20_000  # a decode needs 169 MB


def test_the_header_reader_answers_plain_files_and_steps_aside_otherwise():
    cases = png_cases()

    def header(name):
        return read_png_header(io.BytesIO(cases[name]), len(cases[name]))

    for name in ("rgb", "exif_before_idat_6", "exif_after_idat_6", "two_exif_after_idat",
                 "text_after_idat", "gray16", "palette_transparency", "la", "bilevel"):  # fmt: skip
        assert header(name) is not None, name
    assert header("exif_before_idat_6").exif_orientation == 6
    assert header("exif_before_and_after").exif_orientation == 2  # no load: the first wins
    assert header("two_exif_after_idat").exif_orientation == 5
    assert (header("gray16").mode, header("bilevel").mode, header("la").mode) == ("I;16", "1", "LA")
    assert header("rgba_icc_text").mode == "RGBA"  # the ICC profile inflates as Pillow's does
    # APNG, XMP and compressed text: Pillow's own rules
    for name in ("apng_3_frames", "xmp_before_idat", "ztxt_after_idat", "icc_method_1"):
        assert header(name) is None, name


def test_flips_with_right_crcs_match_pillow_wherever_the_pixels_load():
    """A flipped header or tail byte with its chunk's CRC recomputed passes Pillow's checks:
    the facts must then be Pillow's. Where the pixels no longer decode under the changed
    header (Pillow's getexif load fails), the header probe answers and the decode rejects."""
    rng = np.random.default_rng(22)
    for name, data in png_cases().items():
        spans, pos = [], 8
        for kind, body in chunks(data):
            if kind not in (b"IDAT", b"fdAT"):
                spans.append((pos, len(body)))
            pos += 12 + len(body)
        for _ in range(40):
            corrupt = bytearray(data)
            start, n = spans[int(rng.integers(len(spans)))]
            corrupt[start + 4 + int(rng.integers(0, n + 4))] = int(rng.integers(0, 256))
            crc = zlib.crc32(bytes(corrupt[start + 4 : start + 8 + n])) & 0xFFFFFFFF
            corrupt[start + 8 + n : start + 12 + n] = struct.pack(">I", crc)
            got, want = probed(bytes(corrupt)), pillow_only(bytes(corrupt))
            if got != want:
                assert isinstance(got, ImageInfo) and want in ("decode_error", "truncated"), name
                with pytest.raises(BadImage):
                    decode_image(bytes(corrupt))
