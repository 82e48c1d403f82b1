"""Open an image path only when it is a regular file.

A named pipe blocks `open()` until a writer appears (forever, at 0% CPU), a character device
can stream without end (/dev/zero), a socket cannot be read as a file, a directory has no bytes:
none of them is an image. The path is opened with O_NONBLOCK, so opening never waits, and
checked with `fstat` on the open descriptor, so nothing can swap the file between the check and
the read.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO

_KINDS = (
    (stat.S_ISDIR, "is a directory"),
    (stat.S_ISFIFO, "is a named pipe (FIFO), not a regular file"),
    (stat.S_ISSOCK, "is a socket, not a regular file"),
    (stat.S_ISCHR, "is a character device, not a regular file"),
    (stat.S_ISBLK, "is a block device, not a regular file"),
)
_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


class NotRegularFile(OSError):
    """The path exists but is not a regular file; `strerror` says what it is."""


def _kind(mode: int) -> str:
    return next((text for test, text in _KINDS if test(mode)), "is not a regular file")


def open_regular(path: str) -> BinaryIO:
    """Open `path` for binary reading; raises `NotRegularFile` for anything but a regular file,
    and the usual `OSError`s (FileNotFoundError, PermissionError, ...) otherwise."""
    fd, _ = open_regular_fd(path)
    try:
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def open_regular_fd(path: str) -> tuple[int, int]:
    """`open_regular` as a bare descriptor (the caller closes it) and the file's size: a header
    reader that reads a block or two with `os.read` saves a file object's set-up, its own
    `fstat` and its copies (a few microseconds per file, the most of a JPEG header read)."""
    try:
        fd = os.open(path, _FLAGS)
    except (FileNotFoundError, PermissionError):
        raise
    except OSError:  # e.g. ENXIO for a socket: say what the path is when it is not a file
        try:
            mode = os.stat(path).st_mode
        except OSError:
            mode = stat.S_IFREG
        if not stat.S_ISREG(mode):
            raise NotRegularFile(errno.EINVAL, _kind(mode)) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(errno.EINVAL, _kind(st.st_mode))
        os.set_blocking(fd, True)
        return fd, st.st_size
    except BaseException:
        os.close(fd)
        raise
