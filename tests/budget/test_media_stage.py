"""MediaBudgetStage's fast path for a batch of images only gives exactly what its general path
(row numbers, image and video parts, concat, sort) gives; `video_rows` is `is_video` row by row
on any `image` column (paths, bytes, nulls, several chunks, a slice)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from mmtok.io.schema import IMAGE_TYPE, reject_schema, with_fields
from mmtok.presets import get_preset
from mmtok.stages.budget import (
    BudgetStage,
    MediaBudgetStage,
    VideoBudgetStage,
    is_video,
    video_rows,
)
from mmtok.stages.probe import ProbeStage
from mmtok.text import TextCounter

IMAGES = [
    {"path": "a/b.mp4", "bytes": None},
    {"path": "a/b.MKV", "bytes": None},
    {"path": "clip.webm.jpg", "bytes": None},
    {"path": "dir.mov/photo", "bytes": None},
    {"path": "noextension", "bytes": None},
    {"path": "", "bytes": None},
    {"path": None, "bytes": None},
    None,
    {"path": "x.jpg", "bytes": b"\x00\x00\x00\x18ftypisom\x00\x00"},  # bytes win over the path
    {"path": "x.mp4", "bytes": b"\x00\x00\x00\x18ftypavif\x00\x00"},  # an AVIF image
    {"path": None, "bytes": b"\x1a\x45\xdf\xa3\x01\x00\x00\x00"},  # Matroska
    {"path": None, "bytes": b"RIFF\x00\x00\x00\x00AVI LIST"},
    {"path": None, "bytes": b"RIFF\x00\x00\x00\x00WEBPVP8 "},
    {"path": None, "bytes": b"\x00\x00\x01\x00moov"},
    {"path": "v.avi", "bytes": b""},  # empty bytes: not a video, whatever the path says
    {"path": "v.M4V", "bytes": None},
]


def test_video_rows_is_is_video_row_by_row():
    column = pa.chunked_array([pa.array(IMAGES[:7], IMAGE_TYPE), pa.array(IMAGES[7:], IMAGE_TYPE)])
    expected = [is_video(v) for v in IMAGES]
    assert expected.count(True) >= 5  # the fixture holds videos of every kind
    assert video_rows(column).tolist() == expected
    sliced = pa.chunked_array([pa.array(IMAGES, IMAGE_TYPE).slice(3, 10)])
    assert video_rows(sliced).tolist() == expected[3:13]
    assert video_rows(pa.chunked_array([], IMAGE_TYPE)).tolist() == []
    assert video_rows(pa.chunked_array([pa.nulls(3, IMAGE_TYPE)])).tolist() == [False] * 3


def _stage() -> MediaBudgetStage:
    presets = {p: get_preset(p) for p in ["qwen2-vl", "llama3-336", "gpt-4o"]}
    budget = BudgetStage(presets, TextCounter(), context=500)
    stage = MediaBudgetStage([ProbeStage(), budget], VideoBudgetStage(budget))
    stage.setup()
    return stage


@pytest.mark.parametrize("names", [["baseline_640x480.jpg"], None])
def test_images_only_batch_equals_the_general_path(image_files, names):
    """Kept rows and rejects (missing, empty, truncated, not an image, a bomb) are the same
    tables, schema and order, on either path; an input column named like an output (`width`)
    is replaced in place on both."""
    paths = (
        [str(image_files[n]) for n in names] if names else [str(p) for p in image_files.values()]
    )
    paths += ["/no/such/file.jpg"] if names is None else []
    n = len(paths)
    rows = pa.table(
        {
            "id": [f"r{i}" for i in range(n)],
            "source": ["in.jsonl"] * n,
            "image": pa.array([{"path": p, "bytes": None} for p in paths], IMAGE_TYPE),
            "caption": ["a photo " * i for i in range(n)],
            "warning": pa.nulls(n, pa.string()),
            "width": pa.array(range(n), pa.int64()),  # an earlier run's column
        }
    )
    stage = _stage()
    fast = stage.process(rows)
    general = stage._mixed(rows, video_rows(rows.column("image")))
    assert fast.kept.schema == with_fields(rows.schema, stage.output_fields())
    assert fast.rejected.schema == reject_schema(rows.schema)
    assert fast.kept.equals(general.kept)
    assert fast.rejected.equals(general.rejected)
    if names is None:  # the bad files and the missing one are rejected, the rest kept
        assert fast.rejected.num_rows >= 5
        assert fast.kept.num_rows + fast.rejected.num_rows == n
        assert set(fast.kept.column("media").to_pylist()) == {"image"}


def test_one_stage_over_batches_of_several_schemas(image_files):
    """The output schema is kept per input schema: batches of other columns, then of other
    schema metadata, each get their own (as a fresh stage gives them), and their metadata."""
    stage = _stage()
    path = str(next(iter(image_files.values())))
    base = {
        "id": ["r0", "r1"],
        "image": pa.array([{"path": path, "bytes": None}] * 2, IMAGE_TYPE),
        "caption": ["a", "b"],
    }
    tables = [
        pa.table(base),
        pa.table({**base, "extra": [1, 2]}),
        pa.table(base).replace_schema_metadata({"k": "v"}),
        pa.table(base),
    ]
    for rows in tables:
        kept = stage.process(rows).kept
        fresh = _stage().process(rows).kept
        assert kept.schema.equals(fresh.schema, check_metadata=True)
        assert kept.schema.equals(
            with_fields(rows.schema, stage.output_fields()), check_metadata=True
        )
        assert kept.equals(fresh)
    assert kept.schema.metadata is None
