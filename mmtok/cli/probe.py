"""`mmtok probe`: read each image's header (size, format, mode, frames, EXIF) into a dataset."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mmtok.cli import options as o
from mmtok.cli.output import handle_errors
from mmtok.commands import build_plan
from mmtok.commands.probe import ProbeOptions
from mmtok.images import DEFAULT_MAX_PIXELS
from mmtok.reasons import DESCRIPTIONS, Reason


@handle_errors
@o.dataset_command()
def probe(
    decode_check: Annotated[
        bool,
        typer.Option(
            "--decode-check",
            help="Fully decode every image: catches truncated and corrupt files whose header "
            "is intact.",
        ),
    ] = False,
    allow_truncated: Annotated[
        bool,
        typer.Option(
            "--allow-truncated",
            help="With --decode-check: accept truncated images (Pillow fills the rest grey).",
        ),
    ] = False,
    max_pixels: Annotated[
        int,
        typer.Option(
            min=1, help="Pixel limit: larger images are rejected as `bomb` without allocating them."
        ),
    ] = DEFAULT_MAX_PIXELS,
    **shared: Any,
) -> None:
    """Probe image headers: width, height, format, mode, frames, EXIF orientation, file size.

    Reads no pixels unless --decode-check is given. Writes the input rows plus the probe
    columns to -o (a dataset folder, or - for JSON Lines); unreadable images go to
    __mmtok__/rejects.parquet with a reason code. Without -o, prints the summary only.

    [bold]Examples[/]

      mmtok probe captions.jsonl -o probed/
      mmtok probe 'shards/*.tar' -o probed/ --decode-check
      mmtok probe photos/ --json
      mmtok probe a.jsonl -o - | mmtok probe - -o out/
    """
    opts = ProbeOptions.from_arguments({**locals(), **shared})
    o.run_dataset(opts, build_plan, render_summary, shared)


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit == "B":
        for scale, suffix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
            if value >= scale:
                return f"{value / scale:.1f} {suffix}"
        return f"{value:.0f} B"
    return f"{value:,.2f}" if unit == "MP" else f"{value:,.0f}"


def render_summary(console: Console, doc: dict[str, Any]) -> None:
    counts = doc["counts"]
    head = Table(title="mmtok probe", show_header=False, title_justify="left")
    head.add_row("rows in", f"{counts['in']:,}")
    head.add_row("probed", f"{counts['out']:,}")
    head.add_row("rejected", f"{counts['rejected']:,}")
    if doc["output"]:
        head.add_row("output", Text(str(doc["output"])))  # a path, not markup
    timing = doc.get("timing") or {}
    if timing.get("rows_per_second"):
        workers = timing["workers"]
        head.add_row(
            "speed",
            f"{timing['rows_per_second']:,.0f} rows/s on {workers} worker{'s' * (workers > 1)}",
        )
    console.print(head)

    if doc["formats"]:
        formats = Table(title="formats", title_justify="left")
        formats.add_column("format")
        formats.add_column("images", justify="right")
        formats.add_column("share", justify="right")
        total = sum(doc["formats"].values())
        for name, n in doc["formats"].items():
            formats.add_row(str(name), f"{n:,}", f"{100 * n / total:.1f}%")
        console.print(formats)

        sizes = Table(
            title="sizes" + ("" if doc["percentiles_exact"] else " (sampled)"), title_justify="left"
        )
        sizes.add_column("")
        for q in ("p5", "p50", "p95"):
            sizes.add_column(q, justify="right")
        for key, label, unit in (
            ("width", "width px", ""),
            ("height", "height px", ""),
            ("megapixels", "megapixels", "MP"),
            ("file_bytes", "file size", "B"),
        ):
            p = doc["percentiles"][key]
            sizes.add_row(label, *(_fmt(p[q], unit) for q in ("p5", "p50", "p95")))
        console.print(sizes)

    if counts["rejected_by_reason"]:
        rejects = Table(title="rejects", title_justify="left")
        rejects.add_column("reason")
        rejects.add_column("rows", justify="right")
        rejects.add_column("meaning")
        for reason, n in counts["rejected_by_reason"].items():
            meaning = (
                DESCRIPTIONS.get(Reason(reason), "") if reason in Reason._value2member_map_ else ""
            )
            rejects.add_row(reason, f"{n:,}", meaning)
        console.print(rejects)
