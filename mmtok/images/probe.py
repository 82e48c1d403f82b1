"""Header-only image probe: size, format, mode, frames and EXIF orientation without decoding pixels.

An image is given as a filesystem path (`str`) or as encoded bytes. Every data problem raises
`BadImage` with a reason code; anything else that escapes is a bug in mmtok and must surface.
"""

from __future__ import annotations

import functools
import io
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

from PIL import Image

from mmtok.images.jpeg_header import jpeg_facts
from mmtok.images.open_file import open_regular_fd
from mmtok.images.png_header import _Positional, png_facts, read_png_tail
from mmtok.images.webp_header import webp_facts, webp_head
from mmtok.io.encoding import local_path, path_text
from mmtok.reasons import Reason, RowRejected

# Pillow's own hard limit (2 x MAX_IMAGE_PIXELS): beyond it Pillow refuses to open the file.
DEFAULT_MAX_PIXELS = 178_956_970
_FIRST_READ = 4096  # a plain JPEG's header, mostly
_BYTES_LIKE = (bytes, bytearray, memoryview)

EXIF_ORIENTATION_TAG = 0x0112
# Orientations 5-8 rotate by 90 degrees, so the displayed image has width and height swapped.
SWAPS_SIDES = frozenset({5, 6, 7, 8})

# Raster formats Pillow may open. EPS is left out on purpose: loading it runs Ghostscript.
_EXCLUDED_FORMATS = {"EPS"}


@functools.cache
def _open_formats() -> tuple[str, ...]:
    # Pillow's own registration order (common formats first): tried in order on open.
    Image.init()
    return tuple(f for f in Image.ID if f in Image.OPEN and f not in _EXCLUDED_FORMATS)


class BadImage(RowRejected):
    """A data problem with one image; becomes a reject with `reason` and `message`."""


@dataclass(frozen=True, slots=True)
class ImageInfo:
    width: int
    height: int
    format: str
    mode: str
    frames: int
    exif_orientation: int | None
    file_bytes: int

    @property
    def display_size(self) -> tuple[int, int]:
        """Width and height as a viewer shows the image, after the EXIF rotation."""
        if self.exif_orientation in SWAPS_SIDES:
            return self.height, self.width
        return self.width, self.height


@contextmanager
def open_source(src: str | bytes, *, buffered: bool = True) -> Iterator[tuple[BinaryIO, int]]:
    """Open a path or bytes for reading; yields the stream and its size in bytes.
    `buffered=False`: a path opens as a raw `io.FileIO` (for the header readers)."""
    fp, size = _open(src, buffered)
    with fp:
        yield fp, size


def _open(src: str | bytes, buffered: bool) -> tuple[BinaryIO, int]:
    """The stream and size of a path or bytes (the caller closes it); `BadImage` when there is
    nothing to read."""
    if isinstance(src, _BYTES_LIKE):
        if len(src) == 0:
            raise BadImage(Reason.EMPTY_FILE, "image bytes are empty")
        return io.BytesIO(src), len(src)
    fd, size = _open_fd(src)
    try:
        return (os.fdopen(fd, "rb") if buffered else io.FileIO(fd, "rb")), size
    except BaseException:
        os.close(fd)
        raise


def _open_fd(path: str) -> tuple[int, int]:
    """A path's open descriptor (the caller closes it) and size; `BadImage` when there is
    nothing to read."""
    name = path_text(path)  # a path of non-UTF-8 bytes is named by its file: URI
    try:
        fd, size = open_regular_fd(path)
    except FileNotFoundError:
        raise BadImage(Reason.MISSING_FILE, f"no such file: {name}") from None
    except IsADirectoryError:
        raise BadImage(Reason.READ_ERROR, f"is a directory: {name}") from None
    except OSError as e:
        raise BadImage(Reason.READ_ERROR, f"{e.strerror or e}: {name}") from None
    except ValueError:  # os.open's "embedded null byte": no file has that name
        raise BadImage(Reason.MISSING_FILE, f"no file name holds a NUL byte: {name!r}") from None
    if size == 0:
        os.close(fd)
        raise BadImage(Reason.EMPTY_FILE, f"file is empty: {name}")
    return fd, size


@contextmanager
def decoder_errors() -> Iterator[None]:
    """Map whatever Pillow raises on bad data to a reason code.

    Pillow's plugins raise many types on corrupt input (OSError, SyntaxError, ValueError,
    struct.error, EOFError, ...). This wraps only calls into Pillow, so a bug in mmtok's own
    code is not hidden by it.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DecompressionBombWarning, EXIF and ICC chatter
        try:
            yield
        except BadImage:
            raise
        except Image.DecompressionBombError as e:
            raise BadImage(Reason.BOMB, str(e)) from None
        except Image.UnidentifiedImageError:
            raise BadImage(Reason.NOT_IMAGE, "cannot identify image format") from None
        except (EOFError, OSError) as e:
            message = str(e) or type(e).__name__
            if isinstance(e, EOFError) or "truncated" in message.lower():
                raise BadImage(Reason.TRUNCATED, message) from None
            raise BadImage(Reason.DECODE_ERROR, f"{type(e).__name__}: {message}") from None
        except Exception as e:  # noqa: BLE001 - Pillow's decoders raise arbitrary types on bad data
            raise BadImage(Reason.DECODE_ERROR, f"{type(e).__name__}: {e}") from None


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise BadImage(
            Reason.BOMB,
            f"{width}x{height} = {width * height:,} pixels exceeds the limit of {max_pixels:,}",
        )


def open_image(fp: BinaryIO, max_pixels: int) -> Image.Image:
    """Open lazily (header only) and refuse sizes above `max_pixels` before any pixel exists."""
    im = Image.open(fp, formats=list(_open_formats()))
    check_pixels(im.width, im.height, max_pixels)
    return im


def probe_image(src: str | bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Read the header of one image; raises `BadImage` for bad data.

    Plain JPEGs, PNGs and WebPs are read by `jpeg_facts`, `png_facts` and `webp_facts` (same
    facts, two to fifty times faster); everything else, and any file they are unsure of, by
    Pillow (a PNG's EXIF after its pixels still by `read_png_tail`'s chunk walk, never by a
    pixel load)."""
    return ImageInfo(*probe_facts(src, max_pixels))


