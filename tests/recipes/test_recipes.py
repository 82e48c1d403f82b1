"""`mmtok run`: a recipe equals its steps run as separate commands; `--print-recipe` prints a
recipe that runs the same command; a bad key or value is one line naming the step and the key,
said before any data is read."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import photo, write_jsonl
from typer.testing import CliRunner

from mmtok import recipes
from mmtok.cli.app import app
from mmtok.commands import options_class

runner = CliRunner()


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    """Rows each step acts on: too small, short caption, missing file, exact and resized
    duplicates, and rows that pass everything."""
    d = tmp_path_factory.mktemp("recipe")
    rows = []
    for i, (w, h) in enumerate([(320, 240), (40, 30), (640, 480), (200, 900), (333, 222)]):
        photo(w, h, seed=i).save(d / f"img{i}.jpg", quality=90)
        rows.append({"image": str(d / f"img{i}.jpg"), "caption": f"a photo number {i} here"})
    photo(640, 480, seed=2).resize((320, 240)).save(d / "img2_small.jpg", quality=90)
    rows += [
        {"image": str(d / "img0.jpg"), "caption": "the same photo again"},
        {"image": str(d / "img2_small.jpg"), "caption": "a resized copy of it"},
        {"image": str(d / "missing.jpg"), "caption": "a row without its file"},
        {"image": str(d / "img4.jpg"), "caption": "x"},
    ]
    return write_jsonl(d / "pairs.jsonl", rows)


def invoke(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def rows_of(folder: Path) -> pa.Table:
    parts = sorted(folder.glob("part-*.parquet"))
    return pa.concat_tables([pq.read_table(p) for p in parts])


def rejects_of(*folders: Path) -> set[tuple]:
    found = set()
    for folder in folders:
        t = pq.read_table(folder / "__mmtok__" / "rejects.parquet")
        cols = [t.column(c).to_pylist() for c in ("id", "stage", "reason", "message")]
        found |= set(zip(*cols, strict=True))
    return found


def without_timing(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k not in ("timing", "output")}


RECIPE = """
inputs = ["{inputs}"]
output = "{output}"
workers = 1

[[steps]]
command = "filter"
min-side = 64
caption_min_words = 2

[[steps]]
command = "dedup"

[[steps]]
command = "tile"
preset = "qwen2-vl"

