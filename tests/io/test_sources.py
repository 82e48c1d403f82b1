import csv
import io
import json
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import write_jsonl

from mmtok.errors import MmtokError
from mmtok.io.sources import Inputs, ReadOptions, row_id

ROWS = [
    {"image": "a.jpg", "caption": "first", "url": "http://x/1"},
    {"image": "sub/b.png", "caption": "second, with a comma", "url": "http://x/2"},
    {"image": "c.webp", "caption": "", "url": "http://x/3"},
]


def read_all(paths, **options):
    inputs = Inputs([str(p) for p in paths], ReadOptions(**options))
    rows, rejects = [], []
    for batch in inputs.batches():
        rows += batch.rows.to_pylist()
        if batch.rejected is not None:
            rejects += batch.rejected.to_pylist()
    return inputs, rows, rejects


def write_csv(path, rows, delimiter=","):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "tsv", "parquet"])
def test_record_formats_round_trip_the_same_rows(tmp_path, fmt):
    path = tmp_path / f"rows.{fmt}"
    if fmt == "jsonl":
        write_jsonl(path, ROWS)
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(ROWS), path)
    else:
        write_csv(path, ROWS, "\t" if fmt == "tsv" else ",")
    inputs, rows, rejects = read_all([path])
    assert rejects == []
    assert inputs.schema.names == ["id", "source", "image", "caption", "warning", "url"]
    assert [r["image"]["path"] for r in rows] == [
        str(tmp_path / "a.jpg"),
        str(tmp_path / "sub" / "b.png"),
        str(tmp_path / "c.webp"),
    ]
    assert [r["caption"] for r in rows] == ["first", "second, with a comma", ""]
    assert [r["url"] for r in rows] == ["http://x/1", "http://x/2", "http://x/3"]
    # Ids hash the absolute source path and row number: stable across runs and formats' rows.
    assert [r["id"] for r in rows] == [row_id(str(path), i) for i in range(3)]
    assert all(r["source"] == str(path) for r in rows)


def test_id_column_and_custom_column_names(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [{"key": 7, "img": "/abs/x.jpg", "text": "t"}])
    _, rows, _ = read_all([path], image_col="img", text_col="text", id_col="key")
    assert rows[0]["id"] == "7" and rows[0]["image"]["path"] == "/abs/x.jpg"
    assert rows[0]["caption"] == "t" and "key" not in rows[0]


def test_input_id_column_is_kept_by_default(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [{"id": "row-1", "image": "x.jpg"}])
    _, rows, _ = read_all([path])
    assert rows[0]["id"] == "row-1"


def test_missing_image_column_is_a_clear_error(tmp_path):
    path = write_csv(tmp_path / "r.csv", [{"file": "x.jpg", "caption": "c"}])
    with pytest.raises(MmtokError, match="no image column 'image'"):
        read_all([path])


