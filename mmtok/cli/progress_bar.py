"""The columns of the progress bar a run shows on a terminal (imported only then: rich)."""

from __future__ import annotations

from rich.progress import (
    BarColumn,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} rows/s" if speed else "- rows/s", style="progress.data.speed")


class _CountColumn(ProgressColumn):
    """done/total with thousands separators (1,234/5,678)."""

    def render(self, task: Task) -> Text:
        total = "?" if task.total is None else f"{int(task.total):,}"
        return Text(f"{int(task.completed):,}/{total}", style="progress.download")


def progress_columns(width: int) -> list[ProgressColumn]:
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
