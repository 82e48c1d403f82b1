"""Recipes: several commands' steps from the same sources into one output (`mmtok run`).

    inputs = ["pairs.jsonl"]
    output = "clean/"

    [[steps]]
    command = "filter"
    min_side = 64

    [[steps]]
    command = "dedup"
    by = "pair"

    [[steps]]
    command = "estimate-budget"
    preset = ["qwen2-vl"]

Keys are the commands' flags without `--` (dashes or underscores), taken from the commands'
options dataclasses: the shared ones (inputs, output, image_col, workers, ...) at the top, each
command's own in its step. `mmtok <command> ... --print-recipe` prints the recipe of a command
line. Every key and value is checked, and every step built, before any data is read.

The steps run in one pass over the inputs: each step's stages after the previous step's. A
dedup step needs its global step, so a recipe with one runs two passes: the signatures of the
rows the steps before it keep, the clustering, then one pass through all the steps, in which
the rows the clustering drops go to rejects with reason `duplicate`.

sample-frames reads videos, so it is the first step (the steps after it see its frames). A
step that runs a model (embed, tokenize-images, detokenize, filter with `model`) runs it last
in the pass, in this process: it is the last step, or the last before dedup (whose signatures
and drop list need nothing from the model, so they run before it), and the only one."""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
import types
import typing
from typing import Any

from mmtok.commands import COMMANDS, command_of, module, options_class
from mmtok.commands.options import DatasetOptions, OptionError, check, check_engine, hints
from mmtok.errors import MmtokError


class RecipeError(OptionError):
    """A recipe that cannot run: a bad key, value or step, said before any data is read."""


@dataclasses.dataclass
class Recipe:
    """The shared options (top-level keys) and each step's own options, as written."""

    shared: dict[str, Any]
    steps: list[dict[str, Any]]  # each with "command"
    source: str = "recipe"  # the file, for messages

    def to_dict(self) -> dict[str, Any]:
        return {**self.shared, "steps": [dict(s) for s in self.steps]}

    def options(self) -> list[Any]:
        """Each step's options object (shared + own), every key and value checked."""
        result = []
        for number, step in enumerate(self.steps, 1):
            command = step.get("command")
            where = f"{self.source}: step {number}" + (f" ({command})" if command else "")
            if command not in COMMANDS:
                raise RecipeError(
                    f"{where}: command = {command!r} is not a dataset command",
                    hint="one of " + ", ".join(COMMANDS),
                )
            cls = options_class(command)
            own = {k: v for k, v in step.items() if k != "command"}
            for key in own:
                if key not in cls.own():
                    shared = key in DatasetOptions.shared()
                    raise RecipeError(
                        f"{where}: {command} has no key {key!r}"
                        + (" in a step (it is a top-level key)" if shared else ""),
                        hint=None if shared else "keys: " + ", ".join(cls.own()),
                    )
            values = {**self.shared, **own}
            try:
                opts = cls(**{k: _coerce(cls, k, v) for k, v in values.items()})
                check(opts)
            except TypeError as e:  # a required key left out (`preset` of tile)
                missing = str(e).rsplit(":", 1)[-1].strip()
                raise RecipeError(f"{where}: {command} needs {missing}") from None
            except MmtokError as e:
                raise RecipeError(f"{where}: {e}", hint=e.hint) from None
            result.append(opts)
        return result


def _coerce(cls: type, key: str, value: Any) -> Any:
    """A string where only a list will do becomes a list of one (preset = "qwen2-vl")."""
    kind = hints(cls).get(key)
    kinds = typing.get_args(kind) if typing.get_origin(kind) is types.UnionType else (kind,)
    wants_list = any(typing.get_origin(k) is list for k in kinds) and str not in kinds
    return [value] if isinstance(value, str) and wants_list else value


def _keys(table: dict[str, Any]) -> dict[str, Any]:
    return {k.replace("-", "_"): v for k, v in table.items()}


