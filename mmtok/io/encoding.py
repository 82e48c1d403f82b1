"""Text and paths that are not valid UTF-8, as crawled data has them.

Arrow and Parquet strings must be valid UTF-8. Two kinds of value break that rule:
- text with lone UTF-16 surrogates (`"\\ud83d"` in JSON: an emoji cut in half) or bytes that
  are not UTF-8: it is *made valid* (each bad code point becomes U+FFFD) and the row says so in
  its `warning` column;
- file names that are not UTF-8 (Linux allows any bytes but `/` and NUL): Python holds them as
  `str` with surrogate escapes (PEP 383), which open the right file but cannot be written as
  text. They are *kept losslessly* as `file:` URIs whose bytes are percent-encoded
  (RFC 8089 file URIs, RFC 3986 section 2.1 percent-encoding); `local_path` turns them back.
"""

from __future__ import annotations

import os
import re
from urllib.parse import quote_from_bytes, unquote_to_bytes

_SURROGATE = re.compile("[\ud800-\udfff]")
FILE_URI = "file://"


def is_valid_text(text: str) -> bool:
    """True when `text` can be written as UTF-8 (no lone surrogates)."""
    return text.isascii() or _SURROGATE.search(text) is None


def valid_text(text: str) -> str:
    """`text` with every lone surrogate replaced by U+FFFD (the replacement character)."""
    return _SURROGATE.sub("\ufffd", text)


def path_text(path: str) -> str:
    """A file system path as valid text: itself when it is UTF-8, else a `file:` URI of its bytes.

    `path` is absolute when the URI form is used (callers resolve paths before), so the URI is
    `file://` + the percent-encoded absolute path (`file:///data/caf%E9.jpg`)."""
    if is_valid_text(path):
        return path
    raw = os.fsencode(path)  # surrogate escapes -> the original bytes
    return FILE_URI + quote_from_bytes(raw, safe="/")


def local_path(text: str) -> str:
    """The file system path of a `file:` URI (RFC 8089), with its percent-encoded bytes decoded;
    `file://localhost/x` and `file:/x` are accepted as well."""
    rest = text[5:] if text[:5].lower() == "file:" else text
    if rest.startswith("//"):
        rest = rest[2:]
        host, slash, tail = rest.partition("/")
        if host not in ("", "localhost"):
            return text  # a remote host: not a local file, left as given
        rest = slash + tail
    # as bytes: a URI read from bytes that are not UTF-8 holds them as surrogate escapes
    return os.fsdecode(unquote_to_bytes(os.fsencode(rest)))


def name_text(raw: bytes) -> tuple[str, str | None]:
    """A name stored as bytes (a tar member) as text, and a warning when it is not UTF-8."""
    try:
        return raw.decode(), None
    except UnicodeDecodeError:
        text = raw.decode(errors="replace")
        return text, f"name {raw!r} is not UTF-8: invalid bytes replaced with U+FFFD"
