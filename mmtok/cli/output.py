"""How a command talks to people and scripts: a progress bar on a terminal, a summary as rich
tables or one JSON document, nothing but errors with --quiet, and clean error messages."""

from __future__ import annotations

import errno
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cached_property, wraps
from typing import TYPE_CHECKING, Any

import typer

from mmtok.errors import MmtokError

if TYPE_CHECKING:
    from rich.console import Console

# rich is imported when something is printed with it (tables, a progress bar, an error): a
# run with --json or --quiet never loads it (~25 ms of start-up)


class Reporter:
    """One output object per command: human, --json or --quiet."""

    def __init__(
        self,
        *,
        quiet: bool = False,
        as_json: bool = False,
        stdout_is_data: bool = False,
        stderr_is_data: bool = False,
    ):
        self.quiet, self.as_json = quiet, as_json
        # With -o - the rows own stdout, so the summary goes to stderr: for a person at a
        # terminal, or as JSON when asked and stderr does not carry the rejected rows.
        self._out_file = sys.stderr if stdout_is_data else sys.stdout
        if stdout_is_data and not sys.stderr.isatty() and (stderr_is_data or not as_json):
            self.quiet = True
        self._err_file = sys.stderr
        interactive = sys.stdout.isatty() and sys.stderr.isatty()
        self.show_progress = interactive and not quiet and not as_json

    @cached_property
    def out(self) -> Console:
        from rich.console import Console

        return Console(file=self._out_file, soft_wrap=True)

    @cached_property
    def err(self) -> Console:
        from rich.console import Console

        return Console(file=self._err_file, soft_wrap=True)

    @contextmanager
    def status(self, text: str) -> Iterator[None]:
        """A spinner with `text` on a terminal while work with no count runs (nothing when
        piped); it leaves no line behind."""
        if not self.show_progress:
            yield
            return
        with self.err.status(text, spinner="dots"):
            yield

    @contextmanager
    def progress(self, description: str) -> Iterator[tuple[Callable, Callable]]:
        """Yields (on_start(total, done), on_progress(done, rejected)) for `run_pipeline`."""
        if not self.show_progress:
            yield (lambda total, done: None), (lambda done, rejected: None)
            return
        from rich.progress import Progress

        from mmtok.cli.progress_bar import progress_columns

        columns = progress_columns(self.err.width)
        with Progress(*columns, console=self.err, transient=False) as bar:
            task = bar.add_task(description, total=None, rejects=0)

            def on_start(total: int | None, done: int) -> None:
                bar.update(task, total=total, completed=done)

            def on_progress(done: int, rejected: int) -> None:
                bar.update(task, completed=done, rejects=f"{rejected:,}")

            yield on_start, on_progress

    def result(self, document: dict[str, Any], render: Callable[[Console], None]) -> None:
        if self.quiet:
            return
        if self.as_json:
            file = self.out.file if "out" in self.__dict__ else self._out_file
            file.write(json.dumps(document, indent=2, default=str) + "\n")
        else:
            render(self.out)


# What a person can do about an OS error on one of their paths, by errno.
_WHAT_TO_DO = {
    errno.EACCES: "check its permissions, or choose another path",
    errno.EPERM: "check its permissions, or choose another path",
    errno.EROFS: "it is on a read-only file system: choose another path",
    errno.ENOENT: "check the path (a folder to write into must exist)",
    errno.ENOTDIR: "choose a path that is not inside a file",
    errno.EEXIST: "choose a path that is not inside a file",
    errno.EISDIR: "it is a folder: give a file path",
    errno.ENOSPC: "free some space or choose another disk, then run the same command again",
    errno.EDQUOT: "the disk quota is used up: free some space, then run the same command again",
}
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
# pyarrow's and Python's words when a thread cannot start (a memory or process limit)
_NO_THREAD = ("Failed to launch worker thread", "can't start new thread")


def user_error(error: BaseException, paths: tuple[str | None, ...] = ()) -> MmtokError | None:
    """The one-line error a person can act on, or None for a bug (which keeps its traceback).

    User errors: `MmtokError`; Ctrl-C; an OS error on a named path (a read-only folder, a
    missing folder, a file where a folder must be) or a full disk; a thread that cannot start
    under a memory or process limit. `paths`: what the command writes (-o, --rejects), named
    when the error has no path of its own (pyarrow's write errors do not say which file)."""
    if isinstance(error, MmtokError):
        return error
    if isinstance(error, KeyboardInterrupt):
        return _error("interrupted", None, 130)
    if isinstance(error, OSError) and (error.filename is not None or error.errno in _NO_SPACE):
        what = os.strerror(error.errno) if error.errno else str(error)
        written = [p for p in paths if p and p != "-"]
        path = error.filename if error.filename is not None else " or ".join(written)
        hint = _WHAT_TO_DO.get(error.errno)
        if error.errno in (errno.EEXIST, errno.ENOTDIR) and os.path.isfile(path):
            what = "a file, where a folder is needed"
        if error.errno in _NO_SPACE and paths and paths[0] not in (None, "-"):
            hint = f"{hint} with --resume"
        return _error(f"{path}: {what}" if path else what, hint, 2)
    # A full disk also fails the clean-up that follows it (closing, flushing the shard):
    # report the full disk, not the clean-up's error about a closed file.
    context = error.__context__
    while context is not None:
        if isinstance(context, OSError) and context.errno in _NO_SPACE:
            return user_error(context, paths)
        context = context.__context__
    arrow = type(error).__module__.startswith("pyarrow")
    if (arrow or isinstance(error, RuntimeError)) and any(w in str(error) for w in _NO_THREAD):
        return _error(
            f"could not start a thread ({error})",
            "a memory limit (ulimit -v) or process limit (ulimit -u) is too low: raise it, "
            "or use fewer --workers",
            2,
        )
    return None


def _error(message: str, hint: str | None, exit_code: int) -> MmtokError:
    error = MmtokError(message, hint)
    error.exit_code = exit_code
    return error


errors_printed = 0  # so that the executable says "interrupted" once, when nothing else did


def print_error(error: MmtokError) -> None:
    """One line on stderr: the message and what to do. Markup in it is printed as written
    (`pip install 'mmtok[plot]'` keeps its brackets)."""
    global errors_printed
    errors_printed += 1
    text = " ".join(str(error).split())  # one line, whatever the message holds
    if error.hint:
        text += f" (hint: {' '.join(error.hint.split())})"
    from rich.console import Console
    from rich.markup import escape

    console = Console(file=sys.stderr, soft_wrap=True)
    console.print(f"[bold red]error:[/] {escape(text)}", highlight=False)


def handle_errors(command: Callable) -> Callable:
    """Turn a user error (see `user_error`) into one line and its exit code, never a
    traceback; anything else is a bug and keeps its traceback."""

    @wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (Exception, KeyboardInterrupt) as e:
            error = user_error(e, (kwargs.get("output"), kwargs.get("rejects")))
            if error is None:
                raise
            print_error(error)
            raise typer.Exit(error.exit_code) from None

    return wrapper


def count_rows(table: Any, doc: dict[str, Any], kept: str) -> None:
    """The first rows of a model command's summary: rows in, `kept` (tokenized, embedded...),
    rejected with each reason, and the output."""
    counts = doc["counts"]
    table.add_row("rows in", f"{counts['in']:,}")
    table.add_row(kept, f"{counts['out']:,}")
    table.add_row("rejected", f"{counts['rejected']:,}")
    for reason, n in (counts.get("rejected_by_reason") or {}).items():
        table.add_row(f"  {reason}", f"{n:,}")
    if doc["output"]:
        table.add_row("output", str(doc["output"]))
