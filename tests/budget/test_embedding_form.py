"""estimate-budget's embedding storage form: one float16 vector of D per image, as `mmtok embed`
stores it (`fixed_size_list<float16>[D]`), beside the other forms."""

import numpy as np
import pyarrow as pa
import pytest
from test_estimate_budget import dataset, run  # noqa: F401 - the fixture
from typer.testing import CliRunner

from mmtok.budget import Options, Sums, figures
from mmtok.cli.app import app
from mmtok.presets import get_preset

DIM = 512


def stored_bytes(images: int, dim: int) -> int:
    """What Arrow holds for `images` embeddings of `dim` as mmtok embed writes them."""
    vectors = np.zeros((images, dim), np.float16)
    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), pa.float16()), dim)
    return column.values.nbytes


def test_the_form_is_the_bytes_mmtok_embed_stores_per_image(dataset):  # noqa: F811
    source, rows = dataset
    doc = run(str(source), "-p", "qwen2-vl", "-p", "llama3-336", "--image-embed-dim", str(DIM))
    for entry in doc["presets"].values():
        images = entry["images"]
        assert images == len(rows)
        assert entry["storage_bytes"]["image_embedding_fp16"] == stored_bytes(images, DIM)
        per_token = entry["bytes_per_token_by_form"]["image_embedding_fp16"]
        assert per_token == pytest.approx(2 * DIM * images / entry["total_image_tokens"])
        assert "embeddings_fp16" not in entry["storage_bytes"]  # the per-token form: not asked
    # per image, so the same whatever the preset's tokens; the per-token forms differ
    qwen, llama = doc["presets"]["qwen2-vl"], doc["presets"]["llama3-336"]
    assert (
        qwen["storage_bytes"]["image_embedding_fp16"]
        == (llama["storage_bytes"]["image_embedding_fp16"])
    )
    assert (
        "image_embedding_fp16"
        not in run(str(source), "-p", "qwen2-vl")["presets"]["qwen2-vl"]["storage_bytes"]
    )


def test_projection_and_sample_scale_the_form(dataset):  # noqa: F811
    source, rows = dataset
    s = Sums(rows=10, image_tokens=5000, text_tokens=300)
    opts = Options(samples=1_000_000, image_embed_dim=768)
    out = figures(s, 3.0, get_preset("qwen2-vl"), opts)
    assert out["storage_bytes"]["image_embedding_fp16"] == 3 * 10 * 2 * 768  # scaled by N / n
    per_sample = (2 * 768 * 10 + 4 * 300) / 10  # the embedding and the caption's ids
    assert out["projection"]["bytes_to_read"]["image_embedding_fp16"] == round(1e6 * per_sample)
    sampled = run(str(source), "-p", "qwen2-vl", "--image-embed-dim", "64", "--sample", "7")
    entry = sampled["presets"]["qwen2-vl"]
    assert entry["storage_bytes"]["image_embedding_fp16"] == 2 * 64 * len(rows)  # 7 -> 21 rows


def test_the_report_names_the_form(dataset):  # noqa: F811
    source, _ = dataset
    result = CliRunner().invoke(
        app,
        ["estimate-budget", str(source), "-p", "qwen2-vl", "--image-embed-dim", "512", "-w", "1"],
        terminal_width=200,
    )
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if "one embedding per image" in x)
    assert line.split() == ["one", "embedding", "per", "image", "(fp16)", "21.50", "kB"]
