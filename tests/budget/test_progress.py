"""The progress bar of a long run keeps its figures whole on narrow terminals."""

import io
import re

import pytest
from rich.console import Console

from mmtok.cli.output import Reporter


@pytest.mark.parametrize("width", [60, 80, 100, 120, 200])
def test_progress_figures_are_whole(width):
    console = Console(file=io.StringIO(), width=width, force_terminal=True, color_system=None)
    reporter = Reporter()
    reporter.show_progress, reporter.err = True, console
    with reporter.progress("estimating the budget") as (on_start, on_progress):
        on_start(12_345_678, 0)
        on_progress(4_567_890, 12_345)
    last = console.file.getvalue().split("\r")[-1]
    line = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", last).rstrip("\n")
    assert "…" not in line and len(line) <= width and "\n" not in line.strip("\n")
    assert "4,567,890/12,345,678" in line and "rows/s" in line
    assert ("12,345 rejected" in line) == (width >= 80)
    assert ("estimating the budget" in line) == (width >= 110)
