"""Caption facts for the filter and dedup rules: words, shingles, language, mojibake.

Pure functions over strings, except `LanguageId`, which loads py3langid's bundled model once
per worker (offline: the model ships inside the package; about 140 languages).
"""

from __future__ import annotations

import re
import unicodedata

# Scripts written without spaces between words: each character counts as a word.
# (Han, Hiragana, Katakana, Thai, Lao, Khmer, Myanmar, Tibetan.)
_SPACELESS = (
    "\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
    "\u0e00-\u0e7f\u0e80-\u0eff\u1780-\u17ff\u1000-\u109f\u0f00-\u0fff"
)
_TOKEN = re.compile(rf"[{_SPACELESS}]|[^\s{_SPACELESS}]+")
_SPACELESS_CHAR = re.compile(rf"[{_SPACELESS}]")
_PUNCT = re.compile(r"[^\w\s]+")


def words(text: str) -> list[str]:
    """Whitespace-separated words; in scripts without spaces (CJK, Thai, ...) one per character."""
    return _TOKEN.findall(text)


def normalized_tokens(text: str) -> list[str]:
    """Words for near-duplicate comparison: NFKC, case-folded, punctuation removed."""
    text = _PUNCT.sub(" ", unicodedata.normalize("NFKC", text).casefold())
    return words(text)


def shingles(text: str, size: int = 1) -> set[str]:
    """The set of `size`-grams of normalized tokens (characters for spaceless scripts).

    Unigrams by default: captions are short, and one reworded word in ten leaves a Jaccard
    similarity of about 0.8 with unigrams but about 0.6 with word pairs."""
    tokens = normalized_tokens(text)
    if size <= 1 or len(tokens) < size:
        return set(tokens) if size <= 1 or tokens else set()
    return {" ".join(tokens[i : i + size]) for i in range(len(tokens) - size + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    if not a and not b:
        return 1.0
    common = len(a & b)
    return common / (len(a) + len(b) - common)


def mojibake(text: str) -> str | None:
    """Why `text` looks mis-decoded, or None: U+FFFD replacement characters, or the patterns
    ftfy recognises (UTF-8 read as Latin-1/cp1252: `cafÃ©`, `donâ€™t`)."""
    if "\ufffd" in text:
        return f"replacement_chars={text.count(chr(0xFFFD))}"
    from ftfy.badness import is_bad  # lazy: only --drop-mojibake pays for the import

    if is_bad(text):
        from ftfy import fix_text

        return f"mojibake: {text[:40]!r} reads as {fix_text(text)[:40]!r}"
    return None


class LanguageId:
    """Offline language identification (py3langid: ISO 639 codes, normalized probabilities)."""

    def __init__(self):
        self._identifier = None

    def setup(self) -> LanguageId:
        if self._identifier is None:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier

            self._identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        return self

    def classify(self, text: str) -> tuple[str, float]:
        """(language code, probability) of the most likely language."""
        assert self._identifier is not None, "call setup() first"
        lang, prob = self._identifier.classify(text)
        return lang, float(prob)

    def outside(self, text: str, wanted: tuple[str, ...]) -> tuple[str, float]:
        """(most likely language, probability that the language is none of `wanted`).

        The probability of a set, not of the top language: close languages (ru/bg/uk,
        es/pt/gl) split the mass between them, so the top one alone is often under 0.5."""
        assert self._identifier is not None, "call setup() first"
        ranked = self._identifier.rank(text)
        inside = sum(float(p) for lang, p in ranked if lang in wanted)
        return ranked[0][0], max(0.0, 1.0 - inside)

    def __getstate__(self):  # the model loads in each worker, it does not travel
        return {"_identifier": None}
