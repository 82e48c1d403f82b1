"""mmtok from Python: the CLI's commands as functions, with the same names (dashes as
underscores), the same options (the flags' names, dashes as underscores) and the same result
documents as `--json`.

    import mmtok
    doc = mmtok.filter(["pairs.jsonl"], "clean/", min_side=64, lang=["en"])
    doc["counts"]  # {"in": ..., "out": ..., "rejected": ..., "rejected_by_reason": {...}}

Nothing is printed. An input that gave no usable row is a `MmtokWarning`; a bad option or
input is a `MmtokError` (one line, with a hint) raised before any data is read."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from typing import Any

from mmtok.errors import MmtokError

# The commands (and pyarrow under them) are imported when a command is called: `layout` and
# `import mmtok.api` stay light.

__all__ = [
    "MmtokError",
    "MmtokWarning",
    "dedup",
    "embed",
    "estimate_budget",
    "filter",
    "layout",
    "probe",
    "run_recipe",
    "sample_frames",
    "tile",
    "detokenize",
    "tokenize_images",
]


Paths = str | os.PathLike | Iterable[str | os.PathLike]
OutputPath = str | os.PathLike | None


class MmtokWarning(UserWarning):
    """Something the run could do but that was probably not meant (an input with no rows)."""


def run_command(command: str, inputs: Paths, output: OutputPath, **options: Any):
    """Any dataset command by its CLI name (`estimate-budget`); returns its document."""
    from mmtok.commands import options_class
    from mmtok.commands.options import known_options

    cls = options_class(command)
    known_options(cls, options, command)
    opts = cls(inputs=paths(inputs), output=_path(output), **options)
    return run_options(opts, f"mmtok.{command.replace('-', '_')}()")


def paths(inputs: Paths) -> list[str]:
    """One input or several, as strings (pathlib paths welcome)."""
    single = isinstance(inputs, str | os.PathLike)
    return [os.fspath(p) for p in ([inputs] if single else inputs)]


def _path(path: str | os.PathLike | None) -> str | None:
    return None if path is None else os.fspath(path)


def run_options(opts: Any, command_line: str) -> dict[str, Any]:
    from mmtok.commands import build_plan
    from mmtok.commands.plan import Executor

    plan = build_plan(opts)
    document = Executor.for_options(opts, command=command_line).run(plan)
    for problem in plan.problems():
        warnings.warn(problem, MmtokWarning, stacklevel=3)
    return document


def probe(inputs: Paths, output: OutputPath = None, **options: Any) -> dict[str, Any]:
    """Image headers: size, format, mode, frames, EXIF orientation (`mmtok probe`)."""
    return run_command("probe", inputs, output, **options)


def filter(inputs: Paths, output: OutputPath = None, **options: Any) -> dict[str, Any]:  # noqa: A001
    """Keep the rows that pass the rules; the rest go to rejects with a reason (`mmtok
    filter`). Rules as keywords: min_side=64, lang=["en"], caption_min_words=3, ..."""
    return run_command("filter", inputs, output, **options)


def dedup(inputs: Paths, output: OutputPath = None, **options: Any) -> dict[str, Any]:
    """Drop exact and near-duplicate images, captions or pairs (`mmtok dedup`): by="pair",
    keep="first", against=["eval.jsonl"], ..."""
    return run_command("dedup", inputs, output, **options)


def tile(inputs: Paths, preset: str, output: OutputPath = None, **options: Any) -> dict[str, Any]:
    """Each image's layout (and with emit="tiles" its pixels) under a preset (`mmtok tile`)."""
    return run_command("tile", inputs, output, preset=preset, **options)


def estimate_budget(
    inputs: Paths, preset: str | list[str], output: OutputPath = None, **options: Any
) -> dict[str, Any]:
    """Vision tokens, text tokens and bytes per token under each preset (`mmtok
    estimate-budget`): context=8192, sample=10000, target_tokens=1e12, ..."""
    presets = [preset] if isinstance(preset, str) else list(preset)
    return run_command("estimate-budget", inputs, output, preset=presets, **options)


def embed(inputs: Paths, model: str, output: OutputPath = None, **options: Any) -> dict[str, Any]:
    """CLIP/SigLIP embeddings (`mmtok embed`): checkpoint=..., pretrained_tag=..., text=True."""
    return run_command("embed", inputs, output, model=model, **options)


def tokenize_images(
    inputs: Paths, checkpoint: str | os.PathLike, output: OutputPath = None, **options: Any
) -> dict[str, Any]:
    """Discrete VQ token ids per image (`mmtok tokenize-images`): tokenizer="chameleon" (or
    config="vq.json"), device=..., precision="fp32", emit="bin", boi=..., eoi=..."""
    return run_command("tokenize-images", inputs, output, checkpoint=_path(checkpoint), **options)


def detokenize(
    inputs: Paths, checkpoint: str | os.PathLike, output: OutputPath = None, **options: Any
) -> dict[str, Any]:
    """VQ ids (a tokenize-images output) back into images, with their PSNR (`mmtok
    detokenize`): tokenizer="chameleon" (or config="vq.json"), device=..."""
    return run_command("detokenize", inputs, output, checkpoint=_path(checkpoint), **options)


def sample_frames(inputs: Paths, output: OutputPath = None, **options: Any) -> dict[str, Any]:
    """Videos in, one image row per sampled frame out (`mmtok sample-frames`): num_frames=16,
    fps=2.0, segments=8, timestamps=[0.5, 1.0], preset="qwen2-vl", video_col="video", ..."""
    return run_command("sample-frames", inputs, output, **options)


def layout(
    preset: str, width: int, height: int, *, preset_file: str | None = None
) -> dict[str, Any]:
    """What a model does with an image of this size: the object `mmtok layout` prints for it
    (resized, canvas, grid, tiles, tokens, pixel bytes; {width, height, error} if refused)."""
    from mmtok.presets import get_preset, load_preset_file

    if preset_file:
        load_preset_file(preset_file)
    return layout_record(get_preset(preset), width, height)


def layout_record(chosen: Any, width: int, height: int) -> dict[str, Any]:
    """One line of `mmtok layout`: the preset's layout, or {width, height, error}."""
    from mmtok.presets import Refused

    result = chosen.layout(width, height)
    if isinstance(result, Refused):
        return result.to_dict()
    return {"preset": chosen.name, **result.to_dict()}


def run_recipe(
    recipe: str | os.PathLike | dict[str, Any],
    *,
    inputs: Paths | None = None,
    output: OutputPath = None,
    **options: Any,
) -> dict[str, Any]:
    """A recipe (a TOML file, or its contents as a dict) from its sources to its output
    (`mmtok run`); `inputs`, `output` and shared options override the recipe's."""
    from mmtok import recipes

    loaded = recipes.load(recipe)
    if inputs is not None:
        options["inputs"] = paths(inputs)
    if output is not None:
        options["output"] = os.fspath(output)
    document, problems = recipes.run(
        recipes.override(loaded, options), command="mmtok.run_recipe()"
    )
    for problem in problems:
        warnings.warn(problem, MmtokWarning, stacklevel=2)
    return document
