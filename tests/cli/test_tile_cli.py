import io
import json
import pickle

import numpy as np
import pyarrow.parquet as pq
from conftest import write_jsonl
from PIL import Image
from typer.testing import CliRunner

from mmtok.cli.app import app
from mmtok.images import decode_image
from mmtok.presets import get_preset
from mmtok.presets.pixels import render_tiles
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
    rejects = pq.read_table(out / "__mmtok__" / "rejects.parquet").to_pylist()
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


def emitted(rows, name, fmt):
    """The tiles of one row as HWC uint8 arrays."""
    out = []
    for t in rows[name]["tiles"]:
        if fmt == "raw":
            out.append(np.frombuffer(t["data"], np.uint8).reshape(t["height"], t["width"], 3))
        else:
            out.append(np.asarray(Image.open(io.BytesIO(t["data"]))))
    return out


def test_emit_tiles_writes_the_pixels_png_and_raw_alike(tmp_path, image_files):
    names = ["baseline_640x480.jpg", "exif6_640x480.jpg", "palette_alpha_30x20.png", "tiny_1x1.png"]
    (tmp_path / "png").mkdir()
    (tmp_path / "raw").mkdir()
    _, png_rows, _ = tile_rows(
        tmp_path / "png", image_files, names, "--preset", "internvl", "--emit", "tiles"
    )
    doc, raw_rows, rejects = tile_rows(
        tmp_path / "raw",
        image_files,
        names,
        "--preset",
        "internvl",
        "--emit",
        "tiles",
        "--tile-format",
        "raw",
    )
    assert rejects == [] and doc["emit"] == "tiles" and doc["tile_format"] == "raw"
    preset = get_preset("internvl")
    for name in names:
        row = raw_rows[name]
        assert len(row["tiles"]) == row["num_tiles"]
        png, raw = emitted(png_rows, name, "png"), emitted(raw_rows, name, "raw")
        assert all(np.array_equal(a, b) for a, b in zip(png, raw, strict=True))
        # the same pixels as rendering the decoded image directly
        image = decode_image(str(image_files[name]), alpha="white")
        layout = preset.layout(*image.size)
        expected = render_tiles(image, layout, preset.family, preset.params, preset.pixels)
        pairs = zip(expected, raw, strict=True)
        assert all(np.array_equal(np.asarray(e.image), g) for e, g in pairs)
    # EXIF 6: the stored 640x480 is shown as 480x640, whose exact ratio is 3 cols x 4 rows
    exif = raw_rows["exif6_640x480.jpg"]
    assert (exif["grid_rows"], exif["grid_cols"], exif["num_tiles"]) == (4, 3, 13)
    manifest = json.loads((tmp_path / "raw" / "out" / "__mmtok__" / "manifest.json").read_text())
    tiles_stage = manifest["stages"][-1]
    assert tiles_stage["stage"] == "tiles" and tiles_stage["tile_format"] == "raw"
    assert tiles_stage["pixels"] == {"resample": "bicubic"}
    # pixels get their own codec, recorded per column chunk; the other columns keep zstd
    for fmt, pixel_codec in (("raw", "LZ4"), ("png", "UNCOMPRESSED")):
        codecs = column_codecs(tmp_path / fmt / "out" / "part-00000.parquet")
        assert {c for p, c in codecs.items() if p.startswith("tiles.")} == {pixel_codec}
        assert {c for p, c in codecs.items() if not p.startswith("tiles.")} == {"ZSTD"}


def column_codecs(path) -> dict[str, str]:
    group = pq.ParquetFile(path).metadata.row_group(0)
    return {
        group.column(i).path_in_schema: group.column(i).compression
        for i in range(group.num_columns)
    }


def test_emit_tiles_rejects_what_only_a_decode_finds(tmp_path, image_files):
    names = ["truncated_640x480.jpg", "baseline_640x480.jpg", "empty.jpg", "strip_4000x3.png"]
    doc, rows, rejects = tile_rows(
        tmp_path, image_files, names, "--preset", "qwen2-vl", "--emit", "tiles"
    )
    assert list(rows) == ["baseline_640x480.jpg"]
    assert {r["caption"]: (r["stage"], r["reason"]) for r in rejects} == {
        "truncated_640x480.jpg": ("tiles", "truncated"),  # the header probe cannot see it
        "empty.jpg": ("probe", "empty_file"),
        "strip_4000x3.png": ("layout", "model_refuses"),
    }
    assert doc["counts"]["in"] == 4 == doc["counts"]["out"] + doc["counts"]["rejected"]


def test_emit_tiles_needs_a_folder_and_a_pixel_pipeline(tmp_path, image_files):
    source = write_jsonl(tmp_path / "in.jsonl", [{"image": str(image_files["tiny_1x1.png"])}])
    result = runner.invoke(app, ["tile", str(source), "--preset", "mllama", "--emit", "tiles"])
    assert result.exit_code == 2 and "-o DIR" in result.stderr
    out = str(tmp_path / "o")
    result = runner.invoke(
        app, ["tile", str(source), "--preset", "gpt-4o", "--emit", "tiles", "-o", out]
    )
    assert result.exit_code == 2 and "no published pixel pipeline" in result.stderr


def test_tiles_array_round_trips_rows_of_any_number_of_tiles():
    from mmtok.stages.tiles import tiles_array

    def tile(data: bytes) -> dict:
        return {"kind": "tile", "row": 1, "col": 2, "width": len(data), "height": 1, "data": data}

    rows = [[tile(b"abc"), tile(b"")], [], [tile(bytes(range(256)))]]
    column = tiles_array(rows)
    column.validate(full=True)
    assert column.to_pylist() == rows
    assert tiles_array([]).to_pylist() == []
