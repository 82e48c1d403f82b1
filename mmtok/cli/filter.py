"""`mmtok filter`: keep the rows that pass stated rules; every dropped row says why."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from mmtok.cli import options as o
from mmtok.cli.output import handle_errors
from mmtok.cli.presets import PresetFileOpt
from mmtok.commands import build_plan
from mmtok.commands.filter import FilterOptions
from mmtok.reasons import DESCRIPTIONS, Reason

IMAGE = "Image rules (from the header)"
TOKENS = "Vision-token rules"
CAPTION = "Caption rules"
CLIP = "CLIP-score rule"


def _opt(kind, help: str, panel: str, *names: str) -> Any:
    return Annotated[kind, typer.Option(*names, help=help, rich_help_panel=panel)]


@handle_errors
@o.dataset_command()
def filter_rows(
    recipe: _opt(
        str | None, "TOML file of rules named like these flags; flags override it.", "Rules"
    ) = None,
    dry_run: _opt(
        bool,
        "Read and check everything, write nothing; print kept and dropped rows by reason.",
        "Rules",
        "--dry-run",
    ) = False,
    min_side: _opt(int | None, "Drop images whose shorter side is below N px.", IMAGE) = None,
    max_side: _opt(int | None, "Drop images whose longer side is above N px.", IMAGE) = None,
    min_pixels: _opt(int | None, "Drop images with fewer than N pixels (w*h).", IMAGE) = None,
    max_pixels: _opt(int | None, "Drop images with more than N pixels (w*h).", IMAGE) = None,
    max_aspect: _opt(
        float | None, "Drop images whose long side / short side is above R.", IMAGE
    ) = None,
    min_bytes: _opt(int | None, "Drop files smaller than N bytes.", IMAGE) = None,
    max_bytes: _opt(int | None, "Drop files larger than N bytes.", IMAGE) = None,
    formats: _opt(
        str | None, "Keep only these formats, comma-separated (jpeg,png,webp).", IMAGE
    ) = None,
    decode_check: _opt(
        bool | None,
        "Decode every image fully: drops truncated and corrupt files.",
        IMAGE,
        "--decode-check/--no-decode-check",
    ) = None,
    preset: _opt(
        str | None, "Model preset for the token rules (name:key=value).", TOKENS, "--preset", "-p"
    ) = None,
    preset_file: PresetFileOpt = None,
    min_tokens: _opt(
        int | None, "Drop images with fewer vision tokens under --preset.", TOKENS
    ) = None,
    max_tokens: _opt(
        int | None, "Drop images with more vision tokens under --preset.", TOKENS
    ) = None,
    require_caption: _opt(
        bool | None,
        "Drop rows whose caption is null or empty (implied by any other caption rule).",
        CAPTION,
        "--require-caption/--no-require-caption",
    ) = None,
    caption_min_words: _opt(int | None, "Drop captions with fewer words.", CAPTION) = None,
    caption_max_words: _opt(int | None, "Drop captions with more words.", CAPTION) = None,
    caption_min_chars: _opt(int | None, "Drop captions with fewer characters.", CAPTION) = None,
    lang: _opt(
        str | None,
        "Keep captions in these languages (ISO 639-1, comma-separated: en,de,zh). A caption "
        "goes only when another language is identified with at least --lang-confidence.",
        CAPTION,
    ) = None,
    lang_confidence: _opt(
        float | None, "Confidence needed to drop a caption as another language (0.5).", CAPTION
    ) = None,
    drop_mojibake: _opt(
        bool | None,
        "Drop captions decoded with the wrong codec (cafÃ©) or holding U+FFFD.",
        CAPTION,
        "--drop-mojibake/--keep-mojibake",
    ) = None,
    min_clip_score: _opt(
        float | None,
        "Drop rows whose clip_score (image-caption cosine) is below X (`low_clip_score`): the "
        "input's clip_score column (mmtok embed --text), or computed with --model.",
        CLIP,
    ) = None,
    model: o.ModelOpt = None,
    checkpoint: o.CheckpointOpt = None,
    pretrained_tag: o.PretrainedTagOpt = None,
    preprocess: o.PreprocessOpt = None,
    device: o.DeviceOpt = "auto",
    batch_size: o.BatchSizeOpt = None,
    **shared: Any,
) -> None:
    """Keep the image-text rows that pass the rules; drop the rest with a reason and a value.

    Image rules read the header only (fast); --decode-check decodes every image. Rules run in
    a fixed order (header, vision tokens, caption, CLIP score) and the first rule a row breaks
    is its reason. Dropped rows go to __mmtok__/rejects.parquet with the reason code and the
    measured value in the message (reason `too_small`, message `side=12 < min_side=64 (12x80)`).

    [bold]Examples[/]

      mmtok filter pairs.jsonl -o clean/ --min-side 64 --max-aspect 4 \\
          --caption-min-words 3
      mmtok filter pairs.jsonl -o clean/ --recipe filter.toml --lang en,de
      mmtok filter 'shards/*.tar' --preset qwen2-vl --max-tokens 4096 --dry-run
      mmtok filter emb/ -o good/ --min-clip-score 0.28
      mmtok filter pairs.jsonl -o good/ --min-clip-score 0.3 -m local-dir:b32
    """
    opts = FilterOptions.from_arguments({**locals(), **shared})
    o.run_dataset(opts, build_plan, render, shared)


def render(console: Console, doc: dict[str, Any]) -> None:
    counts = doc["counts"]
    title = "mmtok filter" + (" (dry run: nothing written)" if doc["dry_run"] else "")
    table = Table(title=title, title_justify="left")
    table.add_column("rows")
    table.add_column("count", justify="right")
    table.add_column("share", justify="right")
    table.add_column("meaning")
    total = counts["in"] or 1
    table.add_row("in", f"{counts['in']:,}", "100%", "")
    table.add_row("kept", f"{counts['out']:,}", f"{100 * counts['out'] / total:.1f}%", "")
    for reason, n in counts["rejected_by_reason"].items():
        meaning = (
            DESCRIPTIONS.get(Reason(reason), "") if reason in Reason._value2member_map_ else ""
        )
        table.add_row(f"dropped: {reason}", f"{n:,}", f"{100 * n / total:.1f}%", meaning)
    console.print(table)
    rules = ", ".join(f"{k}={v}" for k, v in doc["rules"].items())
    console.print(f"rules: {rules}", markup=False)
    if doc["output"]:
        where = f"{doc['output']} (dropped rows in __mmtok__/rejects.parquet)"
        console.print(f"output: {where}", markup=False)
