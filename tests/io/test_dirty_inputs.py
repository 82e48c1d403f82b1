"""Dirty crawl data: every hostile record becomes a kept row (made valid, with a warning) or a
`bad_record` reject that says where and why; nothing crashes the read, nothing is lost."""

import base64
import csv
import io
import json
import os
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import write_jsonl
from test_sources import read_all
from typer.testing import CliRunner

from mmtok.cli.app import app
from mmtok.io.encoding import local_path, path_text
from mmtok.io.sources import Inputs, ReadOptions, row_id

runner = CliRunner()


def write_lines(path, lines: list[str | bytes]):
    with open(path, "wb") as f:
        for line in lines:
            f.write((line if isinstance(line, bytes) else line.encode()) + b"\n")
    return path


def test_lone_surrogates_are_made_valid_with_a_warning(tmp_path):
    # json.dumps writes a lone surrogate as the escape `\ud83d`: an emoji cut in half.
    path = write_lines(
        tmp_path / "r.jsonl",
        [
            json.dumps({"id": "a", "image": "a.jpg", "caption": "x \ud83d y", "url": "u"}),
            json.dumps({"id": "b", "image": "b.jpg", "caption": "clean", "url": "u \udc00"}),
            json.dumps({"id": "c", "image": "c.jpg", "caption": "ok 😀", "url": "u"}),
        ],
    )
    _, rows, rejects = read_all([path])
    assert rejects == []
    assert [r["caption"] for r in rows] == ["x \ufffd y", "clean", "ok 😀"]
    assert rows[1]["url"] == "u \ufffd"
    assert "U+FFFD in caption" in rows[0]["warning"]
    assert "U+FFFD in url" in rows[1]["warning"]
    assert rows[2]["warning"] is None


def test_lone_surrogate_inside_a_json_value_of_a_text_column(tmp_path):
    path = write_lines(
        tmp_path / "r.jsonl",
        [
            json.dumps({"image": "a.jpg", "tags": ["ok", "cut \ud83d"]}),
            json.dumps({"image": "b.jpg", "tags": "plain"}),
        ],
    )
    _, rows, rejects = read_all([path])
    assert rejects == [] and json.loads(rows[0]["tags"]) == ["ok", "cut \ufffd"]
    assert "U+FFFD in tags" in rows[0]["warning"]


def test_lone_surrogate_in_a_key_and_in_the_id(tmp_path):
    path = write_lines(
        tmp_path / "r.jsonl",
        [json.dumps({"id": "i\ud800d", "image": "a.jpg", "note\udfff": "n"})],
    )
    inputs, rows, rejects = read_all([path])
    assert rejects == [] and "note\ufffd" in inputs.schema.names
    assert rows[0]["note\ufffd"] == "n" and rows[0]["id"] == "i\ufffdd"
    assert "column names not valid UTF-8" in rows[0]["warning"]
    assert "U+FFFD in id" in rows[0]["warning"]


def test_bytes_that_are_not_utf8_in_a_caption_are_replaced_with_a_warning(tmp_path):
    path = write_lines(tmp_path / "r.jsonl", [b'{"image": "a.jpg", "caption": "caf\xe9"}'])
    _, rows, rejects = read_all([path])
    assert rejects == [] and rows[0]["caption"] == "caf\ufffd"
    assert "caption" in rows[0]["warning"]


