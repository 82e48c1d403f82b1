"""`mmtok run`: a recipe's steps from its sources into one output (see `mmtok.recipes`)."""

from __future__ import annotations

import importlib
from typing import Annotated, Any

import typer
from rich.console import Console

from mmtok.cli import options as o
from mmtok.cli.output import handle_errors

# each step's document is its command's: printed by that command's table
RENDER = {
    "probe": ("mmtok.cli.probe", "render_summary"),
    "filter": ("mmtok.cli.filter", "render"),
    "dedup": ("mmtok.cli.dedup", "render"),
    "tile": ("mmtok.cli.tile", "render"),
    "estimate-budget": ("mmtok.budget_report", "render"),
    "embed": ("mmtok.cli.embed", "render"),
    "sample-frames": ("mmtok.cli.sample_frames", "render"),
    "tokenize-images": ("mmtok.cli.tokenize_images", "render"),
    "detokenize": ("mmtok.cli.detokenize", "render"),
}


@handle_errors
def run(
    recipe: Annotated[str, typer.Argument(help="The recipe: a TOML file.", show_default=False)],
    inputs: Annotated[
        list[str] | None,
        typer.Argument(help="Inputs, instead of the recipe's.", show_default=False),
    ] = None,
    output: o.OutputOpt = None,
    overwrite: o.OverwriteOpt = False,
    resume: o.ResumeOpt = False,
    workers: o.WorkersOpt = None,
    engine: Annotated[
        o.Engine | None,
        typer.Option(
            help="Where the stages run: `local` or `ray` (default: the recipe's, else local).",
            rich_help_panel=o.RUN_PANEL,
        ),
    ] = None,
    ray_address: o.RayAddressOpt = None,
    quiet: o.QuietOpt = False,
    as_json: o.JsonOpt = False,
) -> None:
    """Run a recipe: its steps (filter, dedup, tile, estimate-budget, ...) from its inputs into
    one output, in one pass over the rows (two with a dedup step, which clusters first).

    A recipe holds the shared options at the top (inputs, output, image_col, workers, ...) and
    one \\[\\[steps]] table per step, with command = "filter" and the command's flags as keys
    (min_side = 64). Print one from a command line with --print-recipe. Options given here
    replace the recipe's. Every key and value is checked before any data is read.

    [bold]Examples[/]

      mmtok filter pairs.jsonl -o clean/ --min-side 64 --print-recipe > r.toml
      mmtok run r.toml
      mmtok run recipe.toml more.jsonl -o out/ --workers 8 --json
    """
    from mmtok import recipes
    from mmtok.commands.plan import Executor
    from mmtok.engine.pipeline import command_line

    given = {
        "inputs": inputs or None,
        "output": output,
        "overwrite": overwrite or None,
        "resume": resume or None,
        "workers": workers,
        "engine": engine.value if engine else None,
        "ray_address": ray_address,
    }
    loaded = recipes.override(
        recipes.load(recipe), {k: v for k, v in given.items() if v is not None}
    )
    plan = recipes.plan(loaded)
    opts = plan.options
    reporter = o.reporter_for(opts, quiet, as_json)
    executor = Executor.for_options(opts, progress=reporter.progress, command=command_line())
    document = executor.run(plan)
    o.say_problems(reporter, plan.problems(), stderr_is_data=o.stderr_is_data(opts))
    reporter.result(document, lambda console: render(console, document))


def render(console: Console, doc: dict[str, Any]) -> None:
    for step in doc["steps"]:
        module, function = RENDER[step["command"]]
        getattr(importlib.import_module(module), function)(console, step)
