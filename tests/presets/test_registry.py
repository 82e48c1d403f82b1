"""Invariants over the whole registry, overrides, user presets, and the CLI."""

import json
import random

import pytest
from typer.testing import CliRunner

from mmtok.cli.app import app
from mmtok.errors import MmtokError
from mmtok.presets import Layout, Refused, get_preset, list_presets, load_preset_file

PRESETS = [p.name for p in list_presets()]
rng = random.Random(0)
SIZES = [(1, 1), (1, 4000), (4000, 3), (561, 560), (336, 336)] + [
    (rng.randint(1, 6000), rng.randint(1, 6000)) for _ in range(300)
]


def test_registry_has_every_preset_the_issue_names():
    expected = {
        "llama3-336",
        "mllama",
        "llama4",
        "qwen2-vl",
        "qwen2.5-vl",
        "qwen3-vl",
        "llava-1.5",
        "llava-next",
        "llava-onevision",
        "idefics3",
        "smolvlm",
        "smolvlm2",
        "internvl",
        "pixtral",
        "mistral3",
        "gemma3",
        "chameleon",
        "emu3",
        "janus",
        "gpt-4o",
        "kimi-vl",
    }
    names = set(PRESETS) | {a for p in list_presets() for a in p.aliases}
    assert expected <= names


@pytest.mark.parametrize("name", PRESETS)
def test_layout_invariants(name):
    preset = get_preset(name)
    for w, h in SIZES:
        layout = preset.layout(w, h)
        if isinstance(layout, Refused):
            assert layout.error and (layout.width, layout.height) == (w, h)
            continue
        assert (layout.width, layout.height) == (w, h)
        assert layout.num_tiles >= 1 and layout.image_tokens >= 1 and layout.prompt_tokens >= 1
        assert min(layout.resized) >= 1
        if layout.pixel_bytes_fp32 is not None:
            assert layout.pixel_bytes_fp32 == 4 * layout.pixel_bytes_uint8 > 0
        if preset.family in ("fit_to_canvas", "internvl", "idefics3"):
            per_tile = preset.params.get("tokens_per_tile", preset.params.get("image_seq_len"))
            assert layout.image_tokens == layout.num_tiles * per_tile
        if layout.canvas and preset.family in ("fit_to_canvas", "anyres"):
            assert layout.resized[0] <= layout.canvas[0] and layout.resized[1] <= layout.canvas[1]


def test_layout_is_pure_and_repeatable():
    preset = get_preset("llava-next")
    assert preset.layout(640, 480) == preset.layout(640, 480)
    assert isinstance(preset.layout(0, 5), Refused)


def test_overrides_change_parameters_and_parse_types():
    assert get_preset("qwen2-vl:max_pixels=1003520").layout(1920, 1080).image_tokens == 1222
    assert get_preset("qwen2-vl:max_pixels=1e6").params["max_pixels"] == 1_000_000
    assert get_preset("gemma3:pan_and_scan=true").layout(3000, 600).num_tiles == 5
    assert get_preset("mllama:max_tiles=9,tile_size=448").params == {
        **get_preset("mllama").params,
        "max_tiles": 9,
        "tile_size": 448,
    }
    assert get_preset("mllama").params["max_tiles"] == 4  # overrides never leak into the registry


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nope", "unknown preset"),
        ("mllama:tiles=3", "no parameter"),
        ("mllama:max_tiles=four", "expected int"),
        ("gemma3:pan_and_scan=maybe", "expected bool"),
        ("mllama:max_tiles", "bad preset override"),
    ],
)
def test_bad_specs_are_clear_errors(spec, message):
    with pytest.raises(MmtokError, match=message):
        get_preset(spec)


def test_user_preset_file_needs_no_code(tmp_path, scratch_registry):
    path = tmp_path / "mine.toml"
    path.write_text('[fit-448]\nbase = "mllama"\ntile_size = 448\ntokens_per_tile = 1025\n')
    (preset,) = load_preset_file(str(path))
    layout = get_preset("fit-448").layout(900, 448)
    assert (
        preset.family == "fit_to_canvas"
        and layout.grid == (1, 3)
        and layout.image_tokens == 3 * 1025
    )
    path.write_text("[broken]\ntile_size = 1\n")
    with pytest.raises(MmtokError, match="needs base"):
        load_preset_file(str(path))


runner = CliRunner()


def test_layout_cli_args_and_stdin_in_order():
    result = runner.invoke(app, ["layout", "mllama", "1920x1080", "201x1"])
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.exit_code == 0 and [r["image_tokens"] for r in rows] == [6404, 1601]
    assert (
        rows[0]["preset"] == "mllama"
        and rows[0]["resized"] == [1120, 630]
        and rows[0]["grid"] == [2, 2]
    )
    result = runner.invoke(app, ["layout", "qwen2-vl"], input="640x480\n\n201x1\n")
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert rows == [
        {**rows[0], "image_tokens": 391},
        {"width": 201, "height": 1, "error": rows[1]["error"]},
    ]


def test_layout_cli_errors_are_messages():
    result = runner.invoke(app, ["layout", "mllama", "12"])
    assert (
        result.exit_code == 2 and "not a size" in result.stderr and "Traceback" not in result.output
    )


def test_presets_cli_lists_json(tmp_path):
    result = runner.invoke(app, ["presets", "--json"])
    names = [json.loads(line)["name"] for line in result.stdout.splitlines()]
    assert result.exit_code == 0 and names == PRESETS
    assert isinstance(get_preset("mllama").layout(5, 5), Layout)
