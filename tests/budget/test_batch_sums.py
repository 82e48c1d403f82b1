"""`batch_sums` keeps its last answer per preset (a worker asks twice per batch: the shard's
metadata and the summary's part): every answer equals `row_arrays` and `Sums.of` computed
afresh, for new batches, slices and chunkings of one batch (the same buffers at other offsets),
and batches rebuilt after the last one was freed."""

from __future__ import annotations

import gc

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from mmtok import budget as b
from mmtok.presets import get_preset
from mmtok.stages.budget import BudgetStage
from mmtok.text import TextCounter

PRESETS = ["qwen2-vl", "llama3-336", "gpt-4o"]


def kept(seed: int, n: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 5000, (n, 2))
    sizes[::7] = (1, 500)  # refused by some presets
    table = pa.table(
        {
            "width": pa.array(sizes[:, 0], pa.int32()),
            "height": pa.array(sizes[:, 1], pa.int32()),
            "exif_orientation": pa.array(rng.choice([0, 1, 6, 8], n), pa.int8()),
            "file_bytes": pa.array(rng.integers(1, 10**7, n), pa.int64()),
            "caption": ["word " * int(k) for k in rng.integers(0, 50, n)],
        }
    )
    stage = BudgetStage({p: get_preset(p) for p in PRESETS}, TextCounter(), context=700)
    stage.setup()
    return stage.process(table).kept


def same(got: tuple, table: pa.Table, label: str, context) -> None:
    arrays, refused = b.row_arrays(table, label, context)
    assert got[1] == refused
    if arrays is None:
        assert got[0] is None and got[2] is None
        return
    assert got[0].keys() == arrays.keys()
    for k, v in arrays.items():
        np.testing.assert_array_equal(got[0][k], v)
    assert got[2] == b.Sums.of(arrays)


def test_each_answer_is_the_fresh_one():
    tables = []
    for seed in range(6):
        t = kept(seed, 300)
        tables += [t, t, t.select(["text_tokens", "file_bytes", "rgb_bytes", *PRESETS])]
        tables += [t.slice(1, 200), t.slice(2, 200), t.slice(0, 0), t.slice(299)]
        chunked = pa.concat_tables([t.slice(0, 150), t.slice(150)])
        tables += [chunked, chunked.combine_chunks(), t.slice(0, 150)]
        refused = t.filter(pc.is_valid(pc.struct_field(t.column("qwen2-vl"), "error")))
        tables += [refused, refused]  # every row refused by qwen2-vl
    for context in (None, 700, 3000):
        for t in tables:
            for label in PRESETS:
                same(b.batch_sums(t, label, context), t, label, context)


def test_a_batch_rebuilt_where_the_last_one_was():
    """A batch freed and another built (whose buffers may take the freed addresses): the
    answer is the new batch's, not the kept one's."""
    for seed in range(20):
        t = kept(seed % 3, 64 + seed % 2)
        same(b.batch_sums(t, "qwen2-vl", None), t, "qwen2-vl", None)
        del t
        gc.collect()


def test_the_second_ask_is_answered_from_the_first():
    t = kept(0, 100)
    first = b.batch_sums(t, "gpt-4o", 700)
    assert b.batch_sums(t.select(["gpt-4o", *b._READ]), "gpt-4o", 700) is first
    assert b.batch_sums(t, "gpt-4o", None) is not first  # another context


def row_arrays_reference(table: pa.Table, label: str, context):
    """`row_arrays` as it was (mask every column, NaN to 0 for the pixel bytes)."""
    struct = table.column(label).combine_chunks()
    ok = struct.field("error").is_null().to_numpy(zero_copy_only=False)
    refused = int((~ok).sum())
    if not ok.any():
        return None, refused

    def col(values):
        return np.asarray(values.to_numpy(zero_copy_only=False)[ok], dtype=np.float64)

    a = {
        name: col(struct.field(name))
        for name in ("image_tokens", "prompt_tokens", "sequence_tokens", "bytes_per_token")
    }
    a["pixel_bytes_uint8"] = np.nan_to_num(col(struct.field("pixel_bytes_uint8")))
    for name in ("text_tokens", "file_bytes", "rgb_bytes"):
        a[name] = col(table.column(name).combine_chunks())
    over = a["sequence_tokens"] > context if context else np.zeros(len(a["image_tokens"]), bool)
    a["overflow"] = over.astype(np.float64)
    return a, refused


def test_row_arrays_equal_the_reference():
    """On batches with refused rows, presets without a pixel tensor (null pixel bytes), zero
    image tokens (null bytes per token), slices, chunks, and structs built row by row (with
    validity bitmaps, as a video row's or a resumed run's are)."""
    for seed in range(8):
        t = kept(seed, 257)
        rebuilt = pa.table({name: pa.array(t.column(name).to_pylist(), t.schema.field(name).type)
                            for name in t.column_names})  # fmt: skip
        chunked = pa.concat_tables([t.slice(0, 100), t.slice(100, 3), t.slice(103)])
        for table in (t, rebuilt, chunked, t.slice(5, 77), t.slice(0, 0)):
            for label in PRESETS:
                for context in (None, 700):
                    got, refused = b.row_arrays(table, label, context)
                    want, refused_want = row_arrays_reference(table, label, context)
                    assert refused == refused_want
                    assert (got is None) == (want is None)
                    if want is None:
                        continue
                    assert got.keys() == want.keys()
                    for k in want:
                        assert got[k].dtype == want[k].dtype
                        np.testing.assert_array_equal(got[k], want[k])


@pytest.mark.parametrize("exif", [True, False])
def test_suggest_rows_as_each_row_s_orientation_says(exif):
    """BudgetSummary's --suggest sample: (width, height) swapped where the row's EXIF
    orientation is 5-8 (and `exif`), as row by row; nulls and out-of-range values not."""
    from mmtok.commands.budget import BudgetSummary
    from mmtok.images.probe import SWAPS_SIDES
    from mmtok.stats import RowSample

    rng = np.random.default_rng(1)
    n = 500
    orientation = rng.choice([None, 0, 1, 4, 5, 6, 7, 8, 9, -1, 127, -128], n).tolist()
    table = pa.table(
        {
            "width": pa.array(rng.integers(1, 5000, n), pa.int32()),
            "height": pa.array(rng.integers(1, 5000, n), pa.int32()),
            "exif_orientation": pa.array(orientation, pa.int8()),
            "text_tokens": pa.array(rng.integers(0, 300, n), pa.int64()),
        }
    )
    summary = BudgetSummary({}, RowSample(3, capacity=None), context=None, exif=exif)
    summary.add(table.slice(0, 200))
    summary.add(table.slice(200))
    w, h = table.column("width").to_pylist(), table.column("height").to_pylist()
    t = table.column("text_tokens").to_pylist()
    want = [
        (h[i], w[i], t[i]) if exif and orientation[i] in SWAPS_SIDES else (w[i], h[i], t[i])
        for i in range(n)
    ]
    assert summary.rows.rows.tolist() == [list(map(float, r)) for r in want]
    assert sum(o in SWAPS_SIDES for o in orientation) > 100  # rows to swap, or not
