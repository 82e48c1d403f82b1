"""Option types shared by every command, so flags mean the same thing everywhere."""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.markup import escape

from mmtok.cli.output import Reporter
from mmtok.engine.local import DEFAULT_ROW_TIMEOUT as DEFAULT_ROW_TIMEOUT  # the commands use it
from mmtok.engine.pipeline import Observer, OutputOptions, command_line, run_pipeline
from mmtok.engine.stage import Stage
from mmtok.errors import MmtokError
from mmtok.io.output_guard import real
from mmtok.io.sink import ShardStats
from mmtok.io.sources import Inputs, ReadOptions

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

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    match = _SIZE.match(text)
    if not match:
        raise MmtokError(f"not a size: {text!r}", hint="write e.g. 512MB or 2GB")
    scale = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[match.group(2).upper()]
    size = int(float(match.group(1)) * scale)
    if size < 1:
        raise MmtokError(f"a size must be at least 1 byte, not {text!r}", hint="e.g. 512MB")
    return size


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


def require_module(module: str, extra: str, flag: str) -> None:
    """Fail before any work when `flag` needs an optional dependency that is not installed."""
    try:
        importlib.import_module(module)
    except ImportError:
        raise MmtokError(
            f"{flag} needs {module}, which is not installed",
            hint=f"pip install 'mmtok[{extra}]'",
        ) from None


def writable_file(path: str, flag: str, output: str | None = None) -> None:
    """Fail before any work when the file that `flag` writes at the end cannot be created: its
    folder must exist, or be one the run creates for `output` (-o out/x creates out/)."""
    folder = os.path.dirname(os.path.abspath(path))
    made = output not in (None, "-") and (
        os.path.commonpath([folder, os.path.abspath(output)]) == folder
    )
    if output not in (None, "-") and real(path).is_relative_to(real(output)):
        # the output folder is published whole, with a manifest of what it holds
        raise MmtokError(
            f"{flag} {path} is inside the output folder {output}",
            hint="write it beside the output folder",
        )
    if os.path.isdir(path):
        raise MmtokError(f"{flag} {path} is a folder", hint="give a file path")
    if not os.path.isdir(folder) and not made:
        raise MmtokError(
            f"{flag} {path}: the folder {folder} does not exist", hint="create it first"
        )
    if os.path.isdir(folder) and not os.access(folder, os.W_OK):
        raise MmtokError(
            f"{flag} {path}: cannot write in {folder}", hint="choose a folder you can write to"
        )


def build_inputs(
    paths: list[str],
    image_col: str,
    text_col: str,
    id_col: str | None,
    batch_rows: int = 256,
    videos: bool = False,
) -> Inputs:
    options = ReadOptions(
        image_col=image_col, text_col=text_col, id_col=id_col, batch_rows=batch_rows, videos=videos
    )
    return Inputs(paths, options)


def build_output(
    path: str | None,
    *,
    overwrite: bool,
    resume: bool,
    shard_rows: int,
    shard_bytes: str,
    image_bytes: bool,
    rejects: str | None,
) -> OutputOptions | None:
    if path is None:
        if resume or overwrite:
            raise MmtokError("--resume and --overwrite need an output folder (-o)")
        return None
    if path == "-" and resume:
        raise MmtokError("--resume needs an output folder; stdout cannot be resumed")
    if path != "-" and rejects:
        raise MmtokError(
            "--rejects applies to -o - only",
            hint="a dataset folder keeps its rejects in __mmtok__/rejects.parquet",
        )
    return OutputOptions(
        path,
        overwrite=overwrite,
        resume=resume,
        shard_rows=shard_rows,
        shard_bytes=parse_size(shard_bytes),
        include_bytes=image_bytes,
        rejects_path=rejects,
    )


@dataclass
class DatasetOptions:
    """The options every dataset command shares, as the command received them."""

    inputs: list[str]
    output: str | None
    image_col: str
    text_col: str
    id_col: str | None
    overwrite: bool
    resume: bool
    shard_rows: int
    shard_bytes: str
    image_bytes: bool
    rejects: str | None
    workers: int | None
    quiet: bool
    as_json: bool
    row_timeout: float

    @classmethod
    def pick(cls, arguments: dict[str, Any]) -> DatasetOptions:
        """The shared options out of a command's arguments (pass `locals()` first thing)."""
        return cls(**{name: arguments[name] for name in cls.__dataclass_fields__})


def run_dataset(
    opts: DatasetOptions,
    stages: list[Stage],
    description: str,
    observers: list[Observer],
    *,
    batch_rows: int = 256,
    wrap_inputs: Callable[[Inputs], Any] | None = None,
    shard_stats: ShardStats | None = None,
    hold: bool = False,
    videos: bool = False,
) -> tuple[dict[str, Any], OutputOptions | None, Reporter]:
    """Inputs -> stages -> output with a progress bar; returns (manifest, output, reporter).

    `batch_rows`: rows per unit of work; stages that make large rows (pixels) pass fewer, as
    memory in flight is about 2 x workers x batch_rows rows. `hold`: the caller adds side
    outputs and publishes the folder with `publish_output` (see `run_pipeline`). `videos`:
    video files are input rows too (sample-frames, estimate-budget)."""
    out = build_output(
        opts.output,
        overwrite=opts.overwrite,
        resume=opts.resume,
        shard_rows=opts.shard_rows,
        shard_bytes=opts.shard_bytes,
        image_bytes=opts.image_bytes,
        rejects=opts.rejects,
    )
    to_stdout = out is not None and out.to_stdout
    reporter = Reporter(
        quiet=opts.quiet,
        as_json=opts.as_json,
        stdout_is_data=to_stdout,
        stderr_is_data=to_stdout and opts.rejects is None,
    )
    inputs = build_inputs(
        opts.inputs, opts.image_col, opts.text_col, opts.id_col, batch_rows, videos
    )
    source = inputs if wrap_inputs is None else wrap_inputs(inputs)  # e.g. a random sample
    with reporter.progress(description) as (on_start, on_progress):
        manifest = run_pipeline(
            source,
            stages,
            out,
            workers=opts.workers,
            command=command_line(),
            on_start=on_start,
            on_progress=on_progress,
            observers=observers,
            shard_stats=shard_stats,
            row_timeout=opts.row_timeout,
            hold=hold,
        )
    warn_about_inputs(reporter, inputs, stderr_is_data=to_stdout and opts.rejects is None)
    return manifest, out, reporter


def warn_about_inputs(reporter: Reporter, inputs: Inputs, *, stderr_is_data: bool) -> None:
    """After a run: an input that gave no usable row (wrong format, wrong column), said on
    stderr, unless stderr carries the rejected rows."""
    if not stderr_is_data:
        for problem in inputs.problems():
            reporter.err.print(f"[yellow]warning:[/] {escape(problem)}", highlight=False)
