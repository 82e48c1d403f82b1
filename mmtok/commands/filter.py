"""`filter`: keep the rows that pass stated rules; every dropped row says why."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mmtok.errors import MmtokError

from .options import DatasetOptions, same_fields
from .plan import Part


@dataclass(kw_only=True)
class FilterOptions(DatasetOptions):
    recipe: str | None = None  # a TOML file of rules (the flags override it)
    dry_run: bool = False
    min_side: int | None = None
    max_side: int | None = None
    min_pixels: int | None = None
    max_pixels: int | None = None
    max_aspect: float | None = None
    min_bytes: int | None = None
    max_bytes: int | None = None
    formats: str | list[str] | None = None
    decode_check: bool | None = None
    preset: str | None = None
    preset_file: str | None = None
    min_tokens: int | None = None
    max_tokens: int | None = None
    require_caption: bool | None = None
    caption_min_words: int | None = None
    caption_max_words: int | None = None
    caption_min_chars: int | None = None
    lang: str | list[str] | None = None
    lang_confidence: float | None = None
    drop_mojibake: bool | None = None
    min_clip_score: float | None = None
    # the model that computes clip_score (else the input's clip_score column is read)
    model: str | None = None
    checkpoint: str | None = None
    pretrained_tag: str | None = None
    preprocess: str | None = None
    device: str = "auto"
    batch_size: int | None = None


def part(opts: FilterOptions) -> Part:
    """The rules, checked before any row is read; raises when none is given."""
    from mmtok.filters import FilterRules, load_recipe
    from mmtok.presets import load_preset_file
    from mmtok.stages.filter import ClipModelOptions, filter_stages

    flags = {name: getattr(opts, name) for name in FilterRules.names() if name != "recipe"}
    recipe_values = load_recipe(opts.recipe) if opts.recipe else {}
    if opts.preset_file:
        load_preset_file(opts.preset_file)
    rules = FilterRules.build(recipe_values, flags)
    if not rules.active():
        raise MmtokError(
            "no rule given: every row would be kept",
            hint="e.g. --min-side 64, --caption-min-words 3, or --recipe filter.toml",
        )
    if opts.dry_run:
        if opts.resume:
            raise MmtokError("--dry-run writes nothing, so there is nothing to resume")
    elif opts.output is None:
        raise MmtokError("give -o DIR (or -o - for JSON Lines), or --dry-run to only count")
    clip = None
    if opts.model:
        clip = same_fields(ClipModelOptions, opts)
    stages, batch_rows, check_inputs = filter_stages(rules, clip)

    def document(manifest: dict[str, Any], out: Any) -> dict[str, Any]:
        counts = manifest["counts"]
        return {
            "output": out.path if out else None,
            "dry_run": opts.dry_run,
            "recipe": opts.recipe,
            "rules": rules.active(),
            "counts": counts,
            "kept_share": counts["out"] / counts["in"] if counts["in"] else None,
            "timing": manifest.get("timing"),
        }

    return Part(
        "filter",
        "filtering",
        stages,
        document,
        batch_rows=batch_rows,
        check=check_inputs,
        writes=not opts.dry_run,
    )
