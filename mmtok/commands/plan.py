"""A command as a plan: passes (stages over a source, into a sink or observers only) and global
steps between them (dedup's clustering, budget's summaries), run in order by an executor.

A plan never reads flags and never prints: progress goes to the callbacks the caller gives
(`progress`), and the result is the command's document, the same for the CLI (`--json`), the
Python API and recipes."""

from __future__ import annotations

import dataclasses
import inspect
import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

from mmtok.engine.local import default_workers
from mmtok.engine.pipeline import Observer, OutputOptions, run_pipeline
from mmtok.engine.stage import Stage
from mmtok.errors import MmtokError
from mmtok.io.encoding import is_valid_text
from mmtok.io.sources import Inputs, ReadOptions

from .options import DatasetOptions, parse_size

OnStart = Callable[[int | None, int], None]
OnProgress = Callable[[int, int], None]
Progress = Callable[[str], AbstractContextManager[tuple[OnStart, OnProgress]]]


@contextmanager
def no_progress(description: str) -> Iterator[tuple[OnStart, OnProgress]]:
    yield (lambda total, done: None), (lambda done, rejected: None)


@dataclass
class Pass:
    """Stages over a source into `output` (None: observers only). `stages` may be a function,
    called when the pass starts (the writing pass of dedup needs the clusters first)."""

    description: str
    source: Any  # Inputs, or a view of them (a random sample)
    stages: list[Stage] | Callable[[], list[Stage]]
    output: OutputOptions | None = None
    observers: list[Observer] = field(default_factory=list)
    workers: int | None = None  # None: the plan's
    shard_stats: Any = None
    wrap: Callable[[Any], Any] | None = None  # a view of the source made when the pass starts
    hold: bool = False  # a global step adds side outputs and publishes (`publish_output`)
    skip: Callable[[], bool] | None = None  # True: its result is already there (a resume)
    manifest: dict[str, Any] | None = None  # once run


@dataclass
class GlobalStep:
    """Work over what the passes before it gathered, in this process."""

    description: str
    run: Callable[[], None]


@dataclass
class Plan:
    """The steps of one command and how to turn them into its result document."""

    command: str  # the subcommand's name: filter, dedup, ...
    options: DatasetOptions
    steps: list[Pass | GlobalStep]
    document: Callable[[], dict[str, Any]]
    inputs: list[Inputs] = field(default_factory=list)  # whose problems are said after the run
    seconds: dict[str, float] = field(default_factory=dict)  # per step, by description
    # run when the plan starts running, before its first step (temporary folders its stages
    # share: a plan built but never run leaves nothing behind)
    setups: list[Callable[[], None]] = field(default_factory=list)
    # run when the plan ends, however it ends (even when a setup failed: then they have less,
    # or nothing, to remove)
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    def problems(self) -> list[str]:
        """Inputs that gave no usable row (wrong format, wrong column), once the plan ran."""
        return [p for inputs in self.inputs for p in inputs.problems()]


@dataclass
class Executor:
    """Runs plans: each pass through `run_pipeline` on the chosen engine, each global step in
    this process. `command`: the command line the manifest records."""

    engine: str = "local"
    ray_address: str | None = None
    progress: Progress = no_progress
    command: str = ""
    workers: int | None = None
    row_timeout: float | None = None

    @classmethod
    def for_options(cls, opts: DatasetOptions, **kwargs: Any) -> Executor:
        return cls(
            engine=opts.engine,
            ray_address=opts.ray_address,
            workers=opts.workers,
            row_timeout=opts.row_timeout,
            **kwargs,
        )

    def run(self, plan: Plan) -> dict[str, Any]:
        """Every step in order; returns the plan's document."""
        try:
            for setup in plan.setups:
                setup()
            for step in plan.steps:
                t0 = time.monotonic()
                if isinstance(step, GlobalStep):
                    step.run()
                elif step.skip is None or not step.skip():
                    step.manifest = self.run_pass(step)
                plan.seconds[step.description] = time.monotonic() - t0
        finally:
            for cleanup in plan.cleanups:
                cleanup()
        return plan.document()

    def run_pass(self, step: Pass) -> dict[str, Any]:
        stages = step.stages() if callable(step.stages) else step.stages
        if step.wrap is not None:  # e.g. a random sample (which counts the rows first)
            step.source, step.wrap = step.wrap(step.source), None
        with self.progress(step.description) as (on_start, on_progress):
            return run_pipeline(
                step.source,
                stages,
                step.output,
                workers=step.workers or self.workers,
                command=self.command,
                on_start=on_start,
                on_progress=on_progress,
                observers=step.observers,
                shard_stats=step.shard_stats,
                row_timeout=self.row_timeout,
                hold=step.hold,
                **self._engine(),
            )

    def _engine(self) -> dict[str, Any]:
        """engine= and ray_address= for `run_pipeline`, given only when not the local default
        (the local engine's `run_pipeline` may not take them)."""
        if self.engine == "local" and self.ray_address is None:
            return {}
        if "engine" not in inspect.signature(run_pipeline).parameters:
            raise MmtokError(f"this mmtok has no {self.engine} engine", hint="leave out --engine")
        return {"engine": self.engine, "ray_address": self.ray_address}


