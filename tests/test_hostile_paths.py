"""Image and video paths that no file on disk has (bytes that are not UTF-8, from a raw byte or
a file: URI; a NUL byte; a lone surrogate) are rejects with a reason, in every command that
opens files; their messages are valid text. Each crashed a whole run before."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from mmtok.cli.app import app

runner = CliRunner()


def hostile_rows(tmp_path, column: str, suffix: str):
    lines = [
        b'{"%s": "raw\xff%s", "caption": "a"}' % (column.encode(), suffix.encode()),
        json.dumps({column: f"nul\x00x{suffix}", "caption": "b"}).encode(),
        json.dumps({column: f"file:/caf%E9{suffix}", "caption": "c"}).encode(),
        json.dumps({column: f"a\ud83d{suffix}", "caption": "d"}).encode("utf-8", "surrogatepass"),
    ]
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@pytest.mark.parametrize(
    "command",
    [
        ["probe"],
        ["probe", "--decode-check"],
        ["estimate-budget", "-p", "qwen2-vl"],
        ["tile", "--preset", "qwen2-vl"],
        ["filter", "--min-side", "8"],
        ["dedup"],
    ],
    ids=lambda c: " ".join(c),
)
def test_image_paths_no_file_has_are_rejects(tmp_path, command):
    rows = hostile_rows(tmp_path, "image", ".jpg")
    out = tmp_path / "out"
    result = runner.invoke(app, [*command, str(rows), "-o", str(out), "-w", "2", "--json"])
    assert result.exit_code == 0, result.output
    rejects = pq.read_table(out / "__mmtok__" / "rejects.parquet").to_pylist()
    reasons = sorted(r["reason"] for r in rejects)
    assert reasons == ["bad_record", "missing_file", "missing_file", "missing_file"], rejects
    messages = " ".join(r["message"] for r in rejects)
    assert "file:///caf%E9.jpg" in messages and "raw%FF.jpg" in messages and "NUL" in messages


def test_video_paths_no_file_has_are_rejects(tmp_path):
    rows = hostile_rows(tmp_path, "video", ".mp4")
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["sample-frames", str(rows), "-o", str(out), "--fps", "1", "-w", "2", "--json"]
    )
    assert result.exit_code == 0, result.output
    rejects = pq.read_table(out / "__mmtok__" / "rejects.parquet").to_pylist()
    assert sorted(r["reason"] for r in rejects) == ["bad_record", *["missing_file"] * 3], rejects
    assert any("raw%FF.mp4" in r["message"] for r in rejects)


def test_a_file_uri_with_raw_bytes_names_its_file(tmp_path, image_files):
    """A file: URI read from bytes that are not UTF-8 (a name in Latin-1) opens the file of
    that name, as the same path without `file://` and percent-encoded do."""
    folder = bytes(tmp_path)
    with open(folder + b"/caf\xe9.jpg", "wb") as f:
        f.write(image_files["baseline_640x480.jpg"].read_bytes())
    rows = tmp_path / "rows.jsonl"
    rows.write_bytes(
        b'{"image": "file://%s/caf\xe9.jpg"}\n{"image": "%s/caf\xe9.jpg"}\n'
        b'{"image": "file://%s/caf%%E9.jpg"}\n' % (folder, folder, folder)
    )
    result = runner.invoke(app, ["probe", str(rows), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["counts"]["out"] == 3, report
    assert report["percentiles"]["width"]["p50"] == 640


def write_input(folder: bytes, kind: str, image: Path) -> bytes:
    """An input of `kind` whose own name holds the byte \\xe9 (Latin-1), naming `image`."""
    import io
    import tarfile

    import pyarrow as pa

    path = folder + b"/caf\xe9." + kind.encode()
    if kind == "jsonl":
        Path(os.fsdecode(path)).write_text(json.dumps({"image": str(image)}) + "\n")
    elif kind == "csv":
        Path(os.fsdecode(path)).write_text(f"image,caption\n{image},x\n")
    elif kind == "parquet":
        with open(path, "wb") as f:
            pq.write_table(pa.table({"image": [str(image)]}), f)
    elif kind == "tar":
        with tarfile.open(os.fsdecode(path), "w") as tar:
            data = image.read_bytes()
            info = tarfile.TarInfo("k.jpg")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    elif kind == "jpg":
        Path(os.fsdecode(path)).write_bytes(image.read_bytes())
    else:  # a folder
        path = folder + b"/caf\xe9"
        os.mkdir(path)
        Path(os.fsdecode(path + b"/a.jpg")).write_bytes(image.read_bytes())
    return path


@pytest.mark.parametrize("kind", ["jsonl", "csv", "parquet", "tar", "jpg", "folder"])
def test_inputs_whose_names_are_not_utf8(tmp_path, image_files, kind):
    """An input named in Latin-1, as a user's shell passes it (bytes in argv): read and written
    (the command line in the shards' metadata, and Parquet names pyarrow cannot take as text,
    crashed the run)."""
    path = write_input(bytes(tmp_path), kind, image_files["baseline_640x480.jpg"])
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "mmtok", "probe", path, "-o", str(out), "-w", "2"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    table = pq.read_table(out)
    assert table.num_rows == 1 and table.column("width").to_pylist() == [640]
    assert "caf%E9" in table.column("source")[0].as_py()
    metadata = pq.ParquetFile(out / "part-00000.parquet").schema_arrow.metadata
    assert b"caf\\xe9" in metadata[b"mmtok_command"]  # valid text naming the byte


def test_an_output_folder_whose_name_is_not_utf8_is_refused(tmp_path, image_files):
    rows = write_input(bytes(tmp_path), "jsonl", image_files["baseline_640x480.jpg"])
    out = bytes(tmp_path) + b"/out\xe9"
    cmd = [sys.executable, "-m", "mmtok", "probe", rows, "-o", out]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "output folder's name is not UTF-8" in done.stderr, done
    assert sorted(os.listdir(bytes(tmp_path))) == [b"caf\xe9.jsonl"]  # nothing made
