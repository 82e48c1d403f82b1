"""estimate-budget end to end on generated files, against totals computed independently."""

import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import encode, photo, write_jsonl
from typer.testing import CliRunner

from mmtok.budget import Options, Sums, figures
from mmtok.cli.app import app
from mmtok.presets import Refused, get_preset

runner = CliRunner()
SIZES = [(640, 480), (1920, 1080), (300, 1200), (64, 64), (3000, 2000), (1000, 700), (17, 900)]
PRESETS = ["llama3-336", "qwen2-vl", "kimi-vl"]


@pytest.fixture
def dataset(tmp_path):
    rows = []
    for i, (w, h) in enumerate(SIZES * 3):
        path = tmp_path / f"{i:03d}.jpg"
        path.write_bytes(encode(photo(w, h, seed=i), "JPEG", quality=60 + i))
        rows.append({"image": str(path), "caption": "word " * (i * 7)})
    return write_jsonl(tmp_path / "in.jsonl", rows), rows


def run(*args):
    result = runner.invoke(app, ["estimate-budget", *args, "--json", "-w", "1"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def expected(rows, spec):
    """Totals from `mmtok layout` arithmetic and file sizes, without the command."""
    preset = get_preset(spec)
    img = txt = file = 0
    for row in rows:
        with open(row["image"], "rb") as f:
            data = f.read()
        from PIL import Image

        w, h = Image.open(row["image"]).size
        layout = preset.layout(w, h)
        if isinstance(layout, Refused):
            continue
        img += layout.image_tokens
        txt += math.ceil(len(row["caption"].encode()) / 4)
        file += len(data)
    return img, txt, file


def test_totals_match_the_layouts_and_decode_agrees(dataset):
    source, rows = dataset
    args = [str(source), *sum((["-p", p] for p in PRESETS), [])]
    doc = run(*args)
    decoded = run(*args, "--decode")
    for spec in PRESETS:
        img, txt, file = expected(rows, spec)
        entry = doc["presets"][spec]
        assert entry["images"] == len(rows) and entry["rejected"] == 0
        assert entry["total_image_tokens"] == img
        assert entry["total_text_tokens"] == txt
        assert entry["storage_bytes"]["encoded"] == file
        assert entry["bytes_per_token"] == pytest.approx(file / img)  # ratio of sums
        assert entry["mean_tokens_per_sample"] == pytest.approx((img + txt) / len(rows))
        for key in ("total_image_tokens", "storage_bytes", "bytes_per_token_cv"):
            assert decoded["presets"][spec][key] == entry[key]
    # a fixed-tile preset's bytes per token are as unpredictable as the files; Qwen's less so
    assert (
        doc["presets"]["llama3-336"]["bytes_per_token_cv"]
        > doc["presets"]["qwen2-vl"]["bytes_per_token_cv"]
    )


def test_json_schema_keys_are_stable(dataset):
    source, _ = dataset
    doc = run(str(source), "-p", "qwen2-vl", "--context", "4096")
    assert set(doc) >= {"input", "text_tokens", "options", "presets", "counts", "timing"}
    assert set(doc["presets"]["qwen2-vl"]) >= {
        "preset", "images", "rejected", "refused", "total_image_tokens", "mean_image_tokens",
        "total_prompt_tokens", "total_text_tokens", "mean_tokens_per_sample", "vision_share",
        "bytes_per_token", "bytes_per_token_percentiles", "bytes_per_token_cv",
        "bytes_per_token_p99_over_p50", "image_tokens_percentiles", "storage_bytes",
        "bytes_per_token_by_form", "context",
    }  # fmt: skip
    assert set(doc["presets"]["qwen2-vl"]["image_tokens_percentiles"]) == {
        "p5",
        "p50",
        "p95",
        "p99",
    }
    assert doc["text_tokens"]["exact"] is False and "estimate" in doc["text_tokens"]["method"]


def test_llama3_example_projection_by_hand():
    # 2,308 image + 192 text tokens per sample; 1e12 tokens -> 4e8 samples
    s = Sums(
        rows=10, image_tokens=23_080, prompt_tokens=10, text_tokens=1_920, file_bytes=2_000_000
    )
    opts = Options(target_tokens=1e12, gpus=100, tokens_per_gpu_second=2_500, read_gbps=2.0)
    fig = figures(s, 1.0, get_preset("llama3-336"), opts)
    assert fig["mean_tokens_per_sample"] == 2_500
    p = fig["projection"]
    assert p["samples"] == pytest.approx(4e8)
    per_sample_bytes = (2_000_000 + 4 * 1_920) / 10  # encoded image + int32 text ids
    assert p["bytes_to_read"]["encoded"] == pytest.approx(4e8 * per_sample_bytes)
    # 100 GPUs x 2,500 tokens/s = 100 samples/s
    assert p["read_bandwidth_bytes_per_second"]["encoded"] == pytest.approx(100 * per_sample_bytes)
    assert p["read_bandwidth_per_gpu_bytes_per_second"]["encoded"] == pytest.approx(
        per_sample_bytes
    )
    # one pass over this input is a measured figure, not a projection
    assert "epoch_read_seconds" not in p
    assert fig["epoch_read_seconds"]["encoded"] == pytest.approx((2_000_000 + 4 * 1_920) / 2e9)
    assert fig["vision_share"] == pytest.approx(2_308 / 2_500)
    # 1e12 tokens at 250,000 tokens/s = 4e6 s on 100 GPUs = 111,111 GPU-hours
    assert p["train_seconds"] == pytest.approx(4e6)
    assert p["gpu_hours"] == pytest.approx(4e6 * 100 / 3600)
    assert p["read_seconds"]["encoded"] == pytest.approx(4e8 * per_sample_bytes / 2e9)
    assert p["read_headroom"]["encoded"] == pytest.approx(2e9 / (100 * per_sample_bytes))
    # counts are integers: samples needed round up, bytes are whole
    assert p["samples"] == 400_000_000 and type(p["samples"]) is int
    assert type(p["bytes_to_read"]["encoded"]) is int and type(fig["images"]) is int


def test_sample_intervals_contain_the_full_pass(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(80):
        w, h = (int(v) for v in rng.integers(40, 900, 2))
        path = tmp_path / f"{i}.png"
        path.write_bytes(encode(photo(w, h, seed=i), "JPEG"))
        rows.append({"image": str(path), "caption": "x" * int(rng.integers(0, 400))})
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    full = run(str(source), "-p", "qwen2-vl")["presets"]["qwen2-vl"]
    doc = run(str(source), "-p", "qwen2-vl", "--sample", "40", "--seed", "3")
    est = doc["presets"]["qwen2-vl"]
    assert doc["input"]["rows"] == 80 and doc["input"]["rows_read"] == 40
    for key in ("mean_image_tokens", "total_image_tokens", "bytes_per_token", "total_text_tokens"):
        lo, hi = est["ci95"][key]
        assert lo <= full[key] <= hi, key
    again = run(str(source), "-p", "qwen2-vl", "--sample", "40", "--seed", "3")
    assert again["presets"]["qwen2-vl"]["ci95"] == est["ci95"]  # seeded


def test_context_overflow_and_suggest(dataset):
    source, rows = dataset
    doc = run(str(source), "-p", "qwen2-vl", "--context", "1500", "--suggest")
    entry = doc["presets"]["qwen2-vl"]
    preset = get_preset("qwen2-vl")
    from PIL import Image

    sizes = [Image.open(r["image"]).size for r in rows]
    text = [math.ceil(len(r["caption"].encode()) / 4) for r in rows]
    over = sum(preset.layout(*s).prompt_tokens + t > 1500 for s, t in zip(sizes, text, strict=True))
    assert entry["context"]["overflow_rows"] == over > 0
    s = entry["suggest"]
    assert s["parameter"] == "max_pixels" and s["value"] % 784 == 0

    def share(max_pixels):
        p = get_preset(f"qwen2-vl:max_pixels={max_pixels}")
        return np.mean(
            [p.layout(*z).prompt_tokens + t <= 1500 for z, t in zip(sizes, text, strict=True)]
        )

    assert share(s["value"]) >= 0.99 > share(s["value"] + 784)


def test_outputs_rejects_plot_and_shard_metadata(tmp_path, dataset, image_files):
    source, rows = dataset
    bad = [
        {"image": str(image_files[n]), "caption": n} for n in ("empty.jpg", "truncated_640x480.jpg")
    ]
    source = write_jsonl(
        tmp_path / "mixed.jsonl", rows + bad + [{"image": str(tmp_path / "gone.jpg")}]
    )
    out, plot = tmp_path / "out", tmp_path / "budget.png"
    doc = run(
        str(source), "-p", "mllama", "-p", "emu3", "-o", str(out), "--plot", str(plot), "--decode"
    )
    assert doc["input"]["rejected"] == 3 and doc["counts"]["in"] == len(rows) + 3
    assert (
        doc["presets"]["emu3"]["storage_bytes"]["vq_ids"]
        == 2 * doc["presets"]["emu3"]["total_image_tokens"]
    )
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and doc["plot"]["panels"] == 5
    assert json.loads((out / "__mmtok__" / "budget.json").read_text())["presets"].keys() == {
        "mllama",
        "emu3",
    }
    meta = pq.read_metadata(out / "part-00000.parquet").metadata
    shard = json.loads(meta[b"mmtok_budget"])
    assert shard["mllama"]["image_tokens"] == doc["presets"]["mllama"]["total_image_tokens"]
    table = pq.read_table(out / "part-00000.parquet")
    assert table.column("mllama").combine_chunks().field("image_tokens").to_pylist()[0] > 0
    reasons = {
        r["reason"] for r in pq.read_table(out / "__mmtok__" / "rejects.parquet").to_pylist()
    }
    assert reasons == {"empty_file", "truncated", "missing_file"}


def test_tokenizer_json_gives_exact_counts(tmp_path, dataset):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import models, pre_tokenizers

    tok = tokenizers.Tokenizer(models.WordLevel({"word": 0, "[UNK]": 1}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    source, rows = dataset
    doc = run(str(source), "-p", "qwen2-vl", "--tokenizer", str(path))
    assert doc["text_tokens"]["exact"] is True
    assert doc["presets"]["qwen2-vl"]["total_text_tokens"] == sum(
        r["caption"].count("word") for r in rows
    )
    assert doc["text_tokens"]["bytes_per_id"] == 2  # a 2-word vocabulary fits uint16


def test_tiktoken_file_gives_exact_counts(tmp_path, dataset):
    pytest.importorskip("tiktoken")
    import base64

    ranks = [bytes([i]) for i in range(256)] + [b"wo", b"rd", b"word"]
    path = tmp_path / "tiny.tiktoken"
    path.write_text("".join(f"{base64.b64encode(t).decode()} {i}\n" for i, t in enumerate(ranks)))
    source, rows = dataset
    doc = run(str(source), "-p", "qwen2-vl", "--tokenizer", str(path))
    # "word " x n: each "word" and each " " (one pre-token per whitespace run, 1 byte) is a token
    expected_tokens = sum(2 * r["caption"].count("word") for r in rows)
    assert doc["presets"]["qwen2-vl"]["total_text_tokens"] == expected_tokens


def test_bad_arguments_are_messages(tmp_path, dataset):
    source, _ = dataset
    result = runner.invoke(app, ["estimate-budget", str(source), "-p", "qwen2-vl", "--suggest"])
    assert result.exit_code == 2 and "--context" in result.stderr
    result = runner.invoke(
        app, ["estimate-budget", str(source), "-p", "qwen2-vl", "--tokenizer", "nope.json"]
    )
    assert result.exit_code == 2 and "not found" in result.stderr


def test_sample_with_output_writes_the_sampled_rows(dataset, tmp_path):
    """`--sample N -o DIR` (it crashed with an AttributeError traceback): the output holds the
    N sampled rows, and the figures are those of the same sample without an output."""
    source, rows = dataset
    out = tmp_path / "out"
    doc = run(str(source), "-p", "qwen2-vl", "--sample", "9", "--seed", "5", "-o", str(out))
    alone = run(str(source), "-p", "qwen2-vl", "--sample", "9", "--seed", "5")
    assert doc["input"] == alone["input"] and doc["input"]["rows_read"] == 9
    assert doc["presets"] == alone["presets"]
    table = pq.read_table(out)
    assert table.num_rows == 9
    sampled = {r["image"] for r in rows} >= {i["path"] for i in table.column("image").to_pylist()}
    assert sampled and len({i["path"] for i in table.column("image").to_pylist()}) == 9
