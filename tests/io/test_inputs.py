"""Inputs as users give them: a BOM from Excel, a LLaVA-style JSON array, a mistyped column
name, a file in the wrong format. Each is read as meant, or stopped with one clear line."""

import gzip
import json

import pytest
from conftest import write_jsonl
from test_sources import read_all
from typer.testing import CliRunner

from mmtok.cli.app import app
from mmtok.errors import MmtokError
from mmtok.io.sources import Inputs, ReadOptions

runner = CliRunner()


@pytest.mark.parametrize("suffix", ["csv", "tsv", "jsonl"])
def test_utf8_bom_is_not_part_of_the_first_column_name(tmp_path, suffix):
    path = tmp_path / f"r.{suffix}"
    if suffix == "jsonl":
        text = '{"image": "a.jpg", "caption": "c"}\n'
    else:
        sep = "\t" if suffix == "tsv" else ","
        text = f"image{sep}caption\na.jpg{sep}c\n"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())  # what Excel's "CSV UTF-8" writes
    inputs, rows, rejects = read_all([path])
    assert rejects == [] and rows[0]["image"]["path"] == str(tmp_path / "a.jpg")
    assert rows[0]["caption"] == "c" and "\ufeffimage" not in inputs.schema.names


def test_text_col_that_no_input_has_is_an_error_before_work(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [{"image": "a.jpg", "text": "t"}])
    with pytest.raises(MmtokError, match="no input has a column 'txt' \\(--text-col\\)"):
        Inputs([str(path)], ReadOptions(text_col="txt"))
    # The default name is optional: images without captions are a dataset too.
    _, rows, _ = read_all([path])
    assert rows[0]["caption"] is None
    # Present in one input of two is enough.
    other = write_jsonl(tmp_path / "s.jsonl", [{"image": "b.jpg", "txt": "t"}])
    _, rows, _ = read_all([path, other], text_col="txt")
    assert [r["caption"] for r in rows] == [None, "t"]


