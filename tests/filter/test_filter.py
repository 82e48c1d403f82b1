"""mmtok filter: each rule at its boundary, recipes, dry runs, languages, row accounting."""

import json

import pyarrow.parquet as pq
import pytest
from conftest import encode, photo, write_jsonl
from typer.testing import CliRunner

from mmtok.cli.app import app
from mmtok.errors import MmtokError
from mmtok.filters import FilterRules, caption_violation, image_violation, load_recipe
from mmtok.presets import get_preset
from mmtok.text.caption import LanguageId, mojibake, words

runner = CliRunner()


def rules(**kw) -> FilterRules:
    return FilterRules.build({}, kw)


def reason(violation):
    return None if violation is None else violation[0]


@pytest.mark.parametrize(
    ("rule", "value", "size", "fmt", "nbytes", "expected"),
    [
        ("min_side", 64, (64, 500), "jpeg", 1000, None),
        ("min_side", 64, (500, 63), "jpeg", 1000, "too_small"),
        ("max_side", 1000, (1000, 10), "jpeg", 1000, None),
        ("max_side", 1000, (1001, 10), "jpeg", 1000, "too_large"),
        ("min_pixels", 100, (10, 10), "jpeg", 1000, None),
        ("min_pixels", 100, (9, 11), "jpeg", 1000, "too_small"),
        ("max_pixels", 100, (10, 10), "jpeg", 1000, None),
        ("max_pixels", 100, (101, 1), "jpeg", 1000, "too_large"),
        ("max_aspect", 4.0, (400, 100), "jpeg", 1000, None),
        ("max_aspect", 4.0, (100, 401), "jpeg", 1000, "bad_aspect"),
        ("min_bytes", 1000, (10, 10), "jpeg", 1000, None),
        ("min_bytes", 1000, (10, 10), "jpeg", 999, "file_too_small"),
        ("max_bytes", 1000, (10, 10), "jpeg", 1000, None),
        ("max_bytes", 1000, (10, 10), "jpeg", 1001, "file_too_large"),
        ("formats", "jpg,png", (10, 10), "jpeg", 1, None),
        ("formats", "jpg,png", (10, 10), "gif", 1, "format_not_allowed"),
    ],
)
def test_image_rules_at_their_boundaries(rule, value, size, fmt, nbytes, expected):
    assert reason(image_violation(rules(**{rule: value}), *size, fmt, nbytes)) == expected


def test_messages_carry_the_measured_value():
    r = image_violation(rules(min_side=64), 12, 80, "jpeg", 10)
    assert r[1] == "side=12 < min_side=64 (12x80)"
    assert caption_violation(rules(caption_min_words=3), "two words")[1] == (
        "words=2 < min_words=3"
    )


@pytest.mark.parametrize(
    ("rule", "value", "caption", "expected"),
    [
        ("require_caption", True, None, "no_caption"),
        ("require_caption", True, "  ", "no_caption"),
        ("require_caption", True, "a", None),
        ("caption_min_words", 3, "one two three", None),
        ("caption_min_words", 3, "one two", "caption_too_short"),
        ("caption_min_words", 3, "一只狗", None),  # one word per CJK character
        ("caption_max_words", 3, "one two three", None),
        ("caption_max_words", 3, "one two three four", "caption_too_long"),
        ("caption_min_chars", 5, "abcde", None),
        ("caption_min_chars", 5, " abcd ", "caption_too_short"),
        ("drop_mojibake", True, "naïve café", None),
        ("drop_mojibake", True, "cafÃ© au lait", "mojibake"),
        ("drop_mojibake", True, "donâ€™t stop", "mojibake"),
        ("drop_mojibake", True, "a broken \ufffd char", "mojibake"),
    ],
)
def test_caption_rules_at_their_boundaries(rule, value, caption, expected):
    assert reason(caption_violation(rules(**{rule: value}), caption)) == expected


def test_words_split_spaceless_scripts_per_character():
    assert words("a red  car") == ["a", "red", "car"]
    assert words("夕暮れの犬 dog") == ["夕", "暮", "れ", "の", "犬", "dog"]
    assert mojibake("Straße 日本語") is None


LANGUAGES = {
    "en": "A brown dog running along the beach at sunset",
    "de": "Ein brauner Hund läuft bei Sonnenuntergang am Strand entlang",
    "zh": "一只棕色的狗在日落时分沿着海滩奔跑",
    "ja": "夕暮れの浜辺を走る茶色の犬",
    "ar": "كلب بني يجري على طول الشاطئ عند غروب الشمس",
    "ko": "해질녘 해변을 따라 달리는 갈색 개",
    "hi": "सूर्यास्त के समय समुद्र तट पर दौड़ता हुआ एक भूरा कुत्ता",
    "ru": "Коричневая собака бежит по пляжу на закате солнца",
}


def test_languages_in_several_scripts_are_identified():
    ident = LanguageId().setup()
    for lang, text in LANGUAGES.items():
        assert ident.classify(text)[0] == lang, text


def test_lang_drops_only_confident_other_languages():
    ident = LanguageId().setup()
    keep_en = rules(lang="en")
    for lang, text in LANGUAGES.items():
        got = caption_violation(keep_en, text, ident.outside(text, ("en",)))
        assert reason(got) == (None if lang == "en" else "wrong_language"), text
    # unsure identification of a short caption keeps the row
    assert caption_violation(keep_en, "red car", ("it", 0.2)) is None
    assert reason(caption_violation(rules(lang="en,zh"), LANGUAGES["ja"], ("ja", 0.99))) == (
        "wrong_language"
    )


