"""`mmtok dedup`: drop exact and near-duplicate images, captions or pairs, globally."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from mmtok.cli import options as o
from mmtok.cli.output import handle_errors
from mmtok.commands import build_plan
from mmtok.commands.dedup import DedupOptions
from mmtok.commands.dedup import cluster_table as cluster_table  # benchmarks/dedup.py
from mmtok.commands.dedup import summary as summary

DEDUP = "Duplicates"


class By(StrEnum):
    IMAGE = "image"
    CAPTION = "caption"
    PAIR = "pair"
    EMBEDDING = "embedding"


class Keep(StrEnum):
    LARGEST = "largest"
    FIRST = "first"
    LONGEST_CAPTION = "longest-caption"
    NONE = "none"


@handle_errors
@o.dataset_command()
def dedup(
    by: Annotated[
        By,
        typer.Option(
            help="What makes two rows duplicates: the `image`, the `caption`, the `pair` "
            "(both near-duplicates), or the stored `embedding` (of an `mmtok embed` output).",
            rich_help_panel=DEDUP,
        ),
    ] = By.IMAGE,
    max_distance: Annotated[
        int,
        typer.Option(
            min=0,
            max=16,
            help="Perceptual-hash Hamming bits within which two images are near-duplicates.",
            rich_help_panel=DEDUP,
        ),
    ] = 8,
    mirror: Annotated[
        bool,
        typer.Option(
            "--mirror", help="Mirrored images count as duplicates.", rich_help_panel=DEDUP
        ),
    ] = False,
    caption_threshold: Annotated[
        float,
        typer.Option(
            callback=o.share,
            help="Jaccard similarity of caption word sets at which captions are duplicates "
            "(above 0, at most 1).",
            rich_help_panel=DEDUP,
        ),
    ] = 0.8,
    threshold: Annotated[
        float,
        typer.Option(
            callback=o.share,
            help="--by embedding: cosine similarity of image embeddings at which images are "
            "duplicates.",
            rich_help_panel=DEDUP,
        ),
    ] = 0.95,
    shingle_size: Annotated[
        int,
        typer.Option(
            min=1,
            help="Words (characters in CJK/Thai) per caption shingle.",
            rich_help_panel=DEDUP,
        ),
    ] = 1,
    keep: Annotated[
        Keep,
        typer.Option(
            help="Row kept per cluster: `largest` (most pixels, then smallest id), `first` "
            "(input order), `longest-caption` (then smallest id), `none` (drop them all).",
            rich_help_panel=DEDUP,
        ),
    ] = Keep.LARGEST,
    against: Annotated[
        list[str] | None,
        typer.Option(
            help="Reference datasets (repeatable): drop input rows that duplicate any of their "
            "rows (decontamination). References are not written.",
            rich_help_panel=DEDUP,
        ),
    ] = None,
    clusters: Annotated[
        str | None,
        typer.Option(
            "--clusters",
            help="Where to write clusters.parquet (default: -o DIR/__mmtok__/).",
            rich_help_panel=DEDUP,
        ),
    ] = None,
    **shared: Any,
) -> None:
    """Drop duplicate rows: exact and near-duplicate images, captions, or image-caption pairs.

    Two passes over the inputs, then one to write. The signature pass (all workers) reads every
    image once: sha256 of the file, a 64-bit DCT perceptual hash of the decoded, EXIF-rotated
    image, and the caption's MinHash band keys. The clustering pass works on those signatures
    only, over all inputs at once: clusters are transitive, and the kept row is chosen by
    --keep, so the output is the same on every run and with any number of workers.

    Writes the kept rows; __mmtok__/rejects.parquet with reason `duplicate` and a message
    naming the kept row (`duplicate_of=<id> kind=near image_distance=4`);
    __mmtok__/clusters.parquet; and the summary. The output folder is checked before the
    signature pass; --resume continues a killed writing pass (signatures are computed again).

    [bold]Examples[/]

      mmtok dedup pairs.jsonl -o unique/
      mmtok dedup pairs.jsonl -o unique/ --by pair --keep longest-caption
      mmtok dedup train.jsonl -o clean/ --against eval.jsonl --mirror
    """
    opts = DedupOptions.from_arguments({**locals(), **shared})
    o.run_dataset(opts, build_plan, render, shared)


def render(console: Console, doc: dict[str, Any]) -> None:
    counts = doc["counts"]
    table = Table(
        title=f"mmtok dedup --by {doc['settings']['by']}", show_header=False, title_justify="left"
    )
    table.add_row("rows in", f"{counts['in']:,}")
    table.add_row("kept", f"{counts['out']:,}")
    table.add_row("duplicates removed", f"{doc['duplicates_removed']:,}")
    for kind, n in doc["removed_by_kind"].items():
        table.add_row(f"  {kind}", f"{n:,}")
    for reason, n in counts["rejected_by_reason"].items():
        if reason != "duplicate":
            table.add_row(f"rejected: {reason}", f"{n:,}")
    table.add_row("clusters", f"{doc['clusters']:,} (largest {doc['largest_cluster']:,})")
    if doc["output"] != "-":
        table.add_row("output", str(doc["output"]))
    console.print(table)
