"""`embed`: CLIP/SigLIP image (and caption) embeddings over a dataset.

This module imports no torch: the model is resolved, checked and loaded when the part is built
(before any data is read)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mmtok.errors import MmtokError
from mmtok.images import DEFAULT_MAX_PIXELS

from .options import DatasetOptions, option
from .plan import Part


class ScoreSummary:
    """Mean and percentiles of `clip_score` over the embedded rows."""

    columns = ["clip_score"]

    def __init__(self):
        from mmtok.stats import PercentileSample

        self.sample = PercentileSample()
        self.total = 0.0

    def add(self, table: Any) -> None:
        values = table.column("clip_score").to_numpy(zero_copy_only=False)
        self.sample.add(values)
        self.total += float(sum(v for v in values if v == v))

    def to_dict(self) -> dict[str, Any]:
        n = self.sample.count
        return {
            "scored": n,
            "mean": self.total / n if n else None,
            "percentiles": self.sample.percentiles((5, 50, 95)),
        }


@dataclass(kw_only=True)
class EmbedOptions(DatasetOptions):
    model: str
    checkpoint: str | None = None
    pretrained_tag: str | None = None
    preprocess: str | None = None
    text: bool = False
    min_clip_score: float | None = None
    emit: Literal["npy"] | None = None
    device: str = "auto"
    batch_size: int | None = option(None, ge=1)
    gpu_decode: bool = False
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    exif: bool = False
    max_pixels: int = option(DEFAULT_MAX_PIXELS, ge=1)


def part(opts: EmbedOptions) -> Part:
    from mmtok.engine.pipeline import Observer

    if opts.min_clip_score is not None and not opts.text:
        raise MmtokError("--min-clip-score needs --text (the score compares image and caption)")
    if opts.emit == "npy" and (opts.output is None or opts.output == "-"):
        raise MmtokError("--emit npy writes files next to the shards", hint="give -o DIR")
    from mmtok.models.clip import resolve_model
    from mmtok.models.inputs import ModelInputStage
    from mmtok.models.runtime import resolve_device
    from mmtok.stages.embed import EmbedStage

    resolved = resolve_model(
        opts.model,
        checkpoint=opts.checkpoint,
        pretrained_tag=opts.pretrained_tag,
        preprocess=opts.preprocess,
    )
    chosen_device = resolve_device(opts.device)
    if opts.gpu_decode and not chosen_device.startswith("cuda"):
        raise MmtokError("--gpu-decode needs a CUDA device", hint="leave it out on CPU")
    if opts.gpu_decode and opts.exif:
        raise MmtokError("--gpu-decode does not rotate by EXIF", hint="leave out --exif")
    stage = EmbedStage(
        resolved,
        text=opts.text,
        device=chosen_device,
        device_decode=opts.gpu_decode,
        batch_size=opts.batch_size,
        precision=opts.precision,
        min_clip_score=opts.min_clip_score,
    )
    stage.setup()  # a checkpoint that does not fit fails here, before any data is read
    scores = ScoreSummary()
    observers = [Observer(ScoreSummary.columns, scores.add)] if opts.text else []
    inputs_stage = ModelInputStage(
        resolved.preprocess,
        exif=opts.exif,
        max_pixels=opts.max_pixels,
        device_decode=opts.gpu_decode,
    )

    def document(manifest: dict[str, Any], out: Any) -> dict[str, Any]:
        exported = None
        if opts.emit == "npy":
            from mmtok.io.layout import SIDE_DIR
            from mmtok.models.interchange import EXPORT_DIR

            exported = str(Path(out.path) / SIDE_DIR / EXPORT_DIR)
        return {
            "output": out.path if out else None,
            "clip_retrieval": exported,
            "model": resolved.info(),
            "dim": stage.dim,
            "device": stage.device,
            "precision": stage.precision_name,
            "batch_size": stage.rows_per_batch,
            "batch_halvings": stage.halvings,
            "counts": manifest["counts"],
            "timing": manifest.get("timing"),
            "clip_score": scores.to_dict() if opts.text else None,
        }

    def side_outputs(doc: dict[str, Any]) -> dict[str, Any]:
        from mmtok.models.interchange import EXPORT_DIR, export_clip_retrieval

        return {EXPORT_DIR: export_clip_retrieval}

    return Part(
        "embed",
        f"embedding with {opts.model}",
        [inputs_stage, stage],
        document,
        observers,
        batch_rows=stage.rows_per_batch,
        side_outputs=side_outputs if opts.emit == "npy" else None,
    )
