"""Image and video paths that no file on disk has (bytes that are not UTF-8, from a raw byte or
a file: URI; a NUL byte; a lone surrogate) are rejects with a reason, in every command that
opens files; their messages are valid text. Each crashed a whole run before."""

import json

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
