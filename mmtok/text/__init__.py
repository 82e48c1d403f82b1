"""Text: caption token counts."""

from mmtok.text.tokens import ESTIMATE_LABEL, TextCounter

__all__ = ["ESTIMATE_LABEL", "TextCounter"]
