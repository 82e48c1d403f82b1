"""ProbeStage's own batch loop (values read from the `image` column, outputs gathered as
columns) gives exactly what the generic `RowStage.process` over its `process_row` gives: the
same kept table, the same rejects with their reasons, and one progress tick per row."""

from __future__ import annotations

import pyarrow as pa
import pytest
from PIL import Image

from mmtok.engine import stage as stage_module
from mmtok.engine.stage import RowStage
from mmtok.io.schema import IMAGE_TYPE
from mmtok.stages.probe import ProbeStage
from tests.conftest import encode, photo


def _rows(image_files, with_width: bool) -> pa.Table:
    paths = [str(p) for p in image_files.values()]
    images = [{"path": p, "bytes": None} for p in paths]
    images += [
        {"path": None, "bytes": image_files["exif6_640x480.jpg"].read_bytes()},
        {"path": "x.png", "bytes": image_files["rgb_640x480.png"].read_bytes()},
        {"path": None, "bytes": b""},
        {"path": None, "bytes": None},
        None,
        {"path": "/no/such/file.jpg", "bytes": None},
        {"path": "http://example.com/a.jpg", "bytes": None},
    ]
    n = len(images)
    columns = {
        "id": [f"r{i}" for i in range(n)],
        "image": pa.array(images, IMAGE_TYPE),
        "caption": ["c"] * n,
    }
    if with_width:  # an earlier run's column of the same name is replaced in place
        columns["width"] = pa.array(range(n), pa.int64())
    return pa.table(columns)


@pytest.mark.parametrize("decode_check", [False, True])
@pytest.mark.parametrize("with_width", [False, True])
def test_batch_loop_equals_the_row_stage_loop(image_files, decode_check, with_width):
    stage = ProbeStage(decode_check=decode_check)
    stage.setup()
    rows = _rows(image_files, with_width)
    ticks = []
    stage_module.on_row_done(lambda: ticks.append(1))
    try:
        fast = stage.process(rows)
        assert len(ticks) == rows.num_rows
        general = RowStage.process(stage, rows)
    finally:
        stage_module.on_row_done(None)
    assert fast.kept.schema == general.kept.schema
    assert fast.kept.equals(general.kept)
    assert fast.rejected.equals(general.rejected)
    reasons = set(fast.rejected.column("reason").to_pylist())
    assert {"missing_file", "empty_file", "no_image", "not_image", "bomb"} <= reasons
    assert fast.kept.num_rows + fast.rejected.num_rows == rows.num_rows
    if decode_check:
        assert "truncated" in reasons


def test_a_batch_of_good_rows_keeps_them_all(image_files):
    stage = ProbeStage()
    rows = _rows(image_files, False).slice(1, 2)  # two good files
    result = stage.process(rows)
    assert result.rejected.num_rows == 0
    assert (
        result.kept.column("width").to_pylist()
        == RowStage.process(stage, rows).kept.column("width").to_pylist()
    )


class _Doubled(ProbeStage):
    """A subclass with its own `process_row` (as the engine's poison stages): it is called."""

    def process_row(self, row):
        values = super().process_row(row)
        return {**values, "width": values["width"] * 2}


def test_a_subclass_process_row_is_used(image_files):
    rows = _rows(image_files, False).slice(1, 2)
    assert _Doubled().process(rows).kept.column("width").to_pylist() == [
        2 * w for w in ProbeStage().process(rows).kept.column("width").to_pylist()
    ]


def _orientation_jpeg(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(photo(40, 30, seed=orientation), "JPEG", exif=exif.tobytes())


def test_image_values_from_chunks_slices_and_null_structs(image_files, tmp_path):
    """The struct's fields are read column-wise: chunk boundaries, a slice's offset, null
    structs (with or without values under them), EXIF turns (display sizes swapped) and an
    orientation that does not fit int8 must give what the row-by-row loop gives."""
    images = [{"path": str(p), "bytes": None} for p in image_files.values()]
    for orientation in (1, 5, 6, 7, 8, 300):  # 300: a SHORT the int8 column cannot hold
        path = tmp_path / f"o{orientation}.jpg"
        path.write_bytes(_orientation_jpeg(orientation))
        images += [{"path": str(path), "bytes": None}, {"path": None, "bytes": path.read_bytes()}]
    images += [None, {"path": "file://" + str(path), "bytes": None}, {"path": "", "bytes": None}]
    chunks = [pa.array(images[i : i + 7], IMAGE_TYPE) for i in range(0, len(images), 7)]
    # a null struct whose fields still hold a path: it is a row without an image
    valid = pa.array([False, True])
    fields = [pa.array([str(path), str(path)]), pa.array([None, None], pa.large_binary())]
    chunks.append(pa.StructArray.from_arrays(fields, fields=list(IMAGE_TYPE), mask=valid))
    column = pa.chunked_array(chunks, IMAGE_TYPE)
    table = pa.table({"id": [str(i) for i in range(len(column))], "image": column})
    stage = ProbeStage()
    for rows in (table, table.slice(3), table.slice(5, len(images) - 9)):
        fast, general = stage.process(rows), RowStage.process(stage, rows)
        assert fast.kept.equals(general.kept)
        assert fast.rejected.equals(general.rejected)
    kept = stage.process(table).kept
    by_orientation = {
        (o, w, h, dw, dh)
        for o, w, h, dw, dh in zip(
            *(
                kept.column(c).to_pylist()
                for c in ["exif_orientation", "width", "height", "display_width", "display_height"]
            ),
            strict=True,
        )  # fmt: skip
        if w == 40
    }
    turned = {(o, 40, 30, 30, 40) for o in (5, 6, 7, 8)}
    assert by_orientation == {(1, 40, 30, 40, 30), (None, 40, 30, 40, 30), *turned}
    rejected = stage.process(table).rejected
    assert rejected.column("reason").to_pylist().count("no_image") == 3


def test_an_image_struct_with_a_path_alone(image_files):
    paths = [str(p) for p in image_files.values()] + [None]
    rows = pa.table({"image": pa.array([{"path": p} for p in paths])})
    stage = ProbeStage()
    fast, general = stage.process(rows), RowStage.process(stage, rows)
    assert fast.kept.equals(general.kept) and fast.rejected.equals(general.rejected)
    assert fast.kept.num_rows > 10


def test_an_empty_batch():
    rows = pa.table({"image": pa.array([], IMAGE_TYPE)})
    fast = ProbeStage().process(rows)
    assert fast.kept.equals(RowStage.process(ProbeStage(), rows).kept)
    assert fast.kept.num_rows == 0 and fast.rejected.num_rows == 0
