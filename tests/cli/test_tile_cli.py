import json
import pickle

import pyarrow.parquet as pq
from conftest import write_jsonl
from typer.testing import CliRunner

from mmtok.cli.app import app
from mmtok.presets import get_preset
from mmtok.stages.layout import LayoutStage

runner = CliRunner()


def tile_rows(tmp_path, image_files, names, *args):
    source = write_jsonl(
        tmp_path / "in.jsonl", [{"image": str(image_files[n]), "caption": n} for n in names]
    )
    out = tmp_path / "out"
    result = runner.invoke(app, ["tile", str(source), "-o", str(out), "--json", "-w", "1", *args])
    assert result.exit_code == 0, result.output
    rows = {r["caption"]: r for r in pq.read_table(out / "part-00000.parquet").to_pylist()}
    rejects = pq.read_table(out / "rejects.parquet").to_pylist()
    return json.loads(result.stdout), rows, rejects


def test_tile_adds_the_same_layout_as_mmtok_layout(tmp_path, image_files):
    names = ["baseline_640x480.jpg", "strip_4000x3.png", "tiny_1x1.png", "photo_100x50.webp"]
    doc, rows, rejects = tile_rows(tmp_path, image_files, names, "--preset", "internvl")
    assert doc["counts"]["in"] == 4 == doc["counts"]["out"] and rejects == []
    preset = get_preset("internvl")
    for row in rows.values():
        layout = preset.layout(row["width"], row["height"])
        assert (row["resized_width"], row["resized_height"]) == layout.resized
        assert (row["grid_rows"], row["grid_cols"], row["num_tiles"]) == (
            *layout.grid,
            layout.num_tiles,
        )
        assert (row["image_tokens"], row["prompt_tokens"]) == (
            layout.image_tokens,
            layout.prompt_tokens,
        )
        assert row["pixel_bytes_fp32"] == layout.pixel_bytes_fp32 and row["preset"] == "internvl"
    assert (
        doc["total_image_tokens"]
        == sum(r["image_tokens"] for r in rows.values())
        == 3328 + 3328 + 256 + 768
    )


def test_exif_rotation_is_applied_unless_asked_not_to(tmp_path, image_files):
    _, rows, _ = tile_rows(tmp_path, image_files, ["exif6_640x480.jpg"], "--preset", "mllama")
    row = rows["exif6_640x480.jpg"]
    assert (row["width"], row["height"]) == (640, 480)  # as stored
    assert (row["canvas_width"], row["canvas_height"]) == (560, 1120)  # laid out as 480x640
    (tmp_path / "no").mkdir()
    _, rows, _ = tile_rows(
        tmp_path / "no", image_files, ["exif6_640x480.jpg"], "--preset", "mllama", "--no-exif"
    )
    assert (
        rows["exif6_640x480.jpg"]["canvas_width"],
        rows["exif6_640x480.jpg"]["canvas_height"],
    ) == (1120, 560)


def test_sizes_the_model_refuses_are_rejects(tmp_path, image_files):
    names = ["strip_4000x3.png", "baseline_640x480.jpg", "empty.jpg"]
    doc, rows, rejects = tile_rows(tmp_path, image_files, names, "--preset", "qwen2-vl")
    assert (
        list(rows) == ["baseline_640x480.jpg"]
        and rows["baseline_640x480.jpg"]["image_tokens"] == 391
    )
    reasons = {r["caption"]: (r["stage"], r["reason"]) for r in rejects}
    assert reasons == {
        "strip_4000x3.png": ("layout", "model_refuses"),
        "empty.jpg": ("probe", "empty_file"),
    }
    assert doc["counts"]["in"] == 3 == doc["counts"]["out"] + doc["counts"]["rejected"]


def test_user_preset_from_toml_reaches_workers(tmp_path, image_files, scratch_registry):
    toml = tmp_path / "mine.toml"
    toml.write_text('[wide-448]\nbase = "mllama"\ntile_size = 448\ntokens_per_tile = 1025\n')
    doc, rows, _ = tile_rows(
        tmp_path,
        image_files,
        ["baseline_640x480.jpg"],
        "--preset",
        "wide-448",
        "--preset-file",
        str(toml),
    )
    assert (
        rows["baseline_640x480.jpg"]["image_tokens"] == 4 * 1025
    )  # 2x2 canvas: 1x2 would shrink it
    stage = pickle.loads(
        pickle.dumps(LayoutStage(get_preset("wide-448")))
    )  # what a spawn worker receives
    assert stage.preset.layout(640, 480).image_tokens == 4 * 1025


def test_unknown_preset_is_a_message(tmp_path, image_files):
    source = write_jsonl(tmp_path / "in.jsonl", [{"image": str(image_files["tiny_1x1.png"])}])
    result = runner.invoke(app, ["tile", str(source), "--preset", "gpt-5"])
    assert result.exit_code == 2 and "unknown preset" in result.stderr
