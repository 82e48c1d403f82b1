"""FilterStage: drops rows that break a `FilterRules` rule, each with its reason and value.

Runs after ProbeStage (which supplies the displayed size, format and file size from the header,
and with --decode-check has already decoded every image). The CLIP-score rule comes last, in
stages of its own (`filter_stages`): over the input's `clip_score` column, or computed by a
CLIP model on the device.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from mmtok.engine.stage import RowStage, Stage
from mmtok.errors import MmtokError
from mmtok.filters import FilterRules, caption_violation, image_violation, token_violation
from mmtok.images import DEFAULT_MAX_PIXELS
from mmtok.io.sources import Inputs
from mmtok.presets import Refused, get_preset
from mmtok.reasons import Reason, RowRejected
from mmtok.stages.probe import ProbeStage
from mmtok.text.caption import LanguageId

CLIP_SCORE = "clip_score"  # the column `mmtok embed --text` writes
BATCH_ROWS = 256  # rows per unit of work without a model


class FilterStage(RowStage):
    name: ClassVar[str] = "filter"
    input_columns: ClassVar[tuple[str, ...]] = (
        "display_width",
        "display_height",
        "format",
        "file_bytes",
        "caption",
    )

    def __init__(self, rules: FilterRules):
        self.rules = rules
        self._preset = get_preset(rules.preset) if rules.preset else None  # errors early
        self._language = LanguageId() if rules.lang else None

    def config(self) -> dict[str, Any]:
        return {"rules": self.rules.active()}

    def setup(self) -> None:
        if self._language is not None:
            self._language.setup()

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        width, height = row["display_width"], row["display_height"]
        violation = image_violation(self.rules, width, height, row["format"], row["file_bytes"])
        if violation is None and self._preset is not None:
            layout = self._preset.layout(width, height)
            if isinstance(layout, Refused):
                violation = Reason.MODEL_REFUSES, f"{self._preset.name}: {layout.error}"
            else:
                violation = token_violation(self.rules, layout.image_tokens)
        if violation is None and self.rules.checks_caption:
            caption = row["caption"]
            language = None
            if self._language is not None and caption and caption.strip():
                language = self._language.outside(caption, self.rules.lang)
            violation = caption_violation(self.rules, caption, language)
        if violation is not None:
            raise RowRejected(*violation)
        return {}


@dataclass(frozen=True)
class ClipModelOptions:
    """Which CLIP-family model computes `clip_score`, and where (the flags of `mmtok embed`)."""

    model: str
    checkpoint: str | None = None
    pretrained_tag: str | None = None
    preprocess: str | None = None
    device: str = "auto"
    batch_size: int | None = None


def filter_stages(
    rules: FilterRules, model: ClipModelOptions | None = None
) -> tuple[list[Stage], int, Callable[[Inputs], Inputs] | None]:
    """The stages of `mmtok filter`, the rows per unit of work, and a check of the inputs to run
    before any row is read (None: nothing to check).

    Header, token and caption rules first; the CLIP-score rule last, as it is the costly one:
    over the input's `clip_score` column, or with `model` computed on the device (the model is
    loaded here, so a checkpoint that does not fit stops the run before any data is read)."""
    stages: list[Stage] = [
        ProbeStage(max_pixels=DEFAULT_MAX_PIXELS, decode_check=rules.decode_check),
        FilterStage(dataclasses.replace(rules, min_clip_score=None)),
    ]
    minimum = rules.min_clip_score
    if model is not None and minimum is None:
        raise MmtokError(
            "--model computes clip_score for --min-clip-score", hint="add --min-clip-score X"
        )
    if minimum is None:
        return stages, BATCH_ROWS, None
    from mmtok.stages.embed import ClipScoreFilterStage

    if model is None:
        return [*stages, ClipScoreFilterStage(minimum)], BATCH_ROWS, require_clip_score
    from mmtok.models.clip import resolve_model
    from mmtok.models.inputs import ModelInputStage
    from mmtok.models.runtime import resolve_device
    from mmtok.stages.embed import ClipScoreStage

    resolved = resolve_model(
        model.model,
        checkpoint=model.checkpoint,
        pretrained_tag=model.pretrained_tag,
        preprocess=model.preprocess,
    )
    scorer = ClipScoreStage(
        resolved, minimum, device=resolve_device(model.device), batch_size=model.batch_size
    )
    scorer.setup()  # a checkpoint that does not fit fails here, before any data is read
    # the model's input as `mmtok embed` makes it (no EXIF rotation, as open_clip), so the
    # score equals the one `mmtok embed --text` stores
    stages += [ModelInputStage(resolved.preprocess), scorer]
    return stages, scorer.rows_per_batch, None


def require_clip_score(inputs: Inputs) -> Inputs:
    """--min-clip-score without --model reads the inputs' `clip_score` column: stop before
    any row is read when they have none."""
    if CLIP_SCORE not in inputs.schema.names:
        raise MmtokError(
            f"--min-clip-score: no clip_score column in {', '.join(inputs.paths)}",
            hint="compute it with --model (local-dir:DIR, or ARCH with --checkpoint or "
            "--pretrained-tag), or run mmtok embed --text first",
        )
    return inputs