def load(recipe: str | dict[str, Any] | Recipe) -> Recipe:
    """A recipe from a TOML file or a dict; its top-level keys checked (steps: `options`)."""
    if isinstance(recipe, Recipe):
        return recipe
    source = "recipe"
    if not isinstance(recipe, dict):
        source = os.fspath(recipe)
        try:
            with open(source, "rb") as f:
                recipe = tomllib.load(f)
        except FileNotFoundError:
            raise RecipeError(f"no such recipe file: {source}") from None
        except tomllib.TOMLDecodeError as e:
            raise RecipeError(f"{source} is not valid TOML: {e}") from None
    top = _keys(recipe)
    steps = top.pop("steps", None)
    if not isinstance(steps, list) or not steps or not all(isinstance(s, dict) for s in steps):
        raise RecipeError(
            f"{source}: no steps", hint='add [[steps]] tables, each with command = "filter" ...'
        )
    for key in top:
        if key not in DatasetOptions.shared():
            raise RecipeError(
                f"{source}: unknown top-level key {key!r}",
                hint="top-level keys: " + ", ".join(DatasetOptions.shared()) + ", steps",
            )
    if "inputs" in top and isinstance(top["inputs"], str):
        top["inputs"] = [top["inputs"]]
    return Recipe(top, [_keys(s) for s in steps], source)


def override(recipe: Recipe, shared: dict[str, Any]) -> Recipe:
    """The recipe with these shared options replaced (the command line's -o, inputs, ...)."""
    return dataclasses.replace(recipe, shared={**recipe.shared, **_keys(shared)})


def from_options(opts: Any) -> dict[str, Any]:
    """The recipe of one command's options: what differs from the defaults."""
    shared = set(DatasetOptions.shared())
    top: dict[str, Any] = {}
    step: dict[str, Any] = {"command": command_of(opts)}
    for f in dataclasses.fields(opts):
        value = getattr(opts, f.name)
        if f.name not in ("inputs",) and value == _default(f):
            continue
        (top if f.name in shared else step)[f.name] = value
    return {**top, "steps": [step]}


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def dumps(recipe: dict[str, Any]) -> str:
    """A recipe as TOML (top-level keys, then one [[steps]] table per step)."""
    lines = [f"{k} = {_toml(v)}" for k, v in recipe.items() if k != "steps" and v is not None]
    for step in recipe.get("steps", []):
        lines += ["", "[[steps]]"]
        lines += [f"{k} = {_toml(v)}" for k, v in step.items() if v is not None]
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)  # a TOML basic string


def plan(recipe: Recipe) -> Any:
    """The plan of a recipe: every step's options checked and its stages built first."""
    steps = recipe.options()
    check_engine(steps[0])
    return _chained_plan(recipe, steps)


def _chained_plan(recipe: Recipe, steps: list[Any]) -> Any:
    """Each step's part built (its model loaded), then chained; what a built part holds (a
    temporary folder) is cleaned up if a later one fails."""
    commands = [command_of(s) for s in steps]
    _check_order(recipe.source, commands, steps)
    where = recipe.source
    parts: list[Any] = []
    cleanups: list[Any] = []
    try:
        for number, (command, opts) in enumerate(zip(commands, steps, strict=True), 1):
            if command == "dedup":
                parts.append(None)
                continue
            try:
                parts.append(module(command).part(opts))
            except MmtokError as e:
                raise RecipeError(f"{where}: step {number} ({command}): {e}", hint=e.hint) from None
            if parts[-1].cleanup:
                cleanups.append(parts[-1].cleanup)
        return _chained_parts(recipe, steps, commands, parts, cleanups)
    except BaseException:
        for cleanup in cleanups:
            cleanup()
        raise


def _check_order(where: str, commands: list[str], steps: list[Any]) -> None:
    """Which steps can follow which, said before any step is built (a model is loaded)."""
    if commands.count("dedup") > 1:
        raise RecipeError(f"{where}: a recipe holds at most one dedup step")
    if "sample-frames" in commands[1:]:  # it reads videos; the steps after it see frames
        raise RecipeError(f"{where}: sample-frames reads videos: make it the first step")
    models = [i for i, (c, s) in enumerate(zip(commands, steps, strict=True)) if _model(c, s)]
    # a model runs last in a pass, in this process, over the workers' rows; a dedup step may
    # follow it (the signatures and the drop list need no model output, so they run before it)
    after = [c for c in commands[models[0] + 1 :] if c != "dedup"] if models else []
    if len(models) > 1 or after:
        named = commands[models[0]] + (" --model" if commands[models[0]] == "filter" else "")
        raise RecipeError(
            f"{where}: {named} runs a model over the rows: make it the last step "
            "(or the last before dedup), with no other model step"
        )


def _model(command: str, opts: Any) -> bool:
    """Whether a step runs a model (a device stage, the last of its pass)."""
    return command in ("embed", "tokenize-images", "detokenize") or (
        command == "filter" and opts.model is not None
    )


