"""`tokenize-images`: discrete VQ image tokens (Chameleon, taming VQGAN, LlamaGen / Janus).

This module imports no torch: the tokenizer is resolved, checked and loaded when the part is
built (before any data is read)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mmtok.errors import MmtokError
from mmtok.images import DEFAULT_MAX_PIXELS

from .options import DatasetOptions, option
from .plan import Part


@dataclass(kw_only=True)
class VQOptions(DatasetOptions):
    """What tokenize-images and detokenize share: the tokenizer and how it runs."""

    checkpoint: str
    tokenizer: str | None = None
    config: str | None = None  # a tokenizer config as JSON, in place of `tokenizer`
    device: str = "auto"
    batch_size: int | None = option(None, ge=1)
    precision: Literal["fp32", "tf32", "bf16"] = "fp32"
    exif: bool = False
    max_pixels: int = option(DEFAULT_MAX_PIXELS, ge=1)


@dataclass(kw_only=True)
class TokenizeImagesOptions(VQOptions):
    emit: Literal["bin"] | None = None
    boi: int | None = option(None, ge=0)
    eoi: int | None = option(None, ge=0)


def resolve_config(tokenizer: str | None, config: str | None) -> Any:
    """The tokenizer's `VQConfig` from --config FILE or --tokenizer NAME."""
    from mmtok.models.vq import load_config

    if config is None and tokenizer is None:
        raise MmtokError(
            "no tokenizer given", hint="pass --tokenizer chameleon (or another), or --config FILE"
        )
    return load_config(config if config is not None else tokenizer)


def model_stage(opts: VQOptions, stage_class: Any) -> tuple[Any, Any]:
    """The tokenizer's config and its model stage (`VQTokenizeStage`, `DetokenizeStage`),
    loaded: a checkpoint that does not fit fails here, before any data is read."""
    from mmtok.models.runtime import resolve_device
    from mmtok.stages.vq import check_checkpoint_file

    check_checkpoint_file(opts.checkpoint)
    vq = resolve_config(opts.tokenizer, opts.config)
    return vq, stage_class(
        vq,
        opts.checkpoint,
        device=resolve_device(opts.device),
        batch_size=opts.batch_size,
        precision=opts.precision,
    )


def part(opts: TokenizeImagesOptions) -> Part:
    if (opts.boi is not None or opts.eoi is not None) and opts.emit != "bin":
        raise MmtokError("--boi and --eoi wrap the ids of --emit bin", hint="add --emit bin")
    if opts.emit == "bin" and opts.output in (None, "-"):
        raise MmtokError("--emit bin writes files into the output folder", hint="give -o DIR")
    from mmtok.io.layout import SIDE_DIR
    from mmtok.stages.vq import VQInputStage, VQTokenizeStage
    from mmtok.vq_stream import STREAM_DIR, check_markers, write_stream

    vq, stage = model_stage(opts, VQTokenizeStage)
    check_markers(vq.codebook_size, opts.boi, opts.eoi)
    stage.setup()

    def document(manifest: dict[str, Any], out: Any) -> dict[str, Any]:
        counts = manifest["counts"]
        return {
            "output": out.path if out else None,
            "tokenizer": vq.to_dict(),
            "checkpoint": opts.checkpoint,
            "checkpoint_sha256": stage.checkpoint_sha256,
            "tokens_per_image": vq.tokens,
            "grid": [vq.grid, vq.grid],
            "codebook_size": vq.codebook_size,
            "device": stage.device,
            "precision": stage.precision_name,
            "batch_size": stage.rows_per_batch,
            "batch_halvings": stage.halvings,
            "counts": counts,
            "tokens": counts["out"] * vq.tokens,
            "timing": manifest.get("timing"),
            # the stream's sizes are added as it is written, when the folder is published
            "stream": {"path": str(Path(out.path) / SIDE_DIR / STREAM_DIR)} if opts.emit else None,
        }

    def side_outputs(doc: dict[str, Any]) -> dict[str, Any]:
        def write(folder: Path) -> None:
            doc["stream"].update(
                write_stream(folder, codebook_size=vq.codebook_size, boi=opts.boi, eoi=opts.eoi)
            )

        return {STREAM_DIR: write}

    return Part(
        "tokenize-images",
        f"tokenizing with {vq.name}",
        [VQInputStage(vq, exif=opts.exif, max_pixels=opts.max_pixels), stage],
        document,
        batch_rows=stage.rows_per_batch,
        # the stream goes into the folder before it is published
        side_outputs=side_outputs if opts.emit == "bin" else None,
    )