def build_inputs(
    opts: DatasetOptions,
    batch_rows: int = 256,
    paths: list[str] | None = None,
    *,
    videos: bool = False,
    image_col: str | None = None,
):
    """The command's inputs (or `paths` read the same way: dedup's references). `videos`:
    video files are input rows too; `image_col`: the media column, when not the options'."""
    read = ReadOptions(
        image_col=image_col or opts.image_col,
        text_col=opts.text_col,
        id_col=opts.id_col,
        batch_rows=batch_rows,
        videos=videos,
    )
    workers = opts.workers or default_workers()  # the scan of big JSON Lines files uses them
    return Inputs(opts.inputs if paths is None else paths, read, workers)


def build_output(opts: DatasetOptions) -> OutputOptions | None:
    """The output the options name, refused before any work when the flags do not fit it."""
    path = opts.output
    if path is None:
        if opts.resume or opts.overwrite:
            raise MmtokError("--resume and --overwrite need an output folder (-o)")
        return None
    if not is_valid_text(path):  # pyarrow takes paths as UTF-8 text only
        raise MmtokError(
            f"the output folder's name is not UTF-8: {os.fsencode(path)!r}",
            hint="name the output folder in UTF-8 (inputs may have any name)",
        )
    if path == "-" and opts.resume:
        raise MmtokError("--resume needs an output folder; stdout cannot be resumed")
    if path != "-" and opts.rejects:
        raise MmtokError(
            "--rejects applies to -o - only",
            hint="a dataset folder keeps its rejects in __mmtok__/rejects.parquet",
        )
    return OutputOptions(
        path,
        overwrite=opts.overwrite,
        resume=opts.resume,
        shard_rows=opts.shard_rows,
        shard_bytes=parse_size(opts.shard_bytes),
        include_bytes=opts.image_bytes,
        rejects_path=opts.rejects,
    )


@dataclass
class Part:
    """One command's share of a data pass: its stages, the observers that summarise the rows
    it keeps, and how to make its result document from the pass's manifest. A command of one
    pass is a plan of one part (`one_pass_plan`); a recipe chains the parts of its steps."""

    command: str
    description: str  # for the progress bar: "filtering"
    stages: list[Stage]
    document: Callable[[dict[str, Any], OutputOptions | None], dict[str, Any]]
    observers: list[Observer] = field(default_factory=list)
    batch_rows: int = 256  # rows per unit of work: fewer for stages that make large rows
    wrap: Callable[[Any], Any] | None = None  # a view of the inputs (estimate-budget --sample)
    # a check of the inputs before any row is read (filter --min-clip-score: a clip_score column)
    check: Callable[[Any], None] | None = None
    shard_stats: Any = None
    # files or folders published in __mmtok__/ with the output, from the document
    side_outputs: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    writes: bool = True  # False: a dry run, whatever the output options say
    videos: bool = False  # video files are input rows too (estimate-budget)
    image_col: str | None = None  # the inputs' media column, when not image_col (video_col)
    setup: Callable[[], None] | None = None  # when the plan starts running (see Plan.setups)
    cleanup: Callable[[], None] | None = None  # when the plan ends, however it ends


def one_pass_plan(opts: DatasetOptions, part: Part) -> Plan:
    """Inputs -> the part's stages -> output; then its document and side outputs."""
    from mmtok.engine.pipeline import publish_output

    try:
        out = build_output(opts if part.writes else dataclasses.replace(opts, output=None))
        inputs = build_inputs(opts, part.batch_rows, videos=part.videos, image_col=part.image_col)
    except BaseException:
        if part.cleanup:
            part.cleanup()
        raise
    hold = part.side_outputs is not None
    data = Pass(
        part.description,
        inputs,
        part.stages,
        out,
        part.observers,
        shard_stats=part.shard_stats,
        wrap=_checked(part.check, part.wrap),
        hold=hold,
    )
    result: dict[str, Any] = {}

    def finish() -> None:
        result.update(part.document(data.manifest or {}, out))
        if hold:
            publish_output(out, part.side_outputs(result))

    steps: list[Pass | GlobalStep] = [data, GlobalStep("summarising", finish)]
    setups = [part.setup] if part.setup else []
    cleanups = [part.cleanup] if part.cleanup else []
    return Plan(
        part.command,
        opts,
        steps,
        lambda: result,
        inputs=[inputs],
        setups=setups,
        cleanups=cleanups,
    )


def _checked(
    check: Callable[[Any], None] | None, wrap: Callable[[Any], Any] | None
) -> Callable[[Any], Any] | None:
    """The inputs checked, then wrapped, when the pass starts."""
    if check is None:
        return wrap

    def checked(inputs: Any) -> Any:
        check(inputs)
        return wrap(inputs) if wrap else inputs

    return checked