def test_bad_json_lines_become_rejects_not_crashes(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(
        '{"image": "a.jpg"}\n{not json\n\n[1, 2]\n{"image": "b.jpg", "caption": null}\n'
    )
    _, rows, rejects = read_all([path])
    assert [r["image"]["path"] for r in rows] == [str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")]
    assert rows[1]["caption"] is None
    assert [r["reason"] for r in rejects] == ["bad_record", "bad_record"]
    assert rejects[0]["message"].startswith("line 2:") and "{not json" in rejects[0]["message"]
    assert rejects[1]["message"].startswith("line 4:")
    assert all(r["stage"] == "read" for r in rejects)


def test_csv_row_with_wrong_field_count_is_rejected(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("image,caption\na.jpg,one\nb.jpg,two,extra\n")
    _, rows, rejects = read_all([path])
    assert len(rows) == 1 and len(rejects) == 1 and "3 fields" in rejects[0]["message"]


def test_jsonl_mixed_types_keep_every_value(tmp_path):
    path = write_jsonl(
        tmp_path / "r.jsonl",
        [
            {"image": "a.jpg", "n": 1, "score": 1, "tags": ["x"], "mixed": 5},
            {"image": "b.jpg", "n": 2, "score": 2.5, "tags": [], "mixed": "five"},
            {"image": "c.jpg"},
        ],
    )
    inputs, rows, _ = read_all([path])
    types = {f.name: f.type for f in inputs.schema}
    assert types["n"] == pa.int64() and types["score"] == pa.float64()
    assert types["tags"] == pa.string() and types["mixed"] == pa.string()
    assert [r["tags"] for r in rows] == ['["x"]', "[]", None]
    assert [r["mixed"] for r in rows] == ["5", "five", None]


def test_parquet_image_bytes_and_hf_struct(tmp_path):
    data = b"\xff\xd8not-really-a-jpeg"
    pq.write_table(
        pa.table({"image": pa.array([data], pa.binary()), "caption": ["c"]}), tmp_path / "b.parquet"
    )
    struct = pa.array(
        [{"bytes": data, "path": "x.jpg"}],
        pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
    )
    pq.write_table(pa.table({"image": struct}), tmp_path / "hf.parquet")
    _, rows, _ = read_all([tmp_path / "b.parquet", tmp_path / "hf.parquet"])
    assert rows[0]["image"] == {"path": None, "bytes": data}
    assert rows[1]["image"] == {"path": str(tmp_path / "x.jpg"), "bytes": data}


def test_jsonl_data_uri_bytes(tmp_path):
    import base64

    uri = "data:image/png;base64," + base64.b64encode(b"PNGDATA").decode()
    path = write_jsonl(tmp_path / "r.jsonl", [{"image": uri}, {"image": "data:,%%%"}])
    _, rows, rejects = read_all([path])
    assert rows[0]["image"]["bytes"] == b"PNGDATA"
    assert rejects[0]["reason"] == "bad_record"


def _tar_member(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_webdataset_shard(tmp_path, image_files):
    jpeg = image_files["baseline_640x480.jpg"].read_bytes()
    path = tmp_path / "shard-000.tar"
    with tarfile.open(path, "w") as tar:
        _tar_member(tar, "s/000.jpg", jpeg)
        _tar_member(tar, "s/000.txt", b"a caption")
        _tar_member(tar, "s/001.png", b"png-bytes")
        _tar_member(tar, "s/001.json", json.dumps({"caption": "from json", "w": 3}).encode())
        _tar_member(tar, "s/002.txt", b"caption without image")
    inputs, rows, rejects = read_all([path])
    assert [r["key"] for r in rows] == ["s/000", "s/001", "s/002"]
    assert rows[0]["image"]["bytes"] == jpeg and rows[0]["caption"] == "a caption"
    assert rows[1]["caption"] == "from json" and json.loads(rows[1]["json"])["w"] == 3
    assert rows[2]["image"] is None  # the probe stage rejects it as no_image
    assert rows[0]["id"] == row_id(str(path), "s/000")


def test_truncated_webdataset_keeps_earlier_samples(tmp_path, image_files):
    jpeg = image_files["baseline_640x480.jpg"].read_bytes()
    path = tmp_path / "shard.tar"
    with tarfile.open(path, "w") as tar:
        for i in range(3):
            _tar_member(tar, f"{i:03d}.jpg", jpeg)
    path.write_bytes(path.read_bytes()[: 512 + len(jpeg) + 512 + 1000])
    _, rows, rejects = read_all([path])
    assert len(rows) == 1
    assert len(rejects) == 1 and "damaged after sample '000'" in rejects[0]["message"]
    assert "member b'001.jpg' at byte 109,568 is cut" in rejects[0]["message"]


def test_folder_with_sidecar_captions_and_odd_names(tmp_path, image_files):
    folder = tmp_path / "imgs"
    (folder / "nested").mkdir(parents=True)
    (folder / "b photo ü.jpg").write_bytes(b"x")
    (folder / "b photo ü.txt").write_text("sidecar caption\n")
    (folder / "nested" / "a.PNG").write_bytes(b"x")
    (folder / "notes.md").write_text("not an image")
    inputs, rows, _ = read_all([folder])
    assert [r["image"]["path"] for r in rows] == [
        str(folder / "b photo ü.jpg"),
        str(folder / "nested" / "a.PNG"),
    ]
    assert [r["caption"] for r in rows] == ["sidecar caption", None]
    assert inputs.notes() == {"ignored_non_image_files": 1}
    assert inputs.count_rows() == 2


def test_globs_and_several_inputs_keep_order(tmp_path):
    for i in range(3):
        write_jsonl(tmp_path / f"part-{i}.jsonl", [{"image": f"{i}.jpg"}])
    inputs, rows, _ = read_all([tmp_path / "part-*.jsonl", tmp_path / "part-0.jsonl"])
    assert [r["image"]["path"].rsplit("/", 1)[1] for r in rows] == [
        "0.jpg",
        "1.jpg",
        "2.jpg",
        "0.jpg",
    ]
    assert inputs.count_rows() == 4


@pytest.mark.parametrize("bad", ["missing.jsonl", "*.nothing", "file.xyz"])
def test_bad_inputs_are_clear_errors(tmp_path, bad):
    (tmp_path / "file.xyz").write_text("?")
    with pytest.raises(MmtokError):
        Inputs([str(tmp_path / bad)])


def test_batches_respect_row_and_byte_limits(tmp_path):
    pq.write_table(
        pa.table({"image": pa.array([b"x" * 1000] * 10, pa.binary())}), tmp_path / "b.parquet"
    )
    inputs = Inputs([str(tmp_path / "b.parquet")], ReadOptions(batch_rows=4, batch_bytes=2500))
    assert [b.rows.num_rows for b in inputs.batches()] == [3, 3, 3, 1]


def test_inputs_that_disagree_on_a_column_type_share_one_schema(tmp_path):
    pq.write_table(pa.table({"image": ["a.jpg"], "x": [1], "y": [1]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"image": ["b.jpg"], "x": ["one"], "y": [2.5]}), tmp_path / "b.parquet")
    inputs, rows, _ = read_all([tmp_path / "a.parquet", tmp_path / "b.parquet"])
    types = {f.name: f.type for f in inputs.schema}
    assert types["x"] == pa.string() and types["y"] == pa.float64()
    assert [(r["x"], r["y"]) for r in rows] == [("1", 1.0), ("one", 2.5)]


def test_image_files_given_directly_or_by_glob(tmp_path, image_files):
    folder = tmp_path / "direct"
    folder.mkdir()
    for name in ("a.jpg", "b.png"):
        (folder / name).write_bytes(image_files["tiny_1x1.png"].read_bytes())
    (folder / "a.txt").write_text("caption of a")
    _, rows, _ = read_all([folder / "*.*g", folder / "a.jpg"])
    assert [r["image"]["path"] for r in rows] == [
        str(folder / n) for n in ("a.jpg", "b.png", "a.jpg")
    ]
    assert [r["caption"] for r in rows] == ["caption of a", None, "caption of a"]
    assert rows[0]["id"] == rows[2]["id"] != rows[1]["id"]


# --- slices: the unit a worker reads on its own ---------------------------------------------


def read_by_slices(paths, rows_per_slice, **options):
    """Every slice of the plan read on its own (as workers do), concatenated in order."""
    from mmtok.io.sources.slices import SliceReader, plan_slices

    inputs = Inputs([str(p) for p in paths], ReadOptions(**options))
    plan = plan_slices(inputs, rows_per_slice)
    reader = SliceReader.of(inputs)
    rows, rejects = [], []
    for part in plan:
        for batch in reader.read(part):
            rows += batch.rows.to_pylist()
            if batch.rejected is not None:
                rejects += batch.rejected.to_pylist()
    return plan, rows, rejects


def dirty_jsonl(path):
    """A BOM, blank lines, CRLF and lone-CR line ends, bad JSON, a lone surrogate, a non-object."""
    with open(path, "wb") as f:
        f.write(b"\xef\xbb\xbf")
        for i in range(60):
            if i % 13 == 0:
                f.write(b"\n  \n")
            if i % 17 == 0:
                f.write(b"{not json\n")
            if i == 40:
                f.write(b"[1, 2]\n")
            caption = f"c{i} \ud83d" if i % 11 == 0 else f"c{i}"
            line = json.dumps({"image": f"i{i}.jpg", "caption": caption, "n": i})
            f.write(line.encode("utf-8", "surrogatepass") + [b"\n", b"\r\n", b"\r"][i % 3])
    return path


def dirty_csv(path):
    """Quoted line breaks (a record over several lines), rows with the wrong field count."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "caption"])
        for i in range(60):
            writer.writerow([f"i{i}.jpg", f"two\nlines {i}" if i % 5 == 0 else f"c{i}"])
            if i % 23 == 0:
                f.write("a,b,c\r\n")
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet", "folder"])
def test_slices_read_on_their_own_give_the_rows_of_one_read(tmp_path, fmt, image_files):
    """Workers read slices independently; together they are exactly the one-pass read: the
    same rows, ids, warnings and reject messages (line numbers), in the same order."""
    if fmt == "jsonl":
        path = dirty_jsonl(tmp_path / "rows.jsonl")
    elif fmt == "csv":
        path = dirty_csv(tmp_path / "rows.csv")
    elif fmt == "parquet":
        path = tmp_path / "rows.parquet"
        table = pa.table({"image": [f"i{i}.jpg" for i in range(60)], "n": list(range(60))})
        pq.write_table(table, path, row_group_size=7)
    else:
        path = image_files["tiny_1x1.png"].parent
    _, rows, rejects = read_all([path], batch_rows=4)
    plan, sliced, sliced_rejects = read_by_slices([path], 8, batch_rows=4)
    assert len(plan) >= 3  # really cut
    assert {p.kind for p in plan} == {
        "jsonl": {"bytes"},
        "csv": {"bytes"},
        "parquet": {"row_groups"},
        "folder": {"items"},
    }[fmt]
    assert sliced == rows and sliced_rejects == rejects
    if fmt in ("jsonl", "csv"):
        assert len(rejects) >= 3 and any(r["warning"] for r in rows) == (fmt == "jsonl")


def test_slices_are_small_and_picklable_and_whole_for_what_cannot_seek(tmp_path):
    import gzip
    import pickle

    from mmtok.io.sources.slices import SliceReader, plan_slices

    rows = [{"image": f"i{i}.jpg", "caption": str(i)} for i in range(50)]
    plain = write_jsonl(tmp_path / "rows.jsonl", rows)
    packed = tmp_path / "rows.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    inputs = Inputs([str(plain), str(packed)], ReadOptions(batch_rows=5))
    plan = plan_slices(inputs, 10)
    assert [p.kind for p in plan] == ["bytes"] * 5 + ["whole"]
    assert [p.first_row for p in plan[:5]] == [0, 10, 20, 30, 40]
    assert all(len(pickle.dumps(p)) < 300 for p in plan)
    # a worker's reader is the scanned sources: it reads without scanning again
    reader = pickle.loads(pickle.dumps(SliceReader.of(inputs)))
    got = [r["id"] for p in plan for b in reader.read(p) for r in b.rows.to_pylist()]
    assert got == [r["id"] for b in inputs.batches() for r in b.rows.to_pylist()]
    assert len(got) == 100


def test_a_slice_reads_lines_appended_after_the_scan(tmp_path):
    """The last slice runs to the end of the file, as the one-pass read did."""
    from mmtok.io.sources.slices import SliceReader, plan_slices

    path = write_jsonl(tmp_path / "rows.jsonl", [{"image": f"{i}.jpg"} for i in range(20)])
    inputs = Inputs([str(path)], ReadOptions(batch_rows=5))
    plan = plan_slices(inputs, 5)
    with open(path, "a") as f:
        f.write(json.dumps({"image": "late.jpg", "extra": 1}) + "\n")
    rows = [r for p in plan for b in SliceReader.of(inputs).read(p) for r in b.rows.to_pylist()]
    assert len(rows) == 21 and "extra" in rows[-1]["warning"]
