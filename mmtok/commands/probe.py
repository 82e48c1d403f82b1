"""`probe`: read each image's header (size, format, mode, frames, EXIF) into a dataset."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mmtok.images import DEFAULT_MAX_PIXELS

from .options import DatasetOptions, option
from .plan import Part


@dataclass(kw_only=True)
class ProbeOptions(DatasetOptions):
    decode_check: bool = False
    allow_truncated: bool = False
    max_pixels: int = option(DEFAULT_MAX_PIXELS, ge=1)


def part(opts: ProbeOptions) -> Part:
    from mmtok.engine.pipeline import Observer
    from mmtok.stages.probe import ProbeStage, ProbeSummary

    stage = ProbeStage(
        max_pixels=opts.max_pixels,
        decode_check=opts.decode_check,
        allow_truncated=opts.allow_truncated,
    )
    summary = ProbeSummary()

    def document(manifest: dict[str, Any], out: Any) -> dict[str, Any]:
        return {
            "output": out.path if out else None,
            "counts": manifest["counts"],
            "timing": manifest.get("timing"),
            **summary.to_dict(),
        }

    observer = Observer(ProbeSummary.columns, summary=summary)
    return Part("probe", "probing", [stage], document, [observer])
