"""A path is probed from a bare descriptor (one first read, more read only when a header needs
it): it must give exactly what the same bytes give, and what Pillow alone gives, for every
walker case, cut file and header that crosses the first read. The EXIF IFD reader and the
`image` value rules are checked against the code they replaced."""

from __future__ import annotations

import contextlib
import io
import os
import socket
import struct

import numpy as np
import pytest
from PIL import Image

from mmtok.images import BadImage, image_input
from mmtok.images.jpeg_header import Unsure, exif_orientation, jpeg_facts
from mmtok.images.open_file import open_regular_fd
from mmtok.images.probe import image_source, open_source, probe_facts
from mmtok.images.webp_header import webp_facts, webp_head
from mmtok.io.encoding import local_path
from mmtok.reasons import Reason
from tests.conftest import build_image_files, encode, photo
from tests.images.header_oracle import pillow_only, probed
from tests.images.test_jpeg_header import exif_bytes, jpeg_cases
from tests.images.test_png_header import png_cases, rearranged, tiff_orientation
from tests.images.test_webp_header import webp_cases

FIRST_READ = 4096  # probe.py's first read of a path


def _same_from_path(tmp_path, name: str, data: bytes) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    want = pillow_only(data)
    assert probed(data) == want, name
    assert probed(str(path)) == want, name


