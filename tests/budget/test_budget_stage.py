"""BudgetStage's columnar pass (one layout per distinct size, gathered with numpy) gives, row
by row, the fields each preset's layout gives: nulls where a preset refuses a size or has no
pixel tensor, EXIF rotation applied, overflow only with a context."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from mmtok.presets import Refused, get_preset
from mmtok.stages.budget import BudgetStage
from mmtok.text import TextCounter

SIZES = [(640, 480, None), (640, 480, 6), (1, 500, None), (4032, 3024, 8), (640, 480, 1),
         (1, 1, None), (7000, 30, 3), (1920, 1080, None), (1, 500, 5)]  # fmt: skip
PRESETS = ["qwen2-vl", "gpt-4o", "kimi-vl", "llama3-336"]


def rows() -> pa.Table:
    return pa.table(
        {
            "width": pa.array([w for w, _, _ in SIZES], pa.int32()),
            "height": pa.array([h for _, h, _ in SIZES], pa.int32()),
            "exif_orientation": pa.array([o for _, _, o in SIZES], pa.int8()),
            "file_bytes": pa.array([1000 * (i + 1) for i in range(len(SIZES))], pa.int64()),
            "caption": ["word " * i for i in range(len(SIZES))],
        }
    )


def expected(spec: str, w: int, h: int, orientation, file_bytes: int, text: int, context, exif):
    if exif and orientation in (5, 6, 7, 8):
        w, h = h, w
    x = get_preset(spec).layout(w, h)
    if isinstance(x, Refused):
        return dict.fromkeys(
            ["image_tokens", "prompt_tokens", "num_tiles", "pixel_bytes_uint8",
             "pixel_bytes_fp32", "bytes_per_token", "sequence_tokens", "overflow"]
        ) | {"error": x.error}  # fmt: skip
    return {
        "image_tokens": x.image_tokens,
        "prompt_tokens": x.prompt_tokens,
        "num_tiles": x.num_tiles,
        "pixel_bytes_uint8": x.pixel_bytes_uint8,
        "pixel_bytes_fp32": x.pixel_bytes_fp32,
        "bytes_per_token": file_bytes / x.image_tokens if x.image_tokens else None,
        "sequence_tokens": x.prompt_tokens + text,
        "overflow": x.prompt_tokens + text > context if context else None,
        "error": None,
    }


@pytest.mark.parametrize("context", [None, 400])
@pytest.mark.parametrize("exif", [True, False])
def test_columns_equal_the_layouts_row_by_row(context, exif):
    stage = BudgetStage({p: get_preset(p) for p in PRESETS}, TextCounter(), context=context,
                        apply_exif=exif)  # fmt: skip
    stage.setup()
    table = rows()
    out = stage.process(table).kept
    text = out.column("text_tokens").to_pylist()
    assert text == TextCounter().setup().count(table.column("caption").to_pylist())
    assert out.column("rgb_bytes").to_pylist() == [w * h * 3 for w, h, _ in SIZES]
    for spec in PRESETS:
        got = out.column(spec).to_pylist()
        for i, (w, h, o) in enumerate(SIZES):
            want = expected(spec, w, h, o, 1000 * (i + 1), text[i], context, exif)
            assert got[i] == want, (spec, w, h, o)
    assert out.column("qwen2-vl").to_pylist()[2]["error"].startswith("absolute aspect ratio")


def random_rows(rng: np.random.Generator, n: int) -> pa.Table:
    """Sizes drawn from a small pool (so later batches find them laid out) and fresh ones,
    refused ones (1x500, 0x0), EXIF orientations in and out of range, and nulls."""
    pool = rng.integers(1, 6000, (40, 2))
    sizes = np.where(rng.random((n, 1)) < 0.7, pool[rng.integers(0, 40, n)],
                     rng.integers(0, 9000, (n, 2)))  # fmt: skip
    sizes[rng.random(n) < 0.05] = (1, 500)
    sizes[rng.random(n) < 0.02] = (0, 0)
    orientation = rng.choice([None, 0, 1, 4, 5, 6, 7, 8, 9, -1, 127, -128], n).tolist()
    return pa.table(
        {
            "width": pa.array(sizes[:, 0], pa.int32()),
            "height": pa.array(sizes[:, 1], pa.int32()),
            "exif_orientation": pa.array(orientation, pa.int8()),
            "file_bytes": pa.array(rng.integers(0, 10**8, n), pa.int64()),
            "caption": ["w " * int(k) for k in rng.integers(0, 300, n)],
        }
    )


@pytest.mark.parametrize("context", [None, 400])
@pytest.mark.parametrize("cache", [8192, 50, 0])
def test_many_batches_equal_the_layouts_and_their_parquet(context, cache, monkeypatch):
    """Batch after batch through one stage (sizes laid out in earlier batches are looked up,
    with a full or no cache too): every row equals its layout, and the Parquet bytes of the
    columns equal those of the same values built row by row from the layouts."""
    import io

    import pyarrow.parquet as pq

    from mmtok.stages import budget as stage_module

    monkeypatch.setattr(stage_module, "LAYOUT_CACHE", cache)
    rng = np.random.default_rng(cache + (context or 0))
    stage = BudgetStage({p: get_preset(p) for p in PRESETS}, TextCounter(), context=context)
    stage.setup()
    for n in (1, 256, 300, 7, 256, 1000):
        table = random_rows(rng, n)
        out = stage.process(table).kept
        text = out.column("text_tokens").to_pylist()
        o = table.column("exif_orientation").to_pylist()
        fb = table.column("file_bytes").to_pylist()
        w, h = table.column("width").to_pylist(), table.column("height").to_pylist()
        for spec in PRESETS:
            want = [expected(spec, w[i], h[i], o[i], fb[i], text[i], context, True)
                    for i in range(n)]  # fmt: skip
            assert out.column(spec).to_pylist() == want
            reference = pa.table({spec: pa.array(want, out.schema.field(spec).type)})
            files = []
            for t in (out.select([spec]), reference):
                buffer = io.BytesIO()
                pq.write_table(t, buffer, compression="zstd")
                files.append(buffer.getvalue())
            assert files[0] == files[1]
