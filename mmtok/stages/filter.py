"""FilterStage: drops rows that break a `FilterRules` rule, each with its reason and value.

Runs after ProbeStage (which supplies the displayed size, format and file size from the header,
and with --decode-check has already decoded every image).
"""

from __future__ import annotations

from typing import Any, ClassVar

from mmtok.engine.stage import RowStage
from mmtok.filters import FilterRules, caption_violation, image_violation, token_violation
from mmtok.presets import Refused, get_preset
from mmtok.reasons import Reason, RowRejected
from mmtok.text.caption import LanguageId


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
