"""The `mmtok` command: a Typer app that registers one function per subcommand.

Each command's module is imported only when the app that needs it is built: `mmtok layout`
builds an app of `layout` alone and never loads pyarrow; `mmtok --help` builds them all (so
does `from mmtok.cli.app import app`)."""

from __future__ import annotations

import ast
import enum
import importlib
import importlib.util
import inspect
from collections.abc import Iterable
from typing import Annotated, Any, get_args, get_origin

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

import mmtok
from mmtok.cli import coercion
from mmtok.cli.entry import main  # the executable (old installs name it here)

# name -> (module, function), in the order `mmtok --help` lists them
COMMANDS = {
    "probe": ("mmtok.cli.probe", "probe"),
    "presets": ("mmtok.cli.presets", "presets"),
    "layout": ("mmtok.cli.presets", "layout"),
    "tile": ("mmtok.cli.tile", "tile"),
    "estimate-budget": ("mmtok.cli.budget", "estimate_budget"),
    "filter": ("mmtok.cli.filter", "filter_rows"),
    "dedup": ("mmtok.cli.dedup", "dedup"),
    "embed": ("mmtok.cli.embed", "embed"),
    "sample-frames": ("mmtok.cli.sample_frames", "sample_frames"),
    "tokenize-images": ("mmtok.cli.tokenize_images", "tokenize_images"),
    "detokenize": ("mmtok.cli.detokenize", "detokenize"),
    "run": ("mmtok.cli.run", "run"),
}


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
    """Help that reads cleanly at 80 columns: reflowed paragraphs, value names, no types; and
    values converted without pydantic (`mmtok.cli.coercion`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = reflow(self.help)

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # with --help and Typer's completion options
        for param in params:
            coercion.install(param)  # before any value is parsed: no pydantic
            if param.metavar is None:
                param.metavar = value_name(param)
            if isinstance(param, TyperArgument):  # its name says what it takes: no type column
                param.display_type_rich = _no_type
        return params


class Command(_CleanHelp, TyperCommand):
    pass


class Group(_CleanHelp, TyperGroup):
    pass


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mmtok {mmtok.__version__}")
        raise typer.Exit()


def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """mmtok: multimodal data preparation and vision-token budgets."""


def summary(name: str) -> str:
    """The first paragraph of a command's docstring, read from its module's source without
    importing it (the commands import pyarrow, numpy and Pillow: most of a second)."""
    module, function = COMMANDS[name]
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return ""
    with open(spec.origin, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == function:
            return (ast.get_docstring(node) or "").split("\n\n")[0]
    return ""


def _listed(text: str) -> Any:
    def command() -> None:
        pass

    command.__doc__ = text
    return command


def build(names: Iterable[str] = COMMANDS, *, listing: bool = False) -> typer.Typer:
    """The app with the named commands (all by default), importing only their modules.
    `listing`: commands that only list themselves (for `mmtok --help`), none imported."""
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
    app.callback()(_root)
    for name in names:
        module, function = COMMANDS[name]
        if listing:
            app.command(name, cls=Command)(_listed(summary(name)))
        else:
            app.command(name, cls=Command)(getattr(importlib.import_module(module), function))
    return app


def __getattr__(name: str) -> Any:
    """`app`: every command, built on first use (PEP 562)."""
    if name == "app":
        globals()["app"] = build()
        return globals()["app"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["COMMANDS", "build", "main"]  # and `app`, built on first use