def _cuts(data: bytes) -> list[int]:
    ends = {*range(0, min(len(data), 64), 3), len(data) // 2, len(data) - 1}
    ends |= {c for c in range(FIRST_READ - 8, FIRST_READ + 9) if c < len(data)}
    return sorted(ends)


@pytest.mark.parametrize("kind", ["jpeg", "png", "webp", "fixtures"])
def test_a_path_gives_what_its_bytes_and_pillow_give(tmp_path, kind):
    if kind == "fixtures":
        (tmp_path / "fixtures").mkdir()
        files = build_image_files(tmp_path / "fixtures")
        cases = {n: p.read_bytes() for n, p in files.items()}
    else:
        cases = {"jpeg": jpeg_cases, "png": png_cases, "webp": webp_cases}[kind]()
    for name, data in cases.items():
        if len(data) > 2_000_000:
            continue  # the 1 MB zlib bomb: its own test
        for cut in [len(data), *(_cuts(data) if len(data) < 200_000 else [])]:
            _same_from_path(tmp_path, (name, cut), data[:cut])


def _big_header_jpegs() -> dict[str, bytes]:
    """JPEGs whose header segments straddle the first read (ICC and EXIF of many sizes)."""
    small = photo(40, 30)
    cases = {}
    for size in range(3900, 4300, 37):
        cases[f"icc_{size}"] = encode(small, "JPEG", icc_profile=b"\1" * size)
    for size in (3500, 4050, 4090, 9000, 60000):
        exif = exif_bytes(x010f="M" * size, x0112=6)
        cases[f"exif_{size}"] = encode(small, "JPEG", exif=exif)
    cases["comment_20000"] = encode(small, "JPEG", comment=b"c" * 20000)
    return cases


def test_headers_across_the_first_read_are_read_from_the_descriptor(tmp_path):
    for name, data in _big_header_jpegs().items():
        scan = data.index(b"\xff\xda")
        assert scan > FIRST_READ - 200, name
        path = tmp_path / "big.jpg"
        path.write_bytes(data)
        fd, size = open_regular_fd(str(path))
        try:
            facts = jpeg_facts(os.read(fd, FIRST_READ), fd)
        finally:
            os.close(fd)
        assert facts is not None, name  # the walker read on, it did not hand over to Pillow
        assert facts == jpeg_facts(data, None) == jpeg_facts(data, io.BytesIO(b"")), name
        want = pillow_only(data)
        assert (want.width, want.height, want.mode, want.exif_orientation) == facts, name
        for cut in [*range(FIRST_READ - 6, FIRST_READ + 6), scan - 1, scan + 4, scan + 20]:
            _same_from_path(tmp_path, (name, cut), data[:cut])


def test_a_png_with_header_chunks_past_the_first_read(tmp_path):
    rgb = encode(photo(64, 48), "PNG")
    for text in (3900, 4080, 4200, 9000):
        before = [(b"tEXt", b"Comment\0" + b"t" * text), (b"eXIf", tiff_orientation(6))]
        data = rearranged(rgb, before=before)
        _same_from_path(tmp_path, text, data)
        assert probed(data).exif_orientation == 6
        data = rearranged(rgb, before=before[:1], after=[(b"eXIf", tiff_orientation(8))])
        _same_from_path(tmp_path, text, data)
        assert probed(data).exif_orientation == 8


def test_a_webp_larger_than_the_first_read(tmp_path):
    for size in (30, 60, 90, 200):
        data = encode(photo(size, size, seed=size), "WEBP", exif=exif_bytes(x0112=3))
        for cut in (len(data), len(data) - 1, len(data) // 2):
            _same_from_path(tmp_path, (size, cut), data[:cut])
    assert len(data) > FIRST_READ and probed(data).exif_orientation == 3
    path = tmp_path / "big.webp"
    path.write_bytes(data)
    fd, size = open_regular_fd(str(path))
    try:
        whole = webp_head(os.read(fd, FIRST_READ), fd, size)
    finally:
        os.close(fd)
    assert whole == data  # the rest read from the descriptor
    assert webp_facts(whole, size) == (200, 200, "RGB", 1, 3)


def test_the_probe_closes_what_it_opens(tmp_path, image_files):
    before = len(os.listdir("/proc/self/fd"))
    for path in image_files.values():
        with contextlib.suppress(BadImage):
            probe_facts(str(path))
    assert len(os.listdir("/proc/self/fd")) == before


# -- exif_orientation against the reader it replaced (int.from_bytes on slices) --------------

_TIFF_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4,
               16: 8, 17: 8, 18: 8}  # fmt: skip


def _reference_orientation(tiff: bytes) -> int | None | str:
    if tiff[:4] == b"II*\0":
        order = "little"
    elif tiff[:4] == b"MM\0*":
        order = "big"
    else:
        return "unsure"

    def u(at: int, n: int) -> int:
        if at + n > len(tiff):
            raise Unsure
        return int.from_bytes(tiff[at : at + n], order)

    try:
        ifd = u(4, 4)
        count = u(ifd, 2)
        orientation = None
        for i in range(count):
            entry = ifd + 2 + 12 * i
            tag, kind, n = u(entry, 2), u(entry + 2, 2), u(entry + 4, 4)
            if kind not in _TIFF_SIZES:
                raise Unsure
            size = _TIFF_SIZES[kind] * n
            if size > 4 and u(entry + 8, 4) + size > len(tiff):
                raise Unsure
            if tag == 0x0112:
                if kind != 3 or n != 1:
                    raise Unsure
                orientation = u(entry + 8, 2)
        u(ifd + 2 + 12 * count, 4)
        return orientation
    except Unsure:
        return "unsure"


def _orientation(tiff: bytes) -> int | None | str:
    try:
        return exif_orientation(tiff)
    except Unsure:
        return "unsure"


def _tiffs() -> list[bytes]:
    tiffs = []
    for orientation in (1, 6, 8, 300):
        for extra in ({}, {"x010f": "Maker", "x0110": "A model name"}, {"x0131": "s" * 3}):
            tiffs.append(exif_bytes(x0112=orientation, **extra)[6:])
    tiffs.append(exif_bytes(x010f="Maker")[6:])
    tiffs.append(exif_bytes(big_endian=True, x0112=6)[6:])
    entries = [(0x010F, 2, 40, 26), (0x0112, 3, 1, 5 << 16), (0x0112, 4, 1, 6)]
    ifd = struct.pack(">H", len(entries)) + b"".join(struct.pack(">HHII", *e) for e in entries)
    tiffs.append(b"MM\0*" + struct.pack(">I", 8) + ifd + b"\0\0\0\0" + b"x" * 40)
    return tiffs


def test_exif_orientation_reads_what_the_old_reader_read():
    rng = np.random.default_rng(11)
    checked = set()
    for tiff in _tiffs():
        variants = [tiff[:cut] for cut in range(len(tiff) + 1)]
        for _ in range(400):
            flipped = bytearray(tiff)
            for _ in range(int(rng.integers(1, 3))):
                flipped[int(rng.integers(0, len(tiff)))] = int(rng.integers(0, 256))
            variants.append(bytes(flipped))
        for data in variants:
            want = _reference_orientation(data)
            assert _orientation(data) == want, data
            checked.add(want if isinstance(want, str) else type(want))
    assert checked == {"unsure", int, type(None)}  # all three outcomes were exercised


# -- the image value of a row --------------------------------------------------------------

_URI_SCHEME = ("http://", "https://", "s3://", "gs://", "ftp://", "hf://")


def _reference_input(image: dict | None) -> str | bytes | tuple:
    """`image_input` as it was, with the reject as (reason, message)."""
    try:
        if image is not None:
            if image.get("bytes") is not None:
                return image["bytes"]
            path = image.get("path")
            if path:
                if path[:7].lower() == "file://":
                    return local_path(path)
                if path.startswith(_URI_SCHEME) or "://" in path:
                    raise BadImage(Reason.UNSUPPORTED_URI, f"not a local file: {path}")
                return path
        raise BadImage(Reason.NO_IMAGE, "the row has no image path or bytes")
    except BadImage as e:
        return e.reason, e.message


@pytest.mark.parametrize(
    "image",
    [
        None, {}, {"path": None}, {"path": ""}, {"bytes": b""}, {"bytes": b"x", "path": "http://a"},
        {"path": "a.jpg"}, {"path": "/x/a b.jpg", "bytes": None}, {"path": "file:///x/%FF.jpg"},
        {"path": "FILE://localhost/x.jpg"}, {"path": "File:/x.jpg"}, {"path": "file://host/x"},
        {"path": "http://x/a.jpg"}, {"path": "HTTPS://x"}, {"path": "s3://b/k"}, {"path": "x://"},
        {"path": "a://b"}, {"path": "://"}, {"path": "dir/with://inside.jpg"}, {"path": "hf:/x"},
        {"path": "\udcff.jpg"}, {"path": "file://"}, {"path": "fil://x"}, {"path": " file://x"},
    ],
)  # fmt: skip
def test_image_value_rules_are_unchanged(image):
    want = _reference_input(image)
    try:
        got = image_input(image)
    except BadImage as e:
        got = (e.reason, e.message)
    assert got == want
    if image is not None:
        try:
            direct = image_source(image.get("path"), image.get("bytes"))
        except BadImage as e:
            direct = (e.reason, e.message)
        assert direct == want


def test_bytes_like_values_are_probed_as_bytes(image_files):
    data = image_files["exif6_640x480.jpg"].read_bytes()
    want = probe_facts(data)
    assert probe_facts(bytearray(data)) == probe_facts(memoryview(data)) == want
    with pytest.raises(BadImage) as e:
        probe_facts(bytearray())
    assert e.value.reason == Reason.EMPTY_FILE
    assert Image.open(io.BytesIO(data)).size == want[:2]


def test_what_is_not_a_regular_file_is_refused_as_by_open_source(tmp_path):
    """The descriptor path and the file-object path (`open_source`, for decoding) open with
    the same rules and the same reject messages, without blocking on a FIFO."""
    fifo, sock_path = tmp_path / "fifo.jpg", tmp_path / "sock.jpg"
    os.mkfifo(fifo)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    (tmp_path / "empty.jpg").write_bytes(b"")
    try:
        for src in (
            fifo,
            sock_path,
            tmp_path,
            "/dev/zero",
            tmp_path / "no",
            tmp_path / "empty.jpg",
        ):
            with pytest.raises(BadImage) as by_fd:
                probe_facts(str(src))
            with pytest.raises(BadImage) as by_file, open_source(str(src)):
                pass
            assert (by_fd.value.reason, by_fd.value.message) == (
                by_file.value.reason, by_file.value.message), src  # fmt: skip
            assert by_fd.value.reason in ("read_error", "missing_file", "empty_file"), src
    finally:
        sock.close()
