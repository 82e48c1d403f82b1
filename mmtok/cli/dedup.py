"""`mmtok dedup`: drop exact and near-duplicate images, captions or pairs, globally."""

from __future__ import annotations

import contextlib
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import typer
from rich.console import Console
from rich.table import Table

from mmtok.cli import options as o
from mmtok.cli.output import Reporter, handle_errors
from mmtok.dedup import KINDS, Clusters, Settings, Signatures, find_clusters
from mmtok.engine.local import default_workers
from mmtok.engine.pipeline import (
    Observer,
    OutputOptions,
    check_output,
    command_line,
    finished_output,
    publish_output,
    run_pipeline,
)
from mmtok.engine.stage import Stage
from mmtok.errors import MmtokError
from mmtok.io.layout import CLUSTERS_FILE, SIDE_DIR
from mmtok.io.output_guard import real, remove_output
from mmtok.io.sources import Inputs
from mmtok.stages.columns import KeepColumns
from mmtok.stages.dedup import DedupStage
from mmtok.stages.embedding_signature import embedding_signatures
from mmtok.stages.signature import SignatureStage
from mmtok.text.minhash import CaptionBands

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


SIGNATURE_COLUMNS = [
    "id",
    "caption",
    "sha256",
    "phash",
    "phash_mirror",
    "pixels",
    "caption_bands",
    "sig_reason",
    "sig_message",
    "sig_embedding",
]