def _device_last(stages: list[Any]) -> list[Any]:
    """A pass's stages with its model stage (if any) moved last, where the engine runs it."""
    device = [s for s in stages if hasattr(s, "run_stream")]
    return [s for s in stages if s not in device] + device


def _chained_parts(
    recipe: Recipe, steps: list[Any], commands: list[str], parts: list[Any], cleanups: list[Any]
) -> Any:
    from mmtok.commands.dedup import DedupInRecipe
    from mmtok.commands.plan import GlobalStep, Pass, Plan, build_inputs, build_output
    from mmtok.engine.pipeline import check_output, publish_output

    where = recipe.source
    built = [p for p in parts if p is not None]
    if sum(p.wrap is not None for p in built) > 1 or (
        "dedup" in commands and any(p.wrap for p in built)
    ):
        raise RecipeError(
            f"{where}: estimate-budget's sample reads a sample of the inputs: it goes in a "
            "recipe without dedup, and once"
        )
    shared = steps[0]
    writes = all(p.writes for p in built)
    out = build_output(shared if writes else dataclasses.replace(shared, output=None))
    inputs = build_inputs(
        shared,
        min((p.batch_rows for p in built), default=256),
        videos=any(p.videos for p in built),
        image_col=built[0].image_col if built else None,  # sample-frames: its video_col
    )
    wrap = next((p.wrap for p in built if p.wrap), None)
    shard_stats = next((p.shard_stats for p in built if p.shard_stats), None)
    written: dict[str, Any] = {}
    plan_steps: list[Any] = []
    writing_stages: list[Any] = []
    dedup_part: Any = None
    if "dedup" in commands:
        k = commands.index("dedup")
        dedup_part = DedupInRecipe(steps[k], out, inputs, [s for p in parts[:k] for s in p.stages])
        check_output(out, inputs, steps[k].against or [])
        plan_steps += dedup_part.steps()
        writing_stages = _device_last(
            [
                *(s for p in parts[:k] for s in p.stages),
                dedup_part.stage,
                *(s for p in parts[k + 1 :] for s in p.stages),
            ]
        )
    else:
        writing_stages = [s for p in built for s in p.stages]
    hold = out is not None and not out.to_stdout
    writing = Pass(
        ", ".join(p.description for p in built) or "writing",
        inputs,
        (lambda: [s() if callable(s) else s for s in writing_stages]),
        out,
        [o for p in built for o in p.observers],
        shard_stats=shard_stats,
        wrap=wrap,
        hold=hold,
    )
    plan_steps.append(writing)
    documents: list[dict[str, Any]] = []

    def finish() -> None:
        manifest = writing.manifest or {}
        side: dict[str, Any] = {}
        for command, part in zip(commands, parts, strict=True):
            if part is None:
                doc = dedup_part.document(manifest)
                side.update(dedup_part.side_outputs())
            else:
                doc = part.document(manifest, out)
                if part.side_outputs is not None and hold:
                    side.update(part.side_outputs(doc))
            documents.append({"command": command, **doc})
        if hold:
            manifest["recipe"] = recipe.to_dict()  # the held manifest is published as it is
            publish_output(out, side)
            if dedup_part is not None:
                dedup_part.cleanup()
        written.update(
            {
                "output": out.path if out else None,
                "recipe": recipe.to_dict(),
                "counts": manifest.get("counts"),
                "timing": manifest.get("timing"),
                "steps": documents,
            }
        )

    plan_steps.append(GlobalStep("summarising", finish))
    checks = [p.check for p in built if p.check is not None]
    if checks:  # before any pass reads a row (filter --min-clip-score: a clip_score column)
        plan_steps.insert(0, GlobalStep("checking inputs", lambda: [c(inputs) for c in checks]))
    setups = [p.setup for p in built if p.setup is not None]  # a temporary folder, made on run
    return Plan(
        "run",
        shared,
        plan_steps,
        lambda: written,
        inputs=[inputs],
        setups=setups,
        cleanups=cleanups,
    )


def run(recipe: Recipe, progress: Any = None, command: str = "mmtok run") -> Any:
    """Run a recipe; returns (document, problems with the inputs)."""
    from mmtok.commands.plan import Executor, no_progress

    built = plan(recipe)
    executor = Executor.for_options(
        built.options, progress=progress or no_progress, command=command
    )
    return executor.run(built), built.problems()
