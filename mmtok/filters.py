"""Filter rules: what `mmtok filter` keeps, as data, and the pure checks behind each reason.

A rule that is None is off. Rules come from a recipe file (TOML, the same names as the flags)
and from flags, which override the recipe. Checks run in a fixed order (image header, vision
tokens, caption) and the first rule a row breaks is its reason; the message starts with the
measured value (`width=12 < min_side=64`), so rejects can be counted and plotted.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from typing import Any

from mmtok.errors import MmtokError
from mmtok.reasons import Reason
from mmtok.text.caption import mojibake, words

# The languages py3langid's bundled model knows (its `nb_classes`; tests check the two agree),
# so `--lang` can be checked without loading the model (2 s).
_CODES = """ace af am an ar ary arz as az ba bcl be bg bn br bs ca crh cs cy da de dz el en eo es et
    eu ext fa fi fo fr fuv fy ga gcf gcr gd gl gom grc gu gug guw ha hbo he hi hr ht hu hy id ig
    is it ja jv ka kab kik kk km kn ko ku ky la lb lg lij ln lo lt ltg lv mg mk ml mn mr ms mt my
    ne nl nn no nso oc om or pa pcm pl ps pt qu ro ru rw sa sdh se si sk sl sn so sq sr st sv sw
    ta te tg th tk tl tr tt ug uk ur uz uzs vec vi vo wa wuu xh yo yue zh zu zxx"""
LANGUAGES = frozenset(_CODES.split())
# Rules that are counts or sizes: 0 or less is a typo, not a rule.
POSITIVE = (
    "min_side",
    "max_side",
    "min_pixels",
    "max_pixels",
    "max_aspect",
    "min_bytes",
    "max_bytes",
    "min_tokens",
    "max_tokens",
    "caption_min_words",
    "caption_max_words",
    "caption_min_chars",
)


@dataclass(frozen=True)
class FilterRules:
    # image header
    min_side: int | None = None
    max_side: int | None = None
    min_pixels: int | None = None
    max_pixels: int | None = None
    max_aspect: float | None = None
    min_bytes: int | None = None
    max_bytes: int | None = None
    formats: tuple[str, ...] | None = None
    decode_check: bool = False
    # vision tokens under a preset
    preset: str | None = None
    min_tokens: int | None = None
    max_tokens: int | None = None
    # caption
    require_caption: bool = False
    caption_min_words: int | None = None
    caption_max_words: int | None = None
    caption_min_chars: int | None = None
    lang: tuple[str, ...] | None = None
    lang_confidence: float = 0.5
    drop_mojibake: bool = False
    # image-caption agreement (a clip_score column, or computed with --model)
    min_clip_score: float | None = None

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def build(cls, recipe: dict[str, Any], flags: dict[str, Any]) -> FilterRules:
        """Rules from a recipe's values overridden by the flags that were given (not None)."""
        values = {**recipe, **{k: v for k, v in flags.items() if v is not None}}
        for name in ("formats", "lang"):
            if isinstance(values.get(name), str):
                values[name] = values[name].split(",")
            if values.get(name) is not None:
                values[name] = tuple(v.strip().lower() for v in values[name] if v.strip())
        if values.get("formats"):
            values["formats"] = tuple("jpeg" if f == "jpg" else f for f in values["formats"])
        rules = cls(**values)
        rules.validate()
        return rules

    def validate(self) -> None:
        for name in POSITIVE:
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not value > 0):
                flag = "--" + name.replace("_", "-")
                raise MmtokError(f"{flag} must be a number above 0, not {value!r}")
        if self.lang is not None:
            unknown = [code for code in self.lang if code not in LANGUAGES]
            if unknown or not self.lang:
                raise MmtokError(
                    f"--lang: unknown language code {', '.join(unknown) or '(none given)'}",
                    hint="give ISO 639-1 codes (en, de, zh); known: " + " ".join(sorted(LANGUAGES)),
                )
        if (self.min_tokens is not None or self.max_tokens is not None) and not self.preset:
            raise MmtokError("--min-tokens and --max-tokens need --preset")
        for low, high in (
            ("min_side", "max_side"),
            ("min_pixels", "max_pixels"),
            ("min_bytes", "max_bytes"),
            ("min_tokens", "max_tokens"),
            ("caption_min_words", "caption_max_words"),
        ):
            a, b = getattr(self, low), getattr(self, high)
            if a is not None and b is not None and a > b:
                raise MmtokError(f"{low} = {a} is above {high} = {b}: every row would go")
        if self.max_aspect is not None and self.max_aspect < 1:
            raise MmtokError("--max-aspect is long side / short side, so it is at least 1")
        if not 0 <= self.lang_confidence <= 1:
            raise MmtokError("--lang-confidence is a probability between 0 and 1")
        if self.min_clip_score is not None and not -1 <= self.min_clip_score <= 1:
            raise MmtokError(
                f"--min-clip-score is a cosine, between -1 and 1, not {self.min_clip_score:g}",
                hint="DataComp kept rows at 0.28 (OpenAI ViT-L-14) or 0.3 (ViT-B-32)",
            )

    @property
    def checks_caption(self) -> bool:
        return bool(
            self.require_caption
            or self.caption_min_words is not None
            or self.caption_max_words is not None
            or self.caption_min_chars is not None
            or self.lang
            or self.drop_mojibake
        )

    def active(self) -> dict[str, Any]:
        """The rules that are on (for the manifest and the summary)."""
        defaults = FilterRules()
        return {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(self).items()
            if v != getattr(defaults, k) or (k == "lang_confidence" and self.lang)
        }


