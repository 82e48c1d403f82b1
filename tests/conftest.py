"""Fixtures build their own small real files, named by what they are."""

from __future__ import annotations

import io
import json
import signal
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Tests never touch the user's home or caches."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))


@pytest.fixture(autouse=True)
def _ctrl_c_reaches_children():
    """A library loaded by an earlier test may leave SIGINT ignored at the C level (Python's
    own view still says default), and children inherit an ignored signal: the Ctrl-C tests'
    mmtok would then never see theirs. Each test starts with Python's handler installed."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # a blocked one is inherited too


@pytest.fixture
def scratch_registry(monkeypatch):
    """Presets a test registers from a TOML file vanish after it."""
    from mmtok.presets import get_preset, registry

    monkeypatch.setattr(registry, "_registry", dict(registry._registry))
    get_preset.cache_clear()
    yield
    get_preset.cache_clear()


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth gradient with noise: compresses like a photo, not like a flat colour."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // max(width, 1), y * 255 // max(height, 1), (x + y) % 256], axis=2)
    noise = rng.integers(0, 40, (height, width, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims a size but that holds no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def _palette_with_transparency() -> Image.Image:
    im = Image.new("P", (30, 20), 0)
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    im.paste(1, (0, 0, 10, 20))  # left third: index 1 (blue), transparent
    return im


def _gif_3frames() -> bytes:
    frames = [Image.new("RGB", (40, 30), c) for c in ("red", "green", "blue")]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:])


def _tiff_2pages() -> bytes:
    pages = [Image.new("L", (32, 24), v) for v in (10, 200)]
    return encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])


def build_image_files(folder: Path) -> dict[str, Path]:
    """Every kind of file the probe must handle; returns name -> path."""
    jpeg = encode(photo(640, 480), "JPEG", quality=90)
    gray16 = (np.arange(40 * 50).reshape(40, 50) * 32).astype(np.uint16)
    files: dict[str, bytes] = {
        "rgb_640x480.png": encode(photo(640, 480), "PNG"),
        "baseline_640x480.jpg": jpeg,
        "progressive_320x240.jpg": encode(photo(320, 240), "JPEG", progressive=True),
        "cmyk_64x48.jpg": encode(Image.new("CMYK", (64, 48), (0, 255, 255, 0)), "JPEG"),
        "photo_100x50.webp": encode(photo(100, 50), "WEBP"),
        "animated_3frames_40x30.gif": _gif_3frames(),
        "multipage_2pages_32x24.tif": _tiff_2pages(),
        "gray16_50x40.png": encode(Image.fromarray(gray16), "PNG"),
        "palette_alpha_30x20.png": encode(_palette_with_transparency(), "PNG", transparency=1),
        "exif6_640x480.jpg": encode(photo(640, 480), "JPEG", exif=_exif(6)),
        "tiny_1x1.png": encode(Image.new("RGB", (1, 1), (9, 8, 7)), "PNG"),
        "strip_4000x3.png": encode(photo(4000, 3), "PNG"),
        "empty.jpg": b"",
        "truncated_640x480.jpg": jpeg[: len(jpeg) // 2],
        "random_bytes.jpg": np.random.default_rng(0).bytes(5000),
        "page_saved_as.png": b"<!doctype html><html><body>404 Not Found</body></html>\n",
        "drawing.svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
        "bomb_40000x40000.png": png_header_only(40000, 40000),
        "café photo ü.jpg": encode(photo(64, 48, seed=3), "JPEG"),
    }
    paths = {}
    for name, data in files.items():
        path = folder / name
        path.write_bytes(data)
        paths[name] = path
    return paths


@pytest.fixture(scope="session")
def image_files(tmp_path_factory) -> dict[str, Path]:
    return build_image_files(tmp_path_factory.mktemp("images"))


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


@pytest.fixture
def worker_messages(monkeypatch) -> list:
    """Every message this process receives from its workers, in order (`Connection.recv`)."""
    import multiprocessing.connection

    received: list = []
    original = multiprocessing.connection.Connection.recv

    def recv(self):
        message = original(self)
        received.append(message)
        return message

    monkeypatch.setattr(multiprocessing.connection.Connection, "recv", recv)
    return received


def received_tables(messages: list) -> list:
    """The Arrow tables in worker messages (`worker_messages`), also inside lists they carry."""
    import pyarrow as pa

    return [
        x
        for m in messages
        if isinstance(m, tuple)
        for x in (*m, *(y for y in m if isinstance(y, list) for y in y))
        if isinstance(x, pa.Table)
    ]


def is_binary(t) -> bool:
    """An Arrow type that holds bytes (image or frame data), also inside a struct."""
    import pyarrow as pa

    if pa.types.is_struct(t):
        return any(is_binary(f.type) for f in t)
    return pa.types.is_binary(t) or pa.types.is_large_binary(t)


def same_parquet(a_path: Path, b_path: Path) -> bool:
    """Two Parquet files with the same rows, row groups and metadata but for the command line
    they record (`mmtok_command`: a CLI run against an API run, or other flags)."""
    import pyarrow.parquet as pq

    a, b = pq.ParquetFile(a_path), pq.ParquetFile(b_path)
    meta_a, meta_b = (
        {k: v for k, v in (f.schema_arrow.metadata or {}).items() if k != b"mmtok_command"}
        for f in (a, b)
    )
    return (
        a.read().equals(b.read())
        and a.metadata.num_row_groups == b.metadata.num_row_groups
        and meta_a == meta_b
    )
