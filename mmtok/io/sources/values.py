"""Cell values as rows need them: image structs from paths, data URIs and bytes; captions;
stable row ids; text made valid with a warning."""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import os
import re
import zlib
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_to_bytes

from mmtok.io.encoding import local_path, path_text, valid_text

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
MESSAGE_TEXT = 500  # characters of a bad record quoted in its reject message
# A file that stops being readable part way (a cut .gz download, an I/O error): the records
# before are kept and the rest becomes one reject.
READ_ERRORS = (OSError, EOFError, zlib.error)


def row_id(source: str, key: str | int) -> str:
    """A stable id for a row without an id column: hash of (source file, row number or key).

    `surrogatepass` so names that are not UTF-8 hash too (valid text hashes as before)."""
    return hashlib.blake2b(
        f"{source}\0{key}".encode("utf-8", "surrogatepass"), digest_size=10
    ).hexdigest()


def row_id_prefix(source: str) -> Any:
    """The hash state of `row_id(source, n)` before n: copied and updated with b"%d" % n, its
    hex digest is `row_id(source, n)` (blake2b of a + b is the hash updated with a, then b)."""
    return hashlib.blake2b(f"{source}\0".encode("utf-8", "surrogatepass"), digest_size=10)


def row_ids(source: str) -> Callable[[int], str]:
    """`row_id(source, n)` for many row numbers n (`row_id_prefix`)."""
    copy = row_id_prefix(source).copy

    def row_id_of(n: int) -> str:
        h = copy()
        h.update(b"%d" % n)
        return h.hexdigest()

    return row_id_of


_POSIX = os.sep == "/" and os.altsep is None


def resolve_image_path(value: str, base_dir: str) -> str:
    """Relative paths resolve against the input file's folder; URLs are kept as given; a path
    that is not UTF-8 becomes a `file:` URI of its bytes (see `mmtok.io.encoding`). A value
    that no file name can hold is a `RecordError`."""
    try:
        return _resolve(value, base_dir)
    except UnicodeEncodeError as e:  # a lone surrogate from a JSON escape: not a byte
        raise RecordError(_no_file_name(value, e)) from None


def _no_file_name(value: str, error: UnicodeEncodeError) -> str:
    return f"image path {short_repr(value)} cannot be a file name ({error})"


def _resolve(value: str, base_dir: str) -> str:
    if ":" in value[:32]:  # a cheap test first: most values are plain paths
        if value[:5].lower() == "file:":
            return path_text(local_path(value))
        if _URI.match(value):
            return value
    if (
        _POSIX
        and value[:1] == "/"
        and "/." not in value
        and "//" not in value
        and value[-1:] != "/"
    ):
        return path_text(value)  # already what normpath(join(...)) gives: skip them (2 us)
    return path_text(os.path.normpath(os.path.join(base_dir, os.path.expanduser(value))))


def _resolve_against(base_dir: str, value: str) -> str:
    return resolve_image_path(value, base_dir)


class PathResolver:
    """`resolve_image_path` against one folder, for many values: rows mostly share a few
    folders, so `normpath(join(...))` runs once per folder and a value costs a dict lookup.

    Exact because the folder is absolute and the name a plain component (not empty, `.` or
    `..`): then normpath(folder/dir/name) is normpath(folder/dir) + "/" + name. Anything else
    (a URI, `~`, a name that normpath would change) takes the full rule."""

    _LIMIT = 4096  # folders remembered (memory stays bounded)

    def __init__(self, base_dir: str):
        self.base_dir = base_dir
        self._prefixes: dict[str, str] = {}
        self._exact = _POSIX and os.path.isabs(base_dir)  # else every value takes the full rule

    def __call__(self, value: str) -> str:
        if ":" in value[:32] or value[:1] == "~" or not self._exact:
            return resolve_image_path(value, self.base_dir)
        cut = value.rfind("/") + 1
        name = value[cut:]
        if not name or name == "." or name == "..":
            return resolve_image_path(value, self.base_dir)
        head = value[:cut]
        prefix = self._prefixes.get(head)
        if prefix is None:
            folder = os.path.normpath(os.path.join(self.base_dir, head))
            prefix = folder if folder.endswith("/") else folder + "/"
            if len(self._prefixes) >= self._LIMIT:
                self._prefixes.clear()
            self._prefixes[head] = prefix
        full = prefix + name
        if full.isascii():
            return full
        try:
            return path_text(full)
        except UnicodeEncodeError as e:
            raise RecordError(_no_file_name(value, e)) from None


class RecordError(ValueError):
    """A record that cannot become a row (stage "read", reason bad_record)."""


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise RecordError(f"{what} is not valid base64: {e}") from None


_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def data_uri_bytes(uri: str) -> bytes:
    """The bytes of a `data:` URI (RFC 2397): base64 after `;base64`, else percent-encoded.
    The scheme and the `;base64` marker are case-insensitive (RFC 3986 3.1, RFC 2397 3)."""
    header, comma, payload = uri.partition(",")
    if not comma:
        raise RecordError("image data URI has no ',' before its data")
    if header.lower().endswith(";base64"):
        return _b64(payload, "image data URI")
    if _BAD_PERCENT.search(payload):
        raise RecordError("image data URI has a '%' that is not a percent-encoded byte")
    return unquote_to_bytes(payload)


def short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def image_value(
    value: Any, base_dir: str, resolve: Callable[[str], str] | None = None
) -> dict | None:
    """Normalize an image cell (path, data URI, bytes, or {path, bytes}) to the image struct.
    `resolve`: `resolve_image_path` against `base_dir` (a `PathResolver` of it, say)."""
    if resolve is None:
        resolve = functools.partial(_resolve_against, base_dir)
    if value is None:
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        return {"path": None, "bytes": bytes(value)}
    if isinstance(value, str):
        if value == "":
            return None
        if value[4:5] == ":" and value[:4].lower() == "data":
            return {"path": None, "bytes": data_uri_bytes(value)}
        return {"path": resolve(value), "bytes": None}
    if isinstance(value, dict):
        path, data = value.get("path"), value.get("bytes")
        if isinstance(data, str):
            is_uri = data[:5].lower() == "data:"
            data = data_uri_bytes(data) if is_uri else _b64(data, "image bytes")
        elif isinstance(data, bytearray | memoryview):
            data = bytes(data)
        elif data is not None and not isinstance(data, bytes):
            raise RecordError(f"image bytes of type {type(data).__name__}: {short_repr(data)}")
        if path is not None and not isinstance(path, str):
            raise RecordError(f"image path of type {type(path).__name__}: {short_repr(path)}")
        if data is None and not path:
            return None
        return {"path": resolve(path) if path else None, "bytes": data}
    raise RecordError(f"image value of type {type(value).__name__} is neither a path nor bytes")


def caption_value(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False) if isinstance(value, list | dict) else str(value)


def valid_value(value: Any) -> Any:
    """`value` with lone surrogates replaced in every string it holds (keys included)."""
    if isinstance(value, str):
        return valid_text(value)
    if isinstance(value, dict):
        return {valid_value(k): valid_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [valid_value(v) for v in value]
    return value


def add_warning(row: dict, warning: str) -> None:
    row["warning"] = f"{row['warning']}; {warning}" if row.get("warning") else warning


def utf8_text(data: bytes) -> tuple[str, str | None]:
    """Text from bytes, and a warning when they were not valid UTF-8."""
    try:
        return data.decode(), None
    except UnicodeDecodeError:
        return data.decode(errors="replace"), "is not valid UTF-8: bad bytes replaced with U+FFFD"
