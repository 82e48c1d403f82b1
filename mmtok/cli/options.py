"""Option types shared by every command, declared once, so flags mean the same thing
everywhere; and the one way a dataset command runs: flags -> options -> plan -> document."""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any

import typer

from mmtok.cli.output import Reporter
from mmtok.commands.options import DEFAULT_ROW_TIMEOUT as DEFAULT_ROW_TIMEOUT
from mmtok.commands.options import parse_size as parse_size
from mmtok.commands.options import require_module as require_module
from mmtok.commands.options import writable_file as writable_file
from mmtok.commands.plan import Executor
from mmtok.engine.pipeline import command_line

KEYWORD = inspect.Parameter.KEYWORD_ONLY


class Engine(StrEnum):
    LOCAL = "local"
    RAY = "ray"


IO_PANEL = "Input and output"
RUN_PANEL = "Running"

InputsArg = Annotated[
    list[str],
    typer.Argument(
        help="Inputs: .jsonl/.csv/.tsv/.parquet files, WebDataset .tar shards, image folders, "
        "mmtok output folders, glob patterns, or - for JSON Lines on stdin.",
        show_default=False,
    ),
]
OutputOpt = Annotated[
    str | None,
    typer.Option(
        "--output",
        "-o",
        metavar="DIR",
        help="Output dataset folder, or - for JSON Lines on stdout.",
        rich_help_panel=IO_PANEL,
    ),
]
ImageColOpt = Annotated[
    str,
    typer.Option(
        metavar="NAME", help="Column with the image path or bytes.", rich_help_panel=IO_PANEL
    ),
]
TextColOpt = Annotated[
    str, typer.Option(metavar="NAME", help="Column with the caption.", rich_help_panel=IO_PANEL)
]
IdColOpt = Annotated[
    str | None,
    typer.Option(
        metavar="NAME",
        help="Column with row ids. Default: the input's `id` column if it has one, "
        "else a stable hash of the source file and row number.",
        rich_help_panel=IO_PANEL,
    ),
]
OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Replace an existing output.", rich_help_panel=IO_PANEL)
]
ResumeOpt = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="Continue a killed or interrupted run of the same command.",
        rich_help_panel=IO_PANEL,
    ),
]
ShardRowsOpt = Annotated[
    int, typer.Option(min=1, help="Target rows per output shard.", rich_help_panel=IO_PANEL)
]
ShardBytesOpt = Annotated[
    str,
    typer.Option(
        metavar="SIZE",
        help="Target in-memory size per output shard (e.g. 512MB, 2GB).",
        rich_help_panel=IO_PANEL,
    ),
]
ImageBytesOpt = Annotated[
    bool,
    typer.Option(
        "--image-bytes",
        help="Store each image's encoded bytes in the output (self-contained shards; data "
        "URIs with -o -), even when the input gives a path.",
        rich_help_panel=IO_PANEL,
    ),
]
RejectsOpt = Annotated[
    str | None,
    typer.Option(
        "--rejects",
        metavar="FILE",
        help="With -o -: write rejected rows as JSON Lines here (default: stderr).",
        rich_help_panel=IO_PANEL,
    ),
]
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers",
        "-w",
        min=1,
        help="Worker processes. Default: the number of cores.",
        rich_help_panel=RUN_PANEL,
    ),
]
RowTimeoutOpt = Annotated[
    float,
    typer.Option(
        "--row-timeout",
        min=0.1,
        metavar="SECONDS",
        help="Seconds a worker may spend on one row: a row that hangs is killed and rejected as "
        "`timeout` (a row that crashes its worker twice: `decoder_crash`), and the run goes on.",
        rich_help_panel=RUN_PANEL,
    ),
]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="Print nothing but errors.", rich_help_panel=RUN_PANEL)
]
JsonOpt = Annotated[
    bool,
    typer.Option(
        "--json", help="Print the summary as one JSON document.", rich_help_panel=RUN_PANEL
    ),
]


# The model options of every command that runs a CLIP-family model (embed, filter --model).
MODEL_PANEL = "Model"
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="open_clip architecture (ViT-B-32, ViT-L-14-quickgelu, ViT-B-16-SigLIP, ...) "
        "or local-dir:DIR (open_clip_config.json + weights).",
        rich_help_panel=MODEL_PANEL,
    ),
]
CheckpointOpt = Annotated[
    str | None,
    typer.Option(
        help="Weights file (.safetensors, .bin, .pt) for the architecture --model names.",
        rich_help_panel=MODEL_PANEL,
    ),
]
PretrainedTagOpt = Annotated[
    str | None,
    typer.Option(
        help="The tag the weights were trained as (openai, laion2b_s34b_b79k, webli, ...): "
        "sets the preprocessing and QuickGELU; without --checkpoint, the weights are "
        "taken from the local Hugging Face cache.",
        rich_help_panel=MODEL_PANEL,
    ),
]
PreprocessOpt = Annotated[
    str | None,
    typer.Option(
        help="Preprocessing by name, overriding the tag's: clip, clip-bilinear, clip-squash, "
        "inception, siglip, mobileclip.",
        rich_help_panel=MODEL_PANEL,
    ),
]
# The decoded-image pixel limit of the commands that decode images in their workers.
MaxPixelsOpt = Annotated[
    int, typer.Option(min=1, help="Pixel limit: larger images are rejected as `bomb`.")
]
DeviceOpt = Annotated[
    str, typer.Option(help="auto, cpu, cuda or cuda:N.", rich_help_panel=RUN_PANEL)
]
BatchSizeOpt = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Images per model batch. Default: automatic (512 on CUDA, halved on "
        "out-of-memory; 64 on CPU).",
        rich_help_panel=RUN_PANEL,
    ),
]