def test_recipe_and_flag_override(tmp_path):
    recipe = tmp_path / "filter.toml"
    recipe.write_text('min-side = 64\nformats = ["jpeg", "png"]\n')
    values = load_recipe(str(recipe))
    assert FilterRules.build(values, {"min_side": 32}).min_side == 32
    assert FilterRules.build(values, {"min_side": None}).formats == ("jpeg", "png")
    (tmp_path / "bad.toml").write_text("min-sides = 3\n")
    with pytest.raises(MmtokError, match="unknown rule"):
        load_recipe(str(tmp_path / "bad.toml"))
    with pytest.raises(MmtokError, match="need --preset"):
        rules(max_tokens=3)
    with pytest.raises(MmtokError, match="every row would go"):
        rules(min_side=10, max_side=5)


@pytest.fixture
def pairs(tmp_path):
    """Rows with known fates under the rules of `RULES`."""
    images = {
        "ok": encode(photo(320, 240), "JPEG"),
        "tiny": encode(photo(40, 40), "JPEG"),
        "strip": encode(photo(800, 100), "JPEG"),
        "png": encode(photo(320, 240), "PNG"),
        "big": encode(photo(1600, 1200), "JPEG"),
    }
    for name, data in images.items():
        (tmp_path / f"{name}.img").write_bytes(data)
    truncated = images["ok"][: len(images["ok"]) // 2]
    (tmp_path / "cut.img").write_bytes(truncated)
    rows = [
        ("ok", "A brown dog running along the beach", None),
        ("tiny", "A brown dog running along the beach", "too_small"),
        ("strip", "A brown dog running along the beach", "bad_aspect"),
        ("png", "A brown dog running along the beach", "format_not_allowed"),
        ("big", "A brown dog running along the beach", "too_many_tokens"),
        ("ok", "dog", "caption_too_short"),
        ("ok", None, "no_caption"),
        ("ok", LANGUAGES["zh"], "wrong_language"),
        ("ok", "cafÃ© with a croissant on the table", "mojibake"),
        ("missing", "A brown dog running along the beach", "missing_file"),
        ("cut", "A brown dog running along the beach", "truncated"),
    ]
    data = [
        {"id": f"r{i}", "image": f"{name}.img", "caption": caption}
        for i, (name, caption, _) in enumerate(rows)
    ]
    return write_jsonl(tmp_path / "in.jsonl", data), {
        f"r{i}": r for i, (_, _, r) in enumerate(rows)
    }


RULES = [
    "--min-side", "64", "--max-aspect", "4", "--formats", "jpeg", "--decode-check",
    "--preset", "qwen2-vl", "--max-tokens", "1000",
    "--caption-min-words", "3", "--lang", "en", "--drop-mojibake",
]  # fmt: skip


def test_filter_end_to_end(pairs, tmp_path):
    source, fates = pairs
    # the token boundary really sits between the two sizes
    qwen = get_preset("qwen2-vl")
    assert qwen.layout(320, 240).image_tokens <= 1000 < qwen.layout(1600, 1200).image_tokens
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["filter", str(source), "-o", str(out), *RULES, "-w", "2", "--json"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    kept = pq.read_table(out / "part-00000.parquet").column("id").to_pylist()
    rejects = pq.read_table(out / "__mmtok__" / "rejects.parquet").to_pylist()
    assert kept == [i for i, r in fates.items() if r is None]
    assert {r["id"]: r["reason"] for r in rejects} == {i: r for i, r in fates.items() if r}
    assert doc["counts"]["in"] == len(kept) + len(rejects) == len(fates)
    message = {r["id"]: r["message"] for r in rejects}
    assert message["r1"].startswith("side=40 < min_side=64")
    assert message["r7"].startswith("lang=zh p_not_wanted=")
    manifest = json.loads((out / "__mmtok__" / "manifest.json").read_text())
    stage = next(s for s in manifest["stages"] if s["stage"] == "filter")
    assert stage["rules"]["max_tokens"] == 1000 and stage["rules"]["lang"] == ["en"]


def test_dry_run_writes_nothing_and_counts_by_reason(pairs, tmp_path):
    source, fates = pairs
    recipe = tmp_path / "filter.toml"
    recipe.write_text("min-side = 64\nmax-aspect = 4.0\n")
    out = tmp_path / "never"
    args = ["filter", str(source), "--recipe", str(recipe), "--dry-run", "-o", str(out), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert not out.exists()
    assert doc["dry_run"] and doc["rules"] == {"min_side": 64, "max_aspect": 4.0}
    by_reason = doc["counts"]["rejected_by_reason"]
    assert by_reason == {"too_small": 1, "bad_aspect": 1, "missing_file": 1}
    assert doc["counts"]["out"] == len(fates) - 3
    table = runner.invoke(app, ["filter", str(source), "--recipe", str(recipe), "--dry-run"])
    assert "dry run" in table.output and "too_small" in table.output


def test_filter_cli_errors(pairs):
    source, _ = pairs
    for args, message in (
        ([], "no rule given"),
        (["--min-side", "3"], "give -o DIR"),
        (["--max-tokens", "3", "--dry-run"], "need --preset"),
        (["--recipe", "nope.toml", "--dry-run"], "no such recipe"),
    ):
        result = runner.invoke(app, ["filter", str(source), *args])
        assert result.exit_code == 2, result.output
        assert message in result.output
