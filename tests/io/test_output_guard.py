"""Never delete what mmtok did not write (issue 12.1): -o over an input, over a foreign folder,
over a user's file inside an mmtok output, through symlinks and relative paths."""

import os
from pathlib import Path

import pytest
from conftest import encode, photo, write_jsonl
from typer.testing import CliRunner

from mmtok.cli.app import app

runner = CliRunner()


@pytest.fixture
def photos(tmp_path) -> Path:
    """A user's folder of photos with a caption file: what must never be deleted."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        (folder / f"p{i}.jpg").write_bytes(encode(photo(40, 30, seed=i), "JPEG"))
    (folder / "p0.txt").write_text("a caption")
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def probe(*args: str):
    return runner.invoke(app, ["probe", *args, "-w", "1", "-q"])


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]], ids=["plain", "overwrite"])
def test_output_that_is_the_input_folder_is_refused(photos, overwrite, tmp_path, monkeypatch):
    before = snapshot(photos)
    result = probe(str(photos), "-o", str(photos), *overwrite)
    assert result.exit_code == 2 and "is the input" in result.output
    monkeypatch.chdir(photos)  # -o .
    result = probe(".", "-o", ".", *overwrite)
    assert result.exit_code == 2 and "is the input" in result.output
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")  # -o ../photos from a sibling folder
    result = probe("../photos", "-o", "../photos", *overwrite)
    assert result.exit_code == 2 and "is the input" in result.output
    assert snapshot(photos) == before
    assert not list(tmp_path.glob(".*mmtok-staging*"))


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]], ids=["plain", "overwrite"])
def test_output_that_holds_an_input_is_refused(photos, overwrite, tmp_path, monkeypatch):
    rows = write_jsonl(photos / "rows.jsonl", [{"image": "p1.jpg", "caption": "x"}])
    before = snapshot(photos)
    monkeypatch.chdir(photos)
    result = probe("rows.jsonl", "-o", ".", *overwrite)  # -o . holds the input file
    assert result.exit_code == 2 and "holds the input" in result.output
    result = probe(str(rows), "-o", str(tmp_path), *overwrite)  # a parent of the input
    assert result.exit_code == 2 and "holds the input" in result.output
    assert snapshot(photos) == before


def test_output_inside_an_input_folder_is_refused(photos):
    before = snapshot(photos)
    result = probe(str(photos), "-o", str(photos / "probed"))
    assert result.exit_code == 2 and "inside the input folder" in result.output
    assert snapshot(photos) == before and not (photos / "probed").exists()


def test_symlinks_are_resolved(photos, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(photos, target_is_directory=True)
    before = snapshot(photos)
    result = probe(str(photos), "-o", str(link), "--overwrite")
    assert result.exit_code == 2 and "is the input" in result.output
    result = probe(str(link), "-o", str(photos), "--overwrite")  # the input through a link
    assert result.exit_code == 2 and "is the input" in result.output
    assert snapshot(photos) == before and link.is_symlink()


def test_overwrite_refuses_a_folder_mmtok_did_not_write(photos, tmp_path):
    other = tmp_path / "some_folder"
    other.mkdir()
    (other / "notes.md").write_text("mine")
    result = probe(str(photos), "-o", str(other))
    assert result.exit_code == 2 and "not an mmtok output" in result.output
    result = probe(str(photos), "-o", str(other), "--overwrite")
    assert result.exit_code == 2
    assert "not an mmtok output" in result.output and "notes.md" in result.output
    assert (other / "notes.md").read_text() == "mine"
    # a file as -o
    result = probe(str(photos), "-o", str(other / "notes.md"), "--overwrite")
    assert result.exit_code == 2 and "is a file" in result.output


def test_overwrite_keeps_a_users_file_inside_an_mmtok_output(photos, tmp_path):
    out = tmp_path / "out"
    assert probe(str(photos), "-o", str(out)).exit_code == 0
    (out / "README.md").write_text("my dataset card")
    result = probe(str(photos), "-o", str(out), "--overwrite")
    assert result.exit_code == 2 and "README.md" in result.output
    assert (out / "README.md").read_text() == "my dataset card"
    (out / "README.md").unlink()
    result = probe(str(photos), "-o", str(out), "--overwrite")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["__mmtok__", "part-00000.parquet"]
    assert not list(tmp_path.glob(".out.mmtok-staging*"))


def test_an_empty_folder_is_a_fine_output(photos, tmp_path):
    (tmp_path / "empty").mkdir()
    assert probe(str(photos), "-o", str(tmp_path / "empty")).exit_code == 0
    assert (tmp_path / "empty" / "part-00000.parquet").exists()


def test_a_staging_name_that_mmtok_did_not_write_is_left_alone(photos, tmp_path):
    fake = tmp_path / ".out.mmtok-staging"
    fake.mkdir()
    (fake / "keep.txt").write_text("not mmtok's")
    for extra in ([], ["--overwrite"], ["--resume"]):
        result = probe(str(photos), "-o", str(tmp_path / "out"), *extra)
        assert result.exit_code == 2 and "not written by mmtok" in result.output
    assert (fake / "keep.txt").read_text() == "not mmtok's"


def test_a_staging_folder_killed_after_its_lock_went_is_cleared(photos, tmp_path):
    """A kill between removing a finished staging folder's lock (last of its files) and the
    folder itself leaves it empty: the next run goes on (found by benchmarks/faults.py)."""
    (tmp_path / ".out.mmtok-staging").mkdir()
    result = probe(str(photos), "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert not (tmp_path / ".out.mmtok-staging").exists()


def test_an_mmtok_output_as_input_cannot_be_its_own_output(photos, tmp_path):
    out = tmp_path / "out"
    assert probe(str(photos), "-o", str(out)).exit_code == 0
    before = snapshot(out)
    result = probe(str(out), "-o", str(out), "--overwrite")
    assert result.exit_code == 2 and "input" in result.output
    assert snapshot(out) == before
    assert not [n for n in os.listdir(tmp_path) if "staging" in n]


def test_overwrite_replaces_an_output_in_the_old_layout(photos, tmp_path):
    """Folders written before `__mmtok__/` (manifest and rejects at the top) are mmtok's too."""
    import json
    import shutil

    out = tmp_path / "out"
    assert probe(str(photos), "-o", str(out)).exit_code == 0
    manifest = json.loads((out / "__mmtok__" / "manifest.json").read_text())
    for f in manifest["files"]:
        f["name"] = f["name"].removeprefix("__mmtok__/")
    shutil.move(out / "__mmtok__" / "rejects.parquet", out / "rejects.parquet")
    shutil.rmtree(out / "__mmtok__")
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / "notes.txt").write_text("mine")
    result = probe(str(photos), "-o", str(out), "--overwrite")
    assert result.exit_code == 2 and "notes.txt" in result.output
    (out / "notes.txt").unlink()
    assert probe(str(photos), "-o", str(out), "--overwrite").exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == ["__mmtok__", "part-00000.parquet"]
