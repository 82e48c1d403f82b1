"""Option types shared by every command, so flags mean the same thing everywhere."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from mmtok.cli.output import Reporter
from mmtok.engine.pipeline import Observer, OutputOptions, command_line, run_pipeline
from mmtok.engine.stage import Stage
from mmtok.errors import MmtokError
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
        help="Output dataset folder, or - for JSON Lines on stdout.",
        rich_help_panel=IO_PANEL,
    ),
]
ImageColOpt = Annotated[
    str, typer.Option(help="Column with the image path or bytes.", rich_help_panel=IO_PANEL)
]
TextColOpt = Annotated[str, typer.Option(help="Column with the caption.", rich_help_panel=IO_PANEL)]
IdColOpt = Annotated[
    str | None,
    typer.Option(
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
        help="Target in-memory size per output shard (e.g. 512MB, 2GB).", rich_help_panel=IO_PANEL
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
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="Print nothing but errors.", rich_help_panel=RUN_PANEL)
]
JsonOpt = Annotated[
    bool,
    typer.Option(
        "--json", help="Print the summary as one JSON document.", rich_help_panel=RUN_PANEL
    ),
]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    match = _SIZE.match(text)
    if not match:
        raise MmtokError(f"not a size: {text!r}", hint="write e.g. 512MB or 2GB")
    scale = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[match.group(2).upper()]
    return int(float(match.group(1)) * scale)


def build_inputs(
    paths: list[str], image_col: str, text_col: str, id_col: str | None, batch_rows: int = 256
) -> Inputs:
    options = ReadOptions(
        image_col=image_col, text_col=text_col, id_col=id_col, batch_rows=batch_rows
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
) -> tuple[dict[str, Any], OutputOptions | None, Reporter]:
    """Inputs -> stages -> output with a progress bar; returns (manifest, output, reporter).

    `batch_rows`: rows per unit of work; stages that make large rows (pixels) pass fewer, as
    memory in flight is about 2 x workers x batch_rows rows. `hold`: the caller adds side
    outputs and publishes the folder with `publish_output` (see `run_pipeline`)."""
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
    source = build_inputs(opts.inputs, opts.image_col, opts.text_col, opts.id_col, batch_rows)
    if wrap_inputs is not None:  # e.g. a random sample of the rows
        source = wrap_inputs(source)
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
            hold=hold,
        )
    return manifest, out, reporter