def positive(value: float | None) -> float | None:
    """Typer callback: a rate or an amount that must be above 0 (None: not given)."""
    if value is not None and not value > 0:
        raise typer.BadParameter(f"must be above 0, not {value:g}")
    return value


def share(value: float) -> float:
    """Typer callback: a share of rows, above 0 and at most 1."""
    if not 0 < value <= 1:
        raise typer.BadParameter(f"must be above 0 and at most 1, not {value:g}")
    return value


EngineOpt = Annotated[
    Engine,
    typer.Option(
        help="Where the stages run: `local` (worker processes on this machine) or `ray` "
        "(a Ray cluster; pip install 'mmtok\\[ray]').",
        rich_help_panel=RUN_PANEL,
    ),
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option(
        metavar="ADDR",
        help="With --engine ray: the cluster to join (e.g. ray://head:10001). Default: "
        "the cluster Ray finds, or a new one on this machine.",
        rich_help_panel=RUN_PANEL,
    ),
]
PrintRecipeOpt = Annotated[
    bool,
    typer.Option(
        "--print-recipe",
        help="Print this command line as a recipe for `mmtok run` (TOML) and exit.",
        rich_help_panel=RUN_PANEL,
    ),
]

# The options every dataset command takes after its own (inputs and -o come before them).
SHARED = [
    ("image_col", ImageColOpt, "image"),
    ("text_col", TextColOpt, "caption"),
    ("id_col", IdColOpt, None),
    ("overwrite", OverwriteOpt, False),
    ("resume", ResumeOpt, False),
    ("shard_rows", ShardRowsOpt, 50_000),
    ("shard_bytes", ShardBytesOpt, "512MB"),
    ("image_bytes", ImageBytesOpt, False),
    ("rejects", RejectsOpt, None),
    ("workers", WorkersOpt, None),
    ("row_timeout", RowTimeoutOpt, DEFAULT_ROW_TIMEOUT),
    ("engine", EngineOpt, Engine.LOCAL),
    ("ray_address", RayAddressOpt, None),
    ("quiet", QuietOpt, False),
    ("as_json", JsonOpt, False),
    ("print_recipe", PrintRecipeOpt, False),
]


def dataset_command(
    *, output_after: str | None = None, shared: dict[str, tuple[Any, Any] | None] | None = None
) -> Callable[[Callable], Callable]:
    """Declare a dataset command with only its own options: the inputs argument comes first,
    -o after `output_after` (default: right after the inputs), the shared options last. The
    command gets all of them as keyword arguments. `shared`: the shared options (or inputs)
    this command declares otherwise, name -> (annotation, default), or None to leave one out
    (sample-frames reads videos: no --image-col, and --timeout per video)."""
    changed = shared or {}

    def declared(name: str, annotation: Any, default: Any) -> list[inspect.Parameter]:
        if name in changed and changed[name] is None:
            return []
        annotation, default = changed.get(name) or (annotation, default)
        return [inspect.Parameter(name, KEYWORD, annotation=annotation, default=default)]

    def decorate(function: Callable) -> Callable:
        hints = typing.get_type_hints(function, include_extras=True)
        own = [
            p.replace(kind=KEYWORD, annotation=hints[p.name])
            for p in inspect.signature(function).parameters.values()
            if p.kind is not inspect.Parameter.VAR_KEYWORD
        ]
        at = 0 if output_after is None else [p.name for p in own].index(output_after) + 1
        params = [
            *declared("inputs", InputsArg, inspect.Parameter.empty),
            *own[:at],
            *declared("output", OutputOpt, None),
            *own[at:],
            *(p for n, a, d in SHARED for p in declared(n, a, d)),
        ]

        @functools.wraps(function)
        def command(**kwargs: Any) -> Any:
            return function(**kwargs)

        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate


def run_dataset(opts: Any, build: Any, render: Any, cli: dict[str, Any]) -> Any:
    """Flags -> options -> plan -> result document -> table or JSON: what every dataset
    command does once its flags are parsed into `opts` (`cli`: its arguments, for --quiet,
    --json and --print-recipe). `build` makes the plan (`mmtok.commands.build_plan`), `render`
    prints the document as tables."""
    if cli.get("print_recipe"):
        from mmtok import recipes

        typer.echo(recipes.dumps(recipes.from_options(opts)), nl=False)
        return None
    reporter = reporter_for(opts, cli["quiet"], cli["as_json"])
    with reporter.status("reading the inputs' columns (JSON Lines are scanned once)"):
        plan = build(opts)
    executor = Executor.for_options(opts, progress=reporter.progress, command=command_line())
    document = executor.run(plan)
    say_problems(reporter, plan.problems(), stderr_is_data=stderr_is_data(opts))
    reporter.result(document, lambda console: render(console, document))
    return document


def reporter_for(opts: Any, quiet: bool, as_json: bool) -> Reporter:
    to_stdout = opts.output == "-"
    return Reporter(
        quiet=quiet,
        as_json=as_json,
        stdout_is_data=to_stdout,
        stderr_is_data=stderr_is_data(opts),
    )


def stderr_is_data(opts: Any) -> bool:
    """With -o - and no --rejects, the rejected rows own stderr."""
    return opts.output == "-" and opts.rejects is None


def say_problems(reporter: Reporter, problems: list[str], *, stderr_is_data: bool) -> None:
    """After a run: an input that gave no usable row (wrong format, wrong column), said on
    stderr, unless stderr carries the rejected rows."""
    if problems and not stderr_is_data:
        from rich.markup import escape

        for problem in problems:
            reporter.err.print(f"[yellow]warning:[/] {escape(problem)}", highlight=False)