@pytest.fixture
def latin1_image(tmp_path, image_files):
    """A real PNG whose file name is Latin-1 bytes (not UTF-8), as old crawls have them."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    raw = os.path.join(os.fsencode(folder), b"caf\xe9.png")
    with open(raw, "wb") as f:
        f.write(image_files["rgb_640x480.png"].read_bytes())
    return folder, raw


def test_folder_with_a_file_name_that_is_not_utf8(latin1_image):
    folder, raw = latin1_image
    inputs, rows, rejects = read_all([folder])
    digest, _ = inputs.fingerprint()  # crashed here before
    assert rejects == [] and len(rows) == 1 and digest
    uri = rows[0]["image"]["path"]
    assert uri == "file://" + os.fsdecode(folder).replace(os.sep, "/") + "/caf%E9.png"
    assert os.fsencode(local_path(uri)) == raw  # the same bytes, so the same file
    assert rows[0]["warning"] is None  # nothing was repaired: the path is exact


def test_jsonl_path_that_is_not_utf8_finds_its_file_and_round_trips(tmp_path, latin1_image):
    folder, raw = latin1_image
    path = write_lines(tmp_path / "r.jsonl", [b'{"image": "imgs/caf\xe9.png", "caption": "c"}'])
    out = tmp_path / "out"
    result = runner.invoke(app, ["probe", str(path), "-o", str(out), "-w", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["counts"]["out"] == 1  # was missing_file
    rows = pq.read_table(next(out.glob("part-*.parquet")), columns=["image", "width"]).to_pylist()
    assert rows[0]["width"] == 640
    assert os.fsencode(local_path(rows[0]["image"]["path"])) == raw  # written losslessly
    again = tmp_path / "again"
    result = runner.invoke(app, ["probe", str(out), "-o", str(again), "-w", "1", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["counts"]["out"] == 1


def test_image_path_that_no_file_name_can_hold_is_a_bad_record(tmp_path):
    """A lone surrogate from a JSON escape is no byte of a file name: the record is a
    bad_record reject (it crashed the run). A raw byte that is not UTF-8 is one, in a `file:`
    URI too: that row is kept (`tests/test_hostile_paths.py` opens its file)."""
    path = write_lines(
        tmp_path / "r.jsonl",
        [
            json.dumps({"image": "a\ud83d.jpg", "caption": "half an emoji"}),
            b'{"image": "file:/x/caf\xe9.jpg", "caption": "raw byte"}',
            json.dumps({"image": {"path": "/x/\ud83d.jpg"}, "caption": "struct"}),
            json.dumps({"image": "ok.jpg", "caption": "fine"}),
        ],
    )
    _, rows, rejects = read_all([path])
    assert [r["caption"] for r in rows] == ["raw byte", "fine"]
    assert rows[0]["image"]["path"] == "file:///x/caf%E9.jpg"  # valid text naming its bytes
    assert [r["caption"] for r in rejects] == ["half an emoji", "struct"]
    assert all(r["reason"] == "bad_record" for r in rejects)
    assert all("cannot be a file name" in r["message"] for r in rejects)
    assert rejects[0]["message"].startswith("line 1: image path 'a\\ud83d.jpg'")


def test_tar_member_name_that_is_not_utf8(tmp_path):
    path = tmp_path / "shard.tar"
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT, encoding="latin-1") as tar:
        for name, data in (
            ("caf\xe9.jpg", b"jpeg-bytes"),
            ("caf\xe9.txt", b"cap"),
            ("b.txt", b"x"),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    _, rows, rejects = read_all([path])
    assert rejects == [] and [r["key"] for r in rows] == ["caf\ufffd", "b"]
    assert rows[0]["image"]["bytes"] == b"jpeg-bytes" and rows[0]["caption"] == "cap"
    assert "not UTF-8" in rows[0]["warning"] and rows[1]["warning"] is None
    assert rows[0]["id"] == row_id(str(path), os.fsdecode(b"caf\xe9"))


def test_integer_above_int64_is_kept_as_text(tmp_path):
    path = write_jsonl(
        tmp_path / "r.jsonl",
        [{"image": "a.jpg", "n": 2**70, "m": 1}, {"image": "b.jpg", "n": 5, "m": -(2**63)}],
    )
    inputs, rows, rejects = read_all([path])
    types = {f.name: f.type for f in inputs.schema}
    assert rejects == [] and types["n"] == pa.string() and types["m"] == pa.int64()
    assert [r["n"] for r in rows] == [str(2**70), "5"]


def test_csv_field_longer_than_pythons_default_limit(tmp_path):
    caption = "word " * 40_000  # 200,000 characters: over csv's 131,072 default
    path = tmp_path / "r.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([["image", "caption"], ["a.jpg", caption], ["b.jpg", "short"]])
    inputs, rows, rejects = read_all([path])
    assert rejects == [] and [r["caption"] for r in rows] == [caption, "short"]
    assert inputs.count_rows() == 2


def test_json_nested_beyond_the_parser_is_a_bad_record(tmp_path):
    deep = '{"image": "b.jpg", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    path = write_lines(tmp_path / "r.jsonl", ['{"image": "a.jpg"}', deep, '{"image": "c.jpg"}'])
    _, rows, rejects = read_all([path])
    assert [r["image"]["path"][-5:] for r in rows] == ["a.jpg", "c.jpg"]
    assert len(rejects) == 1 and rejects[0]["reason"] == "bad_record"
    assert rejects[0]["message"].startswith("line 2: JSON nested too deeply")


@pytest.mark.parametrize(
    ("image", "words"),
    [
        ({"path": 5}, "image path of type int"),
        ({"bytes": 123}, "image bytes of type int"),
        ({"bytes": [1, 2]}, "image bytes of type list"),
        (7, "image value of type int"),
    ],
)
def test_image_values_of_the_wrong_type_are_bad_records_that_keep_the_row(tmp_path, image, words):
    path = write_jsonl(
        tmp_path / "r.jsonl",
        [
            {"id": "good", "image": "a.jpg", "caption": "c", "url": "u1"},
            {"id": "bad-1", "image": image, "caption": "keep me", "url": "u2"},
        ],
    )
    _, rows, rejects = read_all([path])
    assert [r["id"] for r in rows] == ["good"]
    (reject,) = rejects
    assert reject["reason"] == "bad_record" and reject["stage"] == "read"
    assert reject["message"].startswith("line 2: " + words)
    # The input's own id and columns stay, so the user can fix the record and rerun.
    assert (reject["id"], reject["caption"], reject["url"]) == ("bad-1", "keep me", "u2")


def test_passthrough_named_like_an_mmtok_column_with_another_type(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [{"image": "a.jpg", "source": 7, "warning": 1.5}])
    inputs, rows, rejects = read_all([path])
    types = {f.name: f.type for f in inputs.schema}
    assert rejects == [] and types["source_input"] == pa.int64()
    assert rows[0]["source"] == str(path) and rows[0]["source_input"] == 7
    assert rows[0]["warning_input"] == 1.5 and rows[0]["warning"] is None


def test_lines_appended_while_the_file_is_read(tmp_path):
    path = write_jsonl(
        tmp_path / "r.jsonl", [{"id": f"r{i}", "image": "a.jpg", "n": i} for i in range(3)]
    )
    inputs = Inputs([str(path)], ReadOptions(batch_rows=2))  # the scan has typed n as int64
    with open(path, "a") as f:
        f.write(json.dumps({"id": "late-1", "image": "b.jpg", "n": "five"}) + "\n")
        f.write(json.dumps({"id": "late-2", "image": "c.jpg", "n": 2**80}) + "\n")
        f.write(json.dumps({"id": "late-3", "image": "d.jpg", "n": 6, "new": "x"}) + "\n")
    rows, rejects = [], []
    for batch in inputs.batches():
        rows += batch.rows.to_pylist()
        rejects += batch.rejected.to_pylist() if batch.rejected is not None else []
    assert [r["id"] for r in rows] == ["r0", "r1", "r2", "late-3"]
    assert "new" in rows[-1]["warning"] and rows[-1]["n"] == 6
    assert [(r["id"], r["n"]) for r in rejects] == [("late-1", None), ("late-2", None)]
    assert rejects[0]["message"].startswith("line 4: column 'n': 'five' does not fit int64")
    assert rejects[1]["message"].startswith("line 5: column 'n'")


def test_data_uri_scheme_is_case_insensitive(tmp_path):
    payload = base64.b64encode(b"PNGDATA").decode()
    path = write_jsonl(
        tmp_path / "r.jsonl",
        [
            {"image": "DATA:image/png;BASE64," + payload},
            {"image": "Data:image/png;base64," + payload},
            {"image": "data:,%89PNG"},  # RFC 2397: without ;base64 the data is percent-encoded
            {"image": {"bytes": "DATA:image/png;base64," + payload}},
        ],
    )
    _, rows, rejects = read_all([path])
    assert rejects == []
    assert [r["image"]["bytes"] for r in rows] == [b"PNGDATA", b"PNGDATA", b"\x89PNG", b"PNGDATA"]


def test_file_uri_is_decoded(tmp_path):
    assert path_text("/tmp/plain é.jpg") == "/tmp/plain é.jpg"
    path = write_jsonl(tmp_path / "r.jsonl", [{"image": "file:///data/a%20b.jpg"}])
    _, rows, _ = read_all([path])
    assert rows[0]["image"]["path"] == "/data/a b.jpg"


def test_parquet_bad_image_values_keep_their_columns(tmp_path):
    pq.write_table(
        pa.table({"image": [1, 2], "id": ["x", "y"], "score": [0.5, 0.7]}), tmp_path / "p.parquet"
    )
    _, rows, rejects = read_all([tmp_path / "p.parquet"])
    assert rows == [] and [(r["id"], r["score"]) for r in rejects] == [("x", 0.5), ("y", 0.7)]
    assert rejects[0]["message"].startswith("row 0: image value of type int")


def test_a_crawl_of_every_hostile_record_runs_to_the_end(tmp_path, image_files):
    """All of the above in one file, through the CLI: exit 0, every line accounted for."""
    good = str(image_files["rgb_640x480.png"])
    lines = [
        json.dumps({"id": "surrogate", "image": good, "caption": "x \ud83d y"}),
        json.dumps({"id": "key", "image": good, "k\udfff": 1}),
        json.dumps({"id": "bigint", "image": good, "n": 2**70}),
        '{"id": "deep", "image": "a.jpg", "x": ' + "[" * 100_000 + "]" * 100_000 + "}",
        json.dumps({"id": "path5", "image": {"path": 5}}),
        json.dumps({"id": "bytes123", "image": {"bytes": 123}}),
        json.dumps({"id": "source7", "image": good, "source": 7}),
        json.dumps(
            {
                "id": "upper",
                "image": "DATA:image/png;base64,"
                + base64.b64encode(image_files["rgb_640x480.png"].read_bytes()).decode(),
            }
        ),
        b'{"id": "latin1", "image": "' + os.fsencode(good) + b'", "caption": "caf\xe9"}',
    ]
    path = write_lines(tmp_path / "crawl.jsonl", lines)
    out = tmp_path / "out"
    result = runner.invoke(app, ["probe", str(path), "-o", str(out), "-w", "1", "--json"])
    assert result.exit_code == 0, result.output
    counts = json.loads(result.stdout)["counts"]
    assert counts["in"] == len(lines) == counts["out"] + counts["rejected"]
    assert counts["rejected_by_reason"] == {"bad_record": 3}
    assert "crawl.jsonl: 3 rows kept with repairs" in result.stderr
    manifest = next(
        p for p in (out / "__mmtok__" / "manifest.json", out / "manifest.json") if p.exists()
    )
    assert json.loads(manifest.read_text())["notes"]["rows_with_warning"] == 3
    kept = pq.read_table(next(out.glob("part-*.parquet"))).to_pylist()
    by_id = {r["id"]: r for r in kept}
    assert by_id["surrogate"]["caption"] == "x \ufffd y" and by_id["surrogate"]["warning"]
    assert by_id["upper"]["width"] == 640 and by_id["latin1"]["caption"] == "caf\ufffd"