def load_recipe(path: str) -> dict[str, Any]:
    """A recipe file: flat `key = value` pairs (or a `[filter]` table) named like the flags."""
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise MmtokError(f"no such recipe file: {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise MmtokError(f"{path} is not valid TOML: {e}") from None
    if isinstance(doc.get("filter"), dict):
        doc = doc["filter"]
    values = {key.replace("-", "_"): value for key, value in doc.items()}
    unknown = sorted(set(values) - set(FilterRules.names()))
    if unknown:
        raise MmtokError(
            f"{path}: unknown rule(s) {', '.join(unknown)}",
            hint="known: " + ", ".join(n.replace("_", "-") for n in FilterRules.names()),
        )
    return values


Violation = tuple[Reason, str] | None


def image_violation(
    rules: FilterRules, width: int, height: int, fmt: str, file_bytes: int
) -> Violation:
    """The first header rule broken by an image of this displayed size, format and file size."""
    short, long = min(width, height), max(width, height)
    pixels = width * height
    if rules.min_side is not None and short < rules.min_side:
        return Reason.TOO_SMALL, f"side={short} < min_side={rules.min_side} ({width}x{height})"
    if rules.max_side is not None and long > rules.max_side:
        return Reason.TOO_LARGE, f"side={long} > max_side={rules.max_side} ({width}x{height})"
    if rules.min_pixels is not None and pixels < rules.min_pixels:
        return Reason.TOO_SMALL, f"pixels={pixels} < min_pixels={rules.min_pixels}"
    if rules.max_pixels is not None and pixels > rules.max_pixels:
        return Reason.TOO_LARGE, f"pixels={pixels} > max_pixels={rules.max_pixels}"
    if rules.max_aspect is not None and long > rules.max_aspect * short:
        aspect = long / short
        return Reason.BAD_ASPECT, f"aspect={aspect:.4g} > max_aspect={rules.max_aspect:g}"
    if rules.min_bytes is not None and file_bytes < rules.min_bytes:
        return Reason.FILE_TOO_SMALL, f"bytes={file_bytes} < min_bytes={rules.min_bytes}"
    if rules.max_bytes is not None and file_bytes > rules.max_bytes:
        return Reason.FILE_TOO_LARGE, f"bytes={file_bytes} > max_bytes={rules.max_bytes}"
    if rules.formats is not None and fmt not in rules.formats:
        return Reason.FORMAT_NOT_ALLOWED, f"format={fmt} not in {','.join(rules.formats)}"
    return None


def token_violation(rules: FilterRules, image_tokens: int) -> Violation:
    if rules.min_tokens is not None and image_tokens < rules.min_tokens:
        return Reason.TOO_FEW_TOKENS, f"image_tokens={image_tokens} < min_tokens={rules.min_tokens}"
    if rules.max_tokens is not None and image_tokens > rules.max_tokens:
        return (
            Reason.TOO_MANY_TOKENS,
            f"image_tokens={image_tokens} > max_tokens={rules.max_tokens}",
        )
    return None


def caption_violation(
    rules: FilterRules, caption: str | None, language: tuple[str, float] | None = None
) -> Violation:
    """The first caption rule broken. With --lang, `language` is (top language, probability
    that the caption is in none of the wanted languages), from `LanguageId.outside`."""
    if caption is None or not caption.strip():
        return Reason.NO_CAPTION, "caption=null" if caption is None else f"caption={caption!r}"
    if rules.drop_mojibake and (why := mojibake(caption)):
        return Reason.MOJIBAKE, why
    n_words = len(words(caption))
    if rules.caption_min_words is not None and n_words < rules.caption_min_words:
        return Reason.CAPTION_TOO_SHORT, f"words={n_words} < min_words={rules.caption_min_words}"
    if rules.caption_max_words is not None and n_words > rules.caption_max_words:
        return Reason.CAPTION_TOO_LONG, f"words={n_words} > max_words={rules.caption_max_words}"
    chars = len(caption.strip())
    if rules.caption_min_chars is not None and chars < rules.caption_min_chars:
        return Reason.CAPTION_TOO_SHORT, f"chars={chars} < min_chars={rules.caption_min_chars}"
    if rules.lang and language is not None:
        lang, outside = language
        # A row goes only when its top language is not wanted and the model is confident it
        # is none of the wanted ones: short captions are often unsure, and an unsure English
        # caption is still English.
        if lang not in rules.lang and outside >= rules.lang_confidence:
            wanted = ",".join(rules.lang)
            return (
                Reason.WRONG_LANGUAGE,
                f"lang={lang} p_not_wanted={outside:.3f} ({wanted} wanted)",
            )
    return None


def clip_score_violation(minimum: float, score: float | None, caption: str | None) -> Violation:
    """DataComp-style CLIP-score filtering: a row goes when the cosine of its image and caption
    embeddings is below `minimum`. A row with no score cannot pass a rule that needs one: without
    a caption it goes as `no_caption` (there was nothing to score), otherwise as `no_clip_score`
    (an input whose rows were not all scored)."""
    if score is None or score != score:  # null or NaN
        if caption is None or not caption.strip():
            return Reason.NO_CAPTION, "no caption to score the image against"
        return Reason.NO_CLIP_SCORE, f"clip_score=null, min_clip_score={minimum:g}"
    if score < minimum:
        return Reason.LOW_CLIP_SCORE, f"clip_score={score:.4f} < min_clip_score={minimum:g}"
    return None
