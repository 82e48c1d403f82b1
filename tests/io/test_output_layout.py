"""Every command's output folder loads as exactly its kept rows in the tools people use, with no
options (issue 12.2): Hugging Face `datasets` (images as PIL images), pandas, polars, DuckDB and
pyarrow. Side outputs sit in `__mmtok__/`, which none of them reads as rows."""

import json
import shutil
from pathlib import Path

import pytest
from conftest import encode, photo, write_jsonl
from typer.testing import CliRunner

from mmtok.cli.app import app
from mmtok.io.layout import MANIFEST_FILE, SIDE_DIR

runner = CliRunner()


@pytest.fixture(autouse=True)
def _offline_datasets(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))


@pytest.fixture
def rows_jsonl(tmp_path) -> Path:
    """Photos by path, one duplicate (for dedup), one unreadable file (a reject)."""
    folder = tmp_path / "images"
    folder.mkdir()
    rows = []
    for i in range(5):
        path = folder / f"p{i}.jpg"
        path.write_bytes(encode(photo(64 + 8 * i, 48, seed=i), "JPEG"))
        rows.append({"image": str(path), "caption": f"photo number {i}"})
    rows.append({"image": rows[0]["image"], "caption": "the first photo again"})
    (folder / "bad.jpg").write_bytes(b"<html>")
    rows.append({"image": str(folder / "bad.jpg"), "caption": "not an image"})
    return write_jsonl(tmp_path / "rows.jsonl", rows)


COMMANDS = {
    "probe": ["probe"],
    "filter": ["filter", "--min-side", "8"],
    "dedup": ["dedup"],
    "tile": ["tile", "--preset", "qwen2-vl"],
    "estimate-budget": ["estimate-budget", "--preset", "qwen2-vl"],
}


def mmtok(*args: str) -> None:
    result = runner.invoke(app, [*args, "-w", "1", "-q"])
    assert result.exit_code == 0, result.output


def kept_ids(out: Path) -> list[str]:
    import pyarrow.parquet as pq

    manifest = json.loads((out / SIDE_DIR / MANIFEST_FILE).read_text())
    parts = [f["name"] for f in manifest["files"] if f["kind"] == "rows"]
    return sorted(i for p in parts for i in pq.read_table(out / p).column("id").to_pylist())


def assert_every_tool_reads_the_kept_rows(out: Path) -> None:
    import datasets
    import duckdb
    import pandas
    import polars
    import pyarrow.dataset
    from PIL import Image

    expected = kept_ids(out)
    assert expected
    hf = datasets.load_dataset(str(out), split="train")
    assert sorted(hf["id"]) == expected
    assert isinstance(hf.features["image"], datasets.Image)
    assert isinstance(hf[0]["image"], Image.Image) and hf[0]["image"].size[0] >= 64
    hf_dir = datasets.load_dataset("parquet", data_dir=str(out), split="train")
    assert sorted(hf_dir["id"]) == expected
    assert sorted(pandas.read_parquet(out)["id"]) == expected
    assert sorted(polars.scan_parquet(f"{out}/*.parquet").collect()["id"].to_list()) == expected
    count = duckdb.sql(f"select count(*) from read_parquet('{out}/*.parquet')").fetchall()
    assert count == [(len(expected),)]
    assert sorted(pyarrow.dataset.dataset(out).to_table()["id"].to_pylist()) == expected


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_commands_output_loads_as_its_kept_rows(rows_jsonl, tmp_path, command):
    out = tmp_path / "out"
    mmtok(*COMMANDS[command], str(rows_jsonl), "-o", str(out))
    assert {p.name for p in out.iterdir() if p.is_file()} == {"part-00000.parquet"}
    side = {p.name for p in (out / SIDE_DIR).iterdir()}
    assert {"manifest.json", "rejects.parquet"} <= side
    if command == "dedup":
        assert "clusters.parquet" in side
    if command == "estimate-budget":
        assert "budget.json" in side
    assert_every_tool_reads_the_kept_rows(out)
    # mmtok reads its own output as input, and so does the next command
    mmtok("probe", str(out), "-o", str(tmp_path / "again"))
    assert kept_ids(tmp_path / "again") == kept_ids(out)


def test_image_bytes_makes_a_folder_that_can_move(rows_jsonl, tmp_path):
    """--image-bytes with -o DIR: the shards hold the encoded images, so the folder still loads
    with images after it moved and the original files are gone."""
    out = tmp_path / "out"
    mmtok("probe", str(rows_jsonl), "-o", str(out), "--image-bytes")
    moved = tmp_path / "elsewhere" / "dataset"
    shutil.move(out, moved)
    shutil.rmtree(tmp_path / "images")
    assert_every_tool_reads_the_kept_rows(moved)
    mmtok("probe", str(moved), "--decode-check", "-o", str(tmp_path / "again"))
    assert kept_ids(tmp_path / "again") == kept_ids(moved)


def test_a_hugging_face_input_keeps_its_features(tmp_path):
    import datasets

    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f"p{i}.png"))
        (tmp_path / f"p{i}.png").write_bytes(encode(photo(70, 50, seed=i), "PNG"))
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "caption": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["cat", "dog"]),
        }
    )
    source = datasets.Dataset.from_dict(
        {"image": paths, "caption": ["a", "b", "c"], "label": [0, 1, 1]}, features=features
    )
    source.to_parquet(str(tmp_path / "hf.parquet"))
    mmtok("probe", str(tmp_path / "hf.parquet"), "-o", str(tmp_path / "out"))
    loaded = datasets.load_dataset(str(tmp_path / "out"), split="train")
    assert loaded.features["label"] == features["label"]
    assert isinstance(loaded.features["image"], datasets.Image)
    assert loaded[2]["label"] == 1 and loaded[2]["image"].size == (70, 50)


def test_image_bytes_on_stdout_inlines_images_given_by_path(rows_jsonl):
    result = runner.invoke(app, ["probe", str(rows_jsonl), "-o", "-", "--image-bytes", "-w", "1"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 6 and all(r["image"].startswith("data:") for r in rows)
