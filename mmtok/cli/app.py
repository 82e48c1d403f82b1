"""The `mmtok` command: a Typer app that registers one function per subcommand."""

from __future__ import annotations

import enum
import inspect
from typing import Annotated, Any, get_args, get_origin

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

import mmtok
from mmtok.cli.budget import estimate_budget
from mmtok.cli.dedup import dedup
from mmtok.cli.entry import main  # the executable (old installs name it here)
from mmtok.cli.filter import filter_rows
from mmtok.cli.presets import layout, presets
from mmtok.cli.probe import probe
from mmtok.cli.tile import tile


def reflow(text: str | None) -> str | None:
    """A docstring as help: each prose paragraph on one line (the terminal wraps it to its
    width; rich help keeps single line breaks), indented blocks (examples) as written."""
    if not text:
        return text
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(p if p.startswith(" ") else " ".join(p.split()) for p in paragraphs)


def value_name(param: TyperOption | TyperArgument) -> str:
    """What an option takes, as a word for people (N, X, TEXT, CHOICE), never a Python type
    name; flags take nothing."""
    if isinstance(param, TyperArgument):
        return (param.name or "").upper()  # the usage line reads `{INPUTS}...`
    if param.is_flag:
        return ""
    annotation: Any = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    if get_origin(annotation) is list:
        (annotation,) = get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "CHOICE"  # the help names the choices (a test checks it)
    return {int: "N", float: "X"}.get(annotation, "TEXT")


def _no_type(ctx: Any) -> None:
    return None


class _CleanHelp:
    """Help that reads cleanly at 80 columns: reflowed paragraphs, value names, no types."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = reflow(self.help)

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # with --help and Typer's completion options
        for param in params:
            if param.metavar is None:
                param.metavar = value_name(param)
            if isinstance(param, TyperArgument):  # its name says what it takes: no type column
                param.display_type_rich = _no_type
        return params


class Command(_CleanHelp, TyperCommand):
    pass


class Group(_CleanHelp, TyperGroup):
    pass


app = typer.Typer(
    name="mmtok",
    cls=Group,
    help="Prepare image-text data for multimodal LLM training, and count what it costs: "
    "vision tokens per model, bytes per token, and a reason for every dropped row.",
    rich_markup_mode="rich",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
for _name, _command in (
    ("probe", probe),
    ("presets", presets),
    ("layout", layout),
    ("tile", tile),
    ("estimate-budget", estimate_budget),
    ("filter", filter_rows),
    ("dedup", dedup),
):
    app.command(_name, cls=Command)(_command)


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


__all__ = ["app", "main"]