@handle_errors
def dedup(
    inputs: o.InputsArg,
    output: o.OutputOpt = None,
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
    clusters_path: Annotated[
        str | None,
        typer.Option(
            "--clusters",
            help="Where to write clusters.parquet (default: -o DIR/__mmtok__/).",
            rich_help_panel=DEDUP,
        ),
    ] = None,
    image_col: o.ImageColOpt = "image",
    text_col: o.TextColOpt = "caption",
    id_col: o.IdColOpt = None,
    overwrite: o.OverwriteOpt = False,
    resume: o.ResumeOpt = False,
    shard_rows: o.ShardRowsOpt = 50_000,
    shard_bytes: o.ShardBytesOpt = "512MB",
    image_bytes: o.ImageBytesOpt = False,
    rejects: o.RejectsOpt = None,
    workers: o.WorkersOpt = None,
    row_timeout: o.RowTimeoutOpt = o.DEFAULT_ROW_TIMEOUT,
    quiet: o.QuietOpt = False,
    as_json: o.JsonOpt = False,
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
    common = o.DatasetOptions.pick(locals())
    settings = Settings(
        by=by.value,
        max_distance=max_distance,
        mirror=mirror,
        caption_threshold=caption_threshold,
        shingle_size=shingle_size,
        keep=keep.value,
        embedding_threshold=threshold,
    )
    out = o.build_output(
        output,
        overwrite=overwrite,
        resume=resume,
        shard_rows=shard_rows,
        shard_bytes=shard_bytes,
        image_bytes=image_bytes,
        rejects=rejects,
    )
    if out is None:
        raise MmtokError("give -o DIR (or -o - for JSON Lines)")
    if clusters_path:  # written after all passes: check it before the first
        o.writable_file(clusters_path, "--clusters", output)
    to_stdout = out.to_stdout
    reporter = Reporter(
        quiet=quiet,
        as_json=as_json,
        stdout_is_data=to_stdout,
        stderr_is_data=to_stdout and rejects is None,
    )
    captions = (
        CaptionBands(caption_threshold, shingle_size=shingle_size) if by is not By.IMAGE else None
    )
    stage = SignatureStage(images=by is not By.CAPTION, captions=captions)
    # one Inputs for both passes over the data: stdin is spooled once and read twice
    source = o.build_inputs(inputs, image_col, text_col, id_col)
    if by is By.EMBEDDING:
        refs = [o.build_inputs([r], image_col, text_col, id_col) for r in against or []]
        stage = embedding_signatures(settings, [source, *refs])
    check_output(out, source, against or [])  # before the signature pass: hours at scale
    store = signature_store(out)
    if store is not None and store.exists() and not (resume or overwrite):
        raise MmtokError(
            f"an unfinished dedup left its signatures in {store}",
            hint="pass --resume to continue it, or --overwrite to start again",
        )
    t0 = time.monotonic()
    parts = [signatures(common, source, stage, reporter, False, "signatures", store, "input")]
    for i, ref in enumerate(against or []):
        refs = o.build_inputs([ref], image_col, text_col, id_col)
        parts.append(
            signatures(common, refs, stage, reporter, True, f"signatures of {ref}", store, str(i))
        )
    sig = Signatures.concat(parts)
    t1 = time.monotonic()
    clusters = find_clusters(sig, settings)
    t2 = time.monotonic()
    with reporter.progress("writing") as (on_start, on_progress):
        manifest = run_pipeline(
            source,
            [DedupStage(sig, clusters, settings)],
            out,
            workers=1,
            command=command_line(),
            on_start=on_start,
            on_progress=on_progress,
            hold=True,
        )
    o.warn_about_inputs(reporter, source, stderr_is_data=to_stdout and rejects is None)
    table = cluster_table(sig, clusters)
    if clusters_path:  # a path of the user's choice, outside the output's commit
        pq.write_table(table, clusters_path, compression="zstd")
    if not to_stdout:
        publish_output(out, {} if clusters_path else {CLUSTERS_FILE: table})
        clusters_path = clusters_path or str(Path(out.path, SIDE_DIR, CLUSTERS_FILE))
        remove_signature_store(store)
    document = {
        "output": out.path,
        "clusters_file": clusters_path,
        "settings": {k: getattr(settings, k) for k in settings.__dataclass_fields__},
        "against": against or [],
        "counts": manifest["counts"],
        **summary(sig, clusters),
        "timing": {
            "signature_seconds": round(t1 - t0, 3),
            "clustering_seconds": round(t2 - t1, 3),
            "writing_seconds": round(time.monotonic() - t2, 3),
            "workers": common.workers or default_workers(),
        },
    }
    reporter.result(document, lambda console: render(console, document))


def signature_store(out: OutputOptions) -> Path | None:
    """Where a dedup into a folder keeps its signature passes (beside the output, like its
    staging folder), so that --resume does not compute them again."""
    if out.to_stdout:
        return None
    target = real(out.path)
    return target.parent / f".{target.name}.mmtok-signatures"


def remove_signature_store(store: Path | None) -> None:
    if store is None or not store.is_dir():
        return
    for child in store.iterdir():
        remove_output(child)  # only the files of complete signature datasets
    with contextlib.suppress(OSError):
        store.rmdir()


def signatures(
    common: o.DatasetOptions,
    source: Inputs,
    stage: SignatureStage,
    reporter: Reporter,
    reference: bool,
    description: str,
    store: Path | None,
    name: str,
) -> Signatures:
    """Pass 1 over one dataset: the signature columns of every row, in stream order. Each
    batch becomes columnar signatures as it arrives, so no table of all rows is held.

    With an output folder, the signature columns are also written to `store/name` (a dataset
    of their own, resumable like any output): a --resume after a kill continues this pass
    where it stopped, or skips it when it was complete."""
    bands = stage.captions.bands if stage.captions else 0
    schema = pa.schema([pa.field(c, t) for c, t in _types(stage).items()])
    parts = [Signatures.from_table(schema.empty_table(), reference, bands)]
    stages: list[Stage] = [stage]
    sig_out = None
    if store is not None:
        store.mkdir(exist_ok=True)
        sig_out = OutputOptions(
            str(store / name),
            overwrite=True,
            resume=common.resume,
            shard_rows=common.shard_rows,  # the commit points of this pass
        )
        stages.append(KeepColumns(SIGNATURE_COLUMNS))
        done = finished_output(sig_out, source, stages) if common.resume else None
        if done is not None:
            for f in done["files"]:
                if f["kind"] == "rows":
                    table = pq.read_table(store / name / f["name"], columns=SIGNATURE_COLUMNS)
                    parts.append(Signatures.from_table(table, reference, bands))
            return Signatures.concat(parts)
    with reporter.progress(description) as (on_start, on_progress):
        run_pipeline(
            source,
            stages,
            sig_out,
            workers=common.workers,
            row_timeout=common.row_timeout,
            command=command_line(),
            on_start=on_start,
            on_progress=on_progress,
            observers=[
                Observer(
                    SIGNATURE_COLUMNS,
                    lambda t: parts.append(Signatures.from_table(t, reference, bands)),
                )
            ],
        )
    signatures = Signatures.concat(parts)
    pa.default_memory_pool().release_unused()  # the batches' buffers go back to the system
    return signatures


def _types(stage: SignatureStage) -> dict[str, pa.DataType]:
    types = {"id": pa.string(), "caption": pa.string()}
    types.update({f.name: f.type for f in stage.output_fields()})
    return {c: types[c] for c in SIGNATURE_COLUMNS}


def cluster_table(sig: Signatures, c: Clusters) -> pa.Table:
    """One row per member of a cluster of two or more, ordered by cluster then input order."""
    members = np.flatnonzero(c.size > 1)
    members = members[np.lexsort((members, c.label[members]))]
    _, cluster_id = np.unique(c.label[members], return_inverse=True)
    distance, similarity = c.image_distance[members], c.caption_similarity[members]
    return pa.table(
        {
            "cluster_id": pa.array(cluster_id, pa.int64()),
            "id": sig.ids.take(pa.array(members)),
            "kept": pa.array(c.kept[members] == members),
            "reference": pa.array(sig.reference[members]),
            "image_distance": pa.array(distance.astype(np.int32), mask=distance < 0),
            "caption_jaccard": pa.array(similarity, mask=np.isnan(similarity)),
            "cosine": pa.array(c.cosine[members], pa.float32(), mask=np.isnan(c.cosine[members])),
            "kind": pa.array(c.kind_names(members), pa.string()),
        }
    )


def summary(sig: Signatures, c: Clusters) -> dict[str, Any]:
    multi = c.size > 1
    labels, sizes = np.unique(c.label[multi], return_counts=True)
    codes, counts = np.unique(c.kind[c.dropped], return_counts=True)
    kinds = {KINDS[k]: int(m) for k, m in zip(codes.tolist(), counts.tolist(), strict=True)}
    inputs = int((~sig.reference).sum())
    return {
        "clusters": int(len(labels)),
        "rows_in_clusters": int(multi.sum()),
        "largest_cluster": int(sizes.max()) if len(sizes) else 0,
        "mean_cluster_size": float(sizes.mean()) if len(sizes) else 0.0,
        "duplicates_removed": int(c.dropped.sum()),
        "removed_by_kind": dict(sorted(kinds.items())),
        "unreadable": inputs - sig.reason.slice(0, inputs).null_count,
    }


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