def test_text_col_is_not_checked_against_folders_and_shards(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.jpg").write_bytes(b"x")
    Inputs([str(tmp_path / "imgs")], ReadOptions(text_col="whatever"))


def test_image_col_that_no_input_has_is_an_error_through_the_cli(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [{"image": "a.jpg"}])
    result = runner.invoke(app, ["probe", str(path), "--image-col", "img"])
    assert result.exit_code == 2 and "no image column 'img'" in result.output
    result = runner.invoke(app, ["probe", str(path), "--text-col", "cap"])
    assert result.exit_code == 2 and "no input has a column 'cap'" in result.output


@pytest.mark.parametrize("gz", [False, True])
def test_json_array_file_is_read_as_rows(tmp_path, gz):
    llava = [
        {
            "id": "000001",
            "image": "coco/1.jpg",
            "conversations": [{"from": "human", "value": "<image>\nWhat is this?"}],
        },
        {"id": "000002", "image": "coco/2.jpg", "conversations": []},
        "not an object",
    ]
    text = json.dumps(llava, indent=2)
    path = tmp_path / ("llava.json.gz" if gz else "llava.json")
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    inputs, rows, rejects = read_all([path])
    assert [r["id"] for r in rows] == ["000001", "000002"]
    assert json.loads(rows[0]["conversations"])[0]["from"] == "human"
    assert rows[0]["image"]["path"] == str(tmp_path / "coco" / "1.jpg")
    assert len(rejects) == 1 and rejects[0]["message"].startswith("item 2: a JSON str")
    assert inputs.count_rows() == 3


def test_pretty_printed_json_object_is_one_row(tmp_path):
    path = tmp_path / "one.json"
    path.write_text(json.dumps({"image": "a.jpg", "caption": "c"}, indent=2))
    _, rows, rejects = read_all([path])
    assert rejects == [] and rows[0]["caption"] == "c"


def test_json_lines_in_a_json_file_stay_json_lines(tmp_path):
    path = write_jsonl(tmp_path / "rows.json", [{"image": "a.jpg"}, {"image": "b.jpg"}])
    _, rows, _ = read_all([path])
    assert len(rows) == 2


def run_probe(*args):
    return runner.invoke(app, ["probe", *map(str, args), "-w", "1"])


def test_only_bad_records_ends_with_a_warning_that_names_the_likely_cause(tmp_path):
    path = tmp_path / "rows.jsonl"  # a CSV under a .jsonl name
    path.write_text("image,caption\na.jpg,one\nb.jpg,two\n")
    result = run_probe(path, "-o", tmp_path / "out")
    assert result.exit_code == 0
    assert "warning:" in result.stderr and "all 3 records were rejected as bad_record" in (
        result.stderr
    )
    assert "is it JSON Lines" in result.stderr


def test_dedup_warns_about_its_inputs_too(tmp_path):
    path = tmp_path / "rows.jsonl"  # a CSV under a .jsonl name
    path.write_text("image,caption\na.jpg,one\nb.jpg,two\n")
    result = runner.invoke(app, ["dedup", str(path), "-o", str(tmp_path / "out"), "-w", "1"])
    assert result.exit_code == 0
    assert "all 3 records were rejected as bad_record" in result.stderr


def test_zero_rows_ends_with_a_warning(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    result = run_probe(empty, "-o", tmp_path / "out")
    assert result.exit_code == 0 and "empty.jsonl: no rows read" in result.stderr
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "readme.md").write_text("no images here")
    result = run_probe(folder, "-o", tmp_path / "out2")
    assert "docs: no rows read; no image files found" in result.stderr


def test_an_image_column_that_is_always_empty_ends_with_a_warning(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [{"image": None, "url": "a.jpg"}] * 3)
    result = run_probe(path, "-o", tmp_path / "out")
    assert "no row has a value in the image column 'image'" in result.stderr


def test_a_good_input_has_no_warning(tmp_path, image_files):
    path = write_jsonl(tmp_path / "r.jsonl", [{"image": str(image_files["rgb_640x480.png"])}])
    result = run_probe(path, "-o", tmp_path / "out")
    assert result.exit_code == 0 and "warning" not in result.stderr


@pytest.mark.parametrize("suffix", ["jsonl", "csv", "json"])
def test_cut_gzip_input_keeps_the_rows_before_the_cut(tmp_path, suffix):
    rows = [{"image": f"{i}.jpg", "caption": f"caption number {i} " * 5} for i in range(2000)]
    if suffix == "jsonl":
        text = "".join(json.dumps(r) + "\n" for r in rows)
    elif suffix == "json":
        text = json.dumps(rows)
    else:
        text = "image,caption\n" + "".join(f"{r['image']},{r['caption']}\n" for r in rows)
    packed = gzip.compress(text.encode())
    path = tmp_path / f"cut.{suffix}.gz"
    path.write_bytes(packed[: len(packed) * 6 // 10])  # an interrupted download
    inputs, kept, rejects = read_all([path])
    assert rejects[-1]["reason"] == "bad_record"
    if suffix == "json":  # one document: nothing before the cut is a whole row
        assert kept == [] and len(rejects) == 1
        assert "the file cannot be read" in rejects[0]["message"]
        return
    assert "the rest is unread" in rejects[-1]["message"]
    assert 500 < len(kept) < 2000
    assert [r["image"]["path"] for r in kept] == [
        str(tmp_path / f"{i}.jpg") for i in range(len(kept))
    ]
    assert len(rejects) <= 2  # the cut line, if the cut fell inside one, and the rest


def test_parquet_with_a_damaged_row_group_keeps_the_others(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    table = pa.table({"image": [f"{i}.jpg" for i in range(300)], "n": list(range(300))})
    pq.write_table(table, path, row_group_size=100, compression="zstd")
    meta = pq.ParquetFile(path).metadata
    second = meta.row_group(1).column(0)
    start = second.data_page_offset
    data = bytearray(path.read_bytes())
    data[start + 20 : start + 60] = b"\xff" * 40  # a damaged page in row group 1
    path.write_bytes(bytes(data))
    _, kept, rejects = read_all([path])
    assert [r["n"] for r in kept] == list(range(100)) + list(range(200, 300))
    (reject,) = rejects
    assert reject["message"].startswith("row 100: row group 1 cannot be read after row 100")
    assert "its rows 100 to 199 are unread" in reject["message"]


def test_a_video_folder_with_no_files_is_named_as_such(tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    (folder / "notes.txt").write_text("no clips here")
    result = runner.invoke(app, ["sample-frames", str(folder), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0
    assert "clips: no rows read; no image or video files found (video extensions: avi" in (
        result.stderr
    )