[[steps]]
command = "estimate-budget"
preset = "qwen2-vl"
"""


def test_a_recipe_equals_its_steps_run_as_separate_commands(pairs, tmp_path):
    a, b, c, d = (tmp_path / n for n in ("filtered", "unique", "tiled", "budget"))
    invoke("filter", pairs, "-o", a, "--min-side", 64, "--caption-min-words", 2, "-w", 1)
    invoke("dedup", a, "-o", b, "-w", 1)
    invoke("tile", b, "-p", "qwen2-vl", "-o", c, "-w", 1)
    budget = json.loads(
        invoke("estimate-budget", c, "-p", "qwen2-vl", "-o", d, "-w", 1, "--json").stdout
    )

    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE.format(inputs=pairs, output=tmp_path / "out"))
    doc = json.loads(invoke("run", recipe, "--json").stdout)

    out = tmp_path / "out"
    separate, together = rows_of(d), rows_of(out)
    assert together.column_names == separate.column_names
    assert together.equals(separate)  # values and order
    assert rejects_of(out) == rejects_of(a, b, c, d)
    reasons = doc["counts"]["rejected_by_reason"]
    duplicates = reasons.pop("duplicate")
    assert reasons == {"too_small": 1, "caption_too_short": 1, "missing_file": 1}
    assert duplicates >= 2  # the exact and the resized copy (at least)
    assert doc["counts"]["in"] == 9 and doc["counts"]["out"] == together.num_rows == 6 - duplicates
    steps = {s["command"]: s for s in doc["steps"]}
    # the same figures; only `rejected` counts the recipe's earlier steps' rejects too
    figures = steps["estimate-budget"]["presets"]["qwen2-vl"]
    assert figures.pop("rejected") == doc["counts"]["rejected"]
    expected = dict(budget["presets"]["qwen2-vl"])
    expected.pop("rejected")
    assert figures == expected
    assert steps["dedup"]["duplicates_removed"] == duplicates
    assert (out / "__mmtok__" / "clusters.parquet").exists()
    assert json.loads((out / "__mmtok__" / "budget.json").read_text())["presets"]
    manifest = json.loads((out / "__mmtok__" / "manifest.json").read_text())
    assert manifest["recipe"] == recipes.load(recipe).to_dict()  # the manifest records it
    assert manifest["recipe"]["steps"][0] == {
        "command": "filter",
        "min_side": 64,
        "caption_min_words": 2,
    }


def test_one_pass_without_dedup_and_overrides_from_the_command_line(pairs, tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        '[[steps]]\ncommand = "filter"\nmin_side = 64\n\n'
        '[[steps]]\ncommand = "tile"\npreset = "qwen2-vl"\n'
    )
    doc = json.loads(invoke("run", recipe, pairs, "-o", tmp_path / "out", "--json").stdout)
    assert doc["counts"]["rejected_by_reason"] == {"missing_file": 1, "too_small": 1}
    tile = doc["steps"][1]
    assert tile["images"] == doc["counts"]["out"] == 7
    assert "image_tokens" in rows_of(tmp_path / "out").column_names


COMMAND_LINES = {
    "probe": ["--decode-check", "--max-pixels", "1000000", "-w", "2"],
    "filter": ["--min-side", "64", "--lang", "en,de", "--formats", "jpeg", "--dry-run"],
    "dedup": ["--by", "pair", "--keep", "first", "--max-distance", "4", "--against", "x.jsonl"],
    "tile": ["-p", "qwen2-vl:max_pixels=1003520", "--no-exif", "--shard-rows", "10"],
    "estimate-budget": ["-p", "qwen2-vl", "-p", "mllama", "--context", "8192", "--suggest"],
    "sample-frames": ["--fps", "2", "--max-frames", "8", "--video-col", "path", "--timeout", "30"],
    "tokenize-images": ["--checkpoint", "vq.pt", "-t", "chameleon", "--emit", "bin", "--boi", "1"],
    "detokenize": ["--checkpoint", "vq.pt", "--config", "vq.json", "--precision", "bf16"],
}


@pytest.mark.parametrize("command", COMMAND_LINES)
def test_print_recipe_round_trips(command, tmp_path):
    args = [command, "in.jsonl", "-o", str(tmp_path / "out"), *COMMAND_LINES[command]]
    result = runner.invoke(app, [*args, "--print-recipe"])
    assert result.exit_code == 0, result.output
    printed = tomllib.loads(result.stdout)
    assert printed["steps"][0]["command"] == command
    assert not (tmp_path / "out").exists()
    [opts] = recipes.load(printed).options()
    assert isinstance(opts, options_class(command))
    # printed again from the loaded options: the same text, so nothing was lost or added
    assert recipes.dumps(recipes.from_options(opts)) == result.stdout
    assert opts.inputs == ["in.jsonl"] and opts.output == str(tmp_path / "out")


def test_print_recipe_names_only_what_differs_from_the_defaults():
    result = runner.invoke(
        app, ["dedup", "a.jsonl", "-o", "u", "--by", "pair", "-w", "3", "--print-recipe"]
    )
    assert result.exit_code == 0, result.output
    assert tomllib.loads(result.stdout) == {
        "inputs": ["a.jsonl"],
        "output": "u",
        "workers": 3,
        "steps": [{"command": "dedup", "by": "pair"}],
    }


def test_a_printed_recipe_runs_the_same_command(pairs, tmp_path):
    flags = ["--min-side", "64", "--caption-min-words", "2", "-w", "1"]
    invoke("filter", pairs, "-o", tmp_path / "direct", *flags)
    printed = invoke("filter", pairs, "-o", tmp_path / "via", *flags, "--print-recipe").stdout
    (tmp_path / "r.toml").write_text(printed)
    invoke("run", tmp_path / "r.toml")
    assert rows_of(tmp_path / "via").equals(rows_of(tmp_path / "direct"))
    assert rejects_of(tmp_path / "via") == rejects_of(tmp_path / "direct")


BAD = [
    ('[[steps]]\ncommand = "dedup"\nmax_dist = 3\n', "step 1 (dedup)", "max_dist"),
    (
        '[[steps]]\ncommand = "filter"\nmin_side = 64\n[[steps]]\ncommand = "dedup"\n'
        "max_distance = 20\n",
        "step 2 (dedup)",
        "max_distance",
    ),
    ('[[steps]]\ncommand = "dedup"\nby = "colour"\n', "step 1 (dedup)", "by"),
    ('[[steps]]\ncommand = "filter"\nmin_side = "big"\n', "step 1 (filter)", "min_side"),
    ('[[steps]]\ncommand = "tile"\n', "step 1 (tile)", "preset"),
    ('[[steps]]\ncommand = "tile"\npreset = "no-such-model"\n', "step 1 (tile)", "no-such"),
    ('[[steps]]\ncommand = "frobnicate"\n', "step 1", "frobnicate"),
    ('[[steps]]\ncommand = "filter"\nworkers = 2\nmin_side = 3\n', "step 1 (filter)", "workers"),
    ('wrokers = 2\n[[steps]]\ncommand = "filter"\nmin_side = 3\n', "top-level", "wrokers"),
    ('[[steps]]\ncommand = "filter"\n', "step 1 (filter)", "no rule"),
    ('image_col = "picture"\n', "no steps", "[[steps]]"),
]


@pytest.mark.parametrize(("text", "where", "key"), BAD)
def test_a_bad_key_or_value_is_one_line_before_any_data_is_read(pairs, tmp_path, text, where, key):
    recipe = tmp_path / "bad.toml"
    recipe.write_text(f'inputs = ["{pairs}"]\noutput = "{tmp_path / "out"}"\n' + text)
    result = runner.invoke(app, ["run", str(recipe)])
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert where in result.stderr and key in result.stderr, result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_embed_must_be_the_last_step(pairs, tmp_path):
    recipe = recipes.load(
        {
            "inputs": [str(pairs)],
            "steps": [
                {"command": "embed", "model": "ViT-B-32"},
                {"command": "filter", "min_side": 64},
            ],
        }
    )
    with pytest.raises(recipes.RecipeError, match="last step"):
        recipes.plan(recipe)
