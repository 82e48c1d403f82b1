"""`detokenize`: VQ ids back to images, to see what a tokenizer keeps.

This module imports no torch: the tokenizer is resolved, checked and loaded when the part is
built (before any data is read)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .plan import Part
from .tokenize_images import VQOptions, model_stage


class PsnrSummary:
    """Mean and percentiles of `psnr` over the rows that still had their source image."""

    columns = ["psnr"]

    def __init__(self):
        from mmtok.stats import PercentileSample

        self.sample = PercentileSample()
        self.total = 0.0
        self.identical = 0

    def add(self, table: Any) -> None:
        import numpy as np

        values = table.column("psnr").to_numpy(zero_copy_only=False).astype(np.float64)
        values = values[~np.isnan(values)]
        finite = values[np.isfinite(values)]
        self.identical += len(values) - len(finite)  # inf: the decoded image is the source
        self.sample.add(finite)
        self.total += float(finite.sum())

    def to_dict(self) -> dict[str, Any]:
        n = self.sample.count
        return {
            "rows": n + self.identical,
            "identical": self.identical,
            "mean_db": self.total / n if n else None,
            "percentiles_db": self.sample.percentiles((5, 50, 95)),
        }


@dataclass(kw_only=True)
class DetokenizeOptions(VQOptions):
    pass


def part(opts: DetokenizeOptions) -> Part:
    from mmtok.engine.pipeline import Observer
    from mmtok.stages.vq import DetokenizeInputStage, DetokenizeStage

    vq, stage = model_stage(opts, DetokenizeStage)
    stage.setup()  # a checkpoint without the decoder fails here, before any data is read
    summary = PsnrSummary()

    def document(manifest: dict[str, Any], out: Any) -> dict[str, Any]:
        return {
            "output": out.path if out else None,
            "tokenizer": vq.to_dict(),
            "checkpoint": opts.checkpoint,
            "checkpoint_sha256": stage.checkpoint_sha256,
            "resolution": vq.resolution,
            "device": stage.device,
            "precision": stage.precision_name,
            "counts": manifest["counts"],
            "timing": manifest.get("timing"),
            "psnr": summary.to_dict(),
        }

    return Part(
        "detokenize",
        f"decoding with {vq.name}",
        [DetokenizeInputStage(vq, exif=opts.exif, max_pixels=opts.max_pixels), stage],
        document,
        [Observer(PsnrSummary.columns, summary.add)],
        batch_rows=stage.rows_per_batch,
    )