def probe_facts(src: str | bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple:
    """`probe_image`'s facts as a tuple in `ImageInfo`'s field order (a loop over many images
    saves the object)."""
    if type(src) is not str and isinstance(src, _BYTES_LIKE):
        if len(src) == 0:
            raise BadImage(Reason.EMPTY_FILE, "image bytes are empty")
        return _facts(src if type(src) is bytes else bytes(src), None, len(src), max_pixels)
    fd, size = _open_fd(src)
    try:
        # One read of the first block, no file object: the JPEG walk mostly needs no more
        return _facts(os.read(fd, _FIRST_READ), fd, size, max_pixels)
    finally:
        os.close(fd)


def _facts(head: bytes, fd: int | None, size: int, max_pixels: int) -> tuple:
    """The facts of the image whose first bytes are `head`: all of it when `fd` is None, else
    the rest is read from `fd` (at the end of `head`)."""
    jpeg = jpeg_facts(head, fd)  # pure Python: nothing to map, so outside decoder_errors
    if jpeg is not None:
        width, height, mode, orientation = jpeg
        check_pixels(width, height, max_pixels)
        return width, height, "jpeg", mode, 1, orientation, size
    png = png_facts(head if fd is None else _Positional(fd, head), size)
    if png is not None:
        width, height, mode, orientation = png
        check_pixels(width, height, max_pixels)
        return width, height, "png", mode, 1, orientation, size
    data = webp_head(head, fd, size)
    webp = None if data is None else webp_facts(data, size)
    if webp is not None:
        width, height, mode, frames, orientation = webp
        check_pixels(width, height, max_pixels)
        return width, height, "webp", mode, frames, orientation, size
    if fd is None:
        fp: BinaryIO = io.BytesIO(head)
    else:  # Pillow reads a few bytes at a time: buffer them; the caller closes `fd`
        os.lseek(fd, 0, os.SEEK_SET)
        fp = io.BufferedReader(io.FileIO(fd, "rb", closefd=False))
    with decoder_errors():
        info = pillow_info(fp, size, max_pixels)
    return (info.width, info.height, info.format, info.mode, info.frames, info.exif_orientation,
            info.file_bytes)  # fmt: skip


def pillow_info(fp: BinaryIO, size: int, max_pixels: int) -> ImageInfo:
    """The header facts as Pillow reads them (call inside `decoder_errors`)."""
    im = open_image(fp, max_pixels)
    orientation = header_exif(im, fp, size).get(EXIF_ORIENTATION_TAG)
    return ImageInfo(
        width=im.width,
        height=im.height,
        format=(im.format or "unknown").lower(),
        mode=im.mode,
        frames=int(getattr(im, "n_frames", 1)),
        exif_orientation=int(orientation) if isinstance(orientation, int) else None,
        file_bytes=size,
    )


def header_exif(im: Image.Image, fp: BinaryIO, size: int) -> Image.Exif:
    """`im.getexif()` without the pixel load Pillow does for a PNG whose eXIf chunk is not
    before the image data: `read_png_tail` finds it by walking the chunks instead."""
    if im.format != "PNG" or "exif" in im.info or not im.tile:
        return im.getexif()
    tail = read_png_tail(fp, im.tile[0][2] - 8, size, getattr(im, "is_animated", False))
    if tail is None:
        return im.getexif()  # Pillow's rules: it loads the image
    if tail.exif is not None:
        im.info["exif"] = b"Exif\x00\x00" + tail.exif  # what Pillow's eXIf handler stores
        return im.getexif()
    if not _EXIF_INFO_KEYS & im.info.keys():
        return Image.Exif()  # what getexif builds from nothing (the common PNG, in 0 us)
    # Nothing after the pixels that getexif reads: the base class answers from the header
    # info, exactly what PngImageFile.getexif returns after its load.
    return Image.Image.getexif(im)


# The info keys `Image.getexif` reads (EXIF as hex text, XMP orientation): Pillow 13.0.
_EXIF_INFO_KEYS = frozenset({"exif", "Raw profile type exif", "XML:com.adobe.xmp", "xmp"})


def image_input(image: dict | None) -> str | bytes:
    """The path or bytes to read from a row's `image` struct; raises `BadImage` if there is none."""
    if image is None:
        raise BadImage(Reason.NO_IMAGE, "the row has no image path or bytes")
    return image_source(image.get("path"), image.get("bytes"))


def image_source(path: str | None, data: bytes | None) -> str | bytes:
    """`image_input` of the struct {path, bytes}."""
    if data is not None:
        return data
    if path:
        if "://" in path:  # any URI, "file://" too
            if path[:7].lower() == "file://":  # a path that is not UTF-8, kept as its bytes
                return local_path(path)
            raise BadImage(Reason.UNSUPPORTED_URI, f"not a local file: {path}")
        return path
    raise BadImage(Reason.NO_IMAGE, "the row has no image path or bytes")
