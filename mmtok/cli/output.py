"""How a command talks to people and scripts: a progress bar on a terminal, a summary as rich
tables or one JSON document, nothing but errors with --quiet, and clean error messages."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from mmtok.errors import MmtokError


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} rows/s" if speed else "- rows/s", style="progress.data.speed")


class _CountColumn(ProgressColumn):
    """done/total with thousands separators (1,234/5,678)."""

    def render(self, task: Task) -> Text:
        total = "?" if task.total is None else f"{int(task.total):,}"
        return Text(f"{int(task.completed):,}/{total}", style="progress.download")


def _progress_columns(width: int) -> list[ProgressColumn]:
    """Every column on a wide terminal. Below 110 columns the description and the elapsed time
    go and the bar shrinks, below 80 the rejects too, so that the counts, the rate and the
    time left stay whole (rich would cut them: `4567…`)."""
    figures = [
        _CountColumn(),
        _RateColumn(),
        TextColumn("{task.fields[rejects]} rejected"),
    ]
    if width >= 110:
        return [
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            *figures,
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
        ]
    if width >= 80:
        bar = BarColumn(bar_width=max(6, width - 66))
        return [SpinnerColumn(), bar, *figures, TextColumn("eta"), TimeRemainingColumn()]
    return [SpinnerColumn(), BarColumn(bar_width=6), *figures[:2], TimeRemainingColumn()]


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
        self.out = Console(file=sys.stderr if stdout_is_data else sys.stdout, soft_wrap=True)
        if stdout_is_data and not sys.stderr.isatty() and (stderr_is_data or not as_json):
            self.quiet = True
        self.err = Console(file=sys.stderr, soft_wrap=True)
        interactive = sys.stdout.isatty() and sys.stderr.isatty()
        self.show_progress = interactive and not quiet and not as_json

    @contextmanager
    def progress(self, description: str) -> Iterator[tuple[Callable, Callable]]:
        """Yields (on_start(total, done), on_progress(done, rejected)) for `run_pipeline`."""
        if not self.show_progress:
            yield (lambda total, done: None), (lambda done, rejected: None)
            return
        columns = _progress_columns(self.err.width)
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
            self.out.file.write(json.dumps(document, indent=2, default=str) + "\n")
        else:
            render(self.out)


def handle_errors(command: Callable) -> Callable:
    """Turn `MmtokError` into a clean message and exit code, never a traceback."""

    @wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except MmtokError as e:
            console = Console(file=sys.stderr, soft_wrap=True)
            console.print(f"[bold red]error:[/] {e}", highlight=False)
            if e.hint:
                console.print(f"[dim]hint:[/] {e.hint}", highlight=False)
            raise typer.Exit(e.exit_code) from None

    return wrapper
