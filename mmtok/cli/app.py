"""The `mmtok` command: a Typer app that registers one function per subcommand."""

from __future__ import annotations

from typing import Annotated

import typer

import mmtok
from mmtok.cli.budget import estimate_budget
from mmtok.cli.dedup import dedup
from mmtok.cli.embed import embed
from mmtok.cli.filter import filter_rows
from mmtok.cli.presets import layout, presets
from mmtok.cli.probe import probe
from mmtok.cli.tile import tile

app = typer.Typer(
    name="mmtok",
    help="Prepare image-text data for multimodal LLM training, and count what it costs: "
    "vision tokens per model, bytes per token, and a reason for every dropped row.",
    rich_markup_mode="rich",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("probe")(probe)
app.command("presets")(presets)
app.command("layout")(layout)
app.command("tile")(tile)
app.command("estimate-budget")(estimate_budget)
app.command("filter")(filter_rows)
app.command("dedup")(dedup)
app.command("embed")(embed)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mmtok {mmtok.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """mmtok: multimodal data preparation and vision-token budgets."""


def main() -> None:
    app()
