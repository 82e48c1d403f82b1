"""The human report of estimate-budget: every figure whole at any width, measured and projected
figures apart, integer counts, and --suggest limits a model accepts."""

import json
import math
import re

import numpy as np
import pytest
from conftest import encode, photo, write_jsonl
from PIL import Image
from typer.testing import CliRunner

from mmtok.budget_report import plural
from mmtok.cli.app import app
from mmtok.presets import get_preset
from mmtok.stats import PercentileSample

runner = CliRunner()
SIZES = [(640, 480), (1920, 1080), (300, 1200), (64, 64), (3000, 2000), (1000, 700), (17, 900)]
PRESETS = ["llama3-336", "qwen2-vl", "kimi-vl", "qwen2-vl:max_pixels=1003520"]
PROJECTION = ["--gpus", "1024", "--tokens-per-gpu-second", "3000", "--read-gbps", "20"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    rows = []
    for i, (w, h) in enumerate(SIZES * 3):
        path = tmp / f"{i:03d}.jpg"
        path.write_bytes(encode(photo(w, h, seed=i), "JPEG", quality=60 + i))
        rows.append({"image": str(path), "caption": "word " * (i * 7)})
    rows.append({"image": str(tmp / "gone.jpg"), "caption": "missing"})
    return write_jsonl(tmp / "in.jsonl", rows), rows


def invoke(*args, columns=200):
    result = runner.invoke(
        app, ["estimate-budget", *args, "-w", "1"], env={"COLUMNS": str(columns)}
    )
    assert result.exit_code == 0, result.output
    return result.stdout


def both(*args, columns=200):
    """The JSON document and the human text of the same run."""
    return json.loads(invoke(*args, "--json")), invoke(*args, columns=columns)


# Formatting written here, independently of mmtok.budget_report.
def si(v, unit=""):
    for name, scale in (("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:,.2f} {name}{unit}"
    return f"{v:,.0f} B{unit}"


def shown_figures(doc):
    """(preset, figure, text) for each figure of the JSON that the report shows."""
    out = []
    for label, e in doc["presets"].items():
        for key in ("images", "rejected", "total_image_tokens", "total_text_tokens"):
            out.append((label, key, f"{e[key]:,}"))
        for p, v in e["image_tokens_percentiles"].items():
            out.append((label, p, f"{v:,}"))
        for form, v in e["storage_bytes"].items():
            out.append((label, form, si(v)))
        if "context" in e:
            out.append((label, "overflow", f"{e['context']['overflow_rows']:,}"))
        p = e.get("projection") or {}
        if "samples" in p:
            out.append((label, "samples", f"{p['samples']:,}"))
        if "gpu_hours" in p:
            out.append((label, "gpu_hours", f"{round(p['gpu_hours']):,}"))
        if "bytes_to_read" in p:
            out.append((label, "bytes_to_read", si(p["bytes_to_read"]["encoded"])))
        for key in ("read_bandwidth_bytes_per_second", "read_bandwidth_per_gpu_bytes_per_second"):
            if key in p:
                out.append((label, key, si(p[key]["encoded"], "/s")))
    return out


@pytest.mark.parametrize("columns", [60, 80, 200])
def test_every_figure_is_whole_at_any_width(dataset, columns):
    source, _ = dataset
    args = [str(source), *sum((["-p", p] for p in PRESETS), []), "--context", "2048"]
    doc, text = both(*args, "--target-tokens", "1e12", *PROJECTION, columns=columns)
    assert "…" not in text
    assert max(len(line.rstrip()) for line in text.splitlines()[2:]) <= columns
    for label, key, shown in shown_figures(doc):
        # whole: not preceded or followed by another digit or separator
        assert re.search(rf"(?<![\d,.]){re.escape(shown)}(?![\d,.])", text), (label, key, shown)
    # side by side at 200 columns; split over several tables at 60 and 80
    together = any("llama3-336" in x and "max_pixels=1003520" in x for x in text.splitlines())
    assert together == (columns == 200)


def test_narrower_than_any_table_gives_one_line_per_figure(dataset):
    source, _ = dataset
    doc, text = both(str(source), "-p", "qwen2-vl", "--samples", "1e9", *PROJECTION, columns=24)
    for _, key, shown in shown_figures(doc):
        assert re.search(rf"(?<![\d,.]){re.escape(shown)}(?![\d,.])", text), (key, shown)
    assert "\nqwen2-vl\n" in text and "    GPU-hours: " in text


def test_measured_and_projected_figures_are_apart(dataset):
    source, _ = dataset
    doc, text = both(str(source), "-p", "llama3-336", "-p", "qwen2-vl", "--samples", "1e9",
                     *PROJECTION)  # fmt: skip
    measured, projected = text.split("Projection (from the options, not measured)")
    # reading this small input once is measured, not a projection
    assert "one pass at 20 GB/s" in measured and "one pass" not in projected
    fast, slow = (doc["presets"][p]["projection"] for p in ("qwen2-vl", "llama3-336"))
    for shown in ("training time", "GPU-hours", "bytes to read", "read rate needed", "headroom"):
        assert shown in projected
    days = slow["train_seconds"] / 86400
    assert f"{days:.2f} days" in projected
    ratio = slow["gpu_hours"] / fast["gpu_hours"]
    assert doc["comparison"]["projection.gpu_hours"]["llama3-336"] == pytest.approx(ratio)
    assert re.search(rf"x the fewest +{ratio:.2f}x +1\.00x", projected)
    # the same samples, so the same bytes; the GPU time differs with the tokens per sample
    assert slow["bytes_to_read"]["encoded"] == fast["bytes_to_read"]["encoded"] and ratio > 1.05
    assert slow["gpu_hours"] == pytest.approx(
        1e9 * doc["presets"]["llama3-336"]["mean_tokens_per_sample"] / 3000 / 3600
    )
    assert "projection: 1,000,000,000 samples, 1,024 GPUs at 3,000 tokens/s each" in text


def test_counts_are_integers_in_json_and_text(dataset):
    source, rows = dataset
    raw = invoke(str(source), "-p", "qwen2-vl", "--context", "2048", "--target-tokens", "1e12",
                 "--json")  # fmt: skip
    e = json.loads(raw)["presets"]["qwen2-vl"]
    ints = [e["images"], e["total_image_tokens"], e["total_text_tokens"],
            e["context"]["overflow_rows"], e["projection"]["samples"],
            e["projection"]["compute_tokens"], *e["storage_bytes"].values(),
            *e["projection"]["bytes_to_read"].values(),
            *e["image_tokens_percentiles"].values()]  # fmt: skip
    assert all(type(v) is int for v in ints), ints
    assert '"images": 21,' in raw
    # token percentiles are token counts of real images (inverted CDF, no interpolation)
    preset = get_preset("qwen2-vl")
    tokens = sorted(preset.layout(*Image.open(r["image"]).size).image_tokens for r in rows[:-1])
    for q, v in e["image_tokens_percentiles"].items():
        assert v == tokens[math.ceil(int(q[1:]) / 100 * len(tokens)) - 1]
    text = invoke(str(source), "-p", "qwen2-vl")
    assert "21 rows" not in text and "22 rows; 1 row unreadable (missing_file: 1)" in text


def test_plural_and_rounded_percentiles():
    assert plural(1, "row") == "1 row" and plural(0, "row") == "0 rows"
    assert plural(2, "image") == "2 images" and plural(1_000, "GPU") == "1,000 GPUs"
    s = PercentileSample()
    s.add([0.1, 0.2, 0.3])
    assert s.percentiles((5, 95)) == {"p5": 0.11, "p95": 0.29}  # not 0.11000000000000001
    ints = PercentileSample(integer=True)
    ints.add([4, 16, 100, 2500])
    assert ints.percentiles((5, 50, 99)) == {"p5": 4, "p50": 16, "p99": 2500}
    assert all(type(v) is int for v in ints.percentiles((5, 50, 99)).values())


def test_suggest_gives_limits_the_model_accepts(dataset):
    source, rows = dataset
    doc, text = both(str(source), "-p", "mllama", "-p", "qwen2-vl", "-p", "internvl",
                     "--context", "4096", "--suggest")  # fmt: skip
    mllama = doc["presets"]["mllama"]["suggest"]
    # Mllama's vision model needs its 4 tiles; Meta recommends one image per prompt
    assert mllama["value"] == 4 and mllama["fixed"]
    assert mllama["images_per_prompt"] == 1 and "Meta" in mllama["images_per_prompt_bound"]
    qwen = doc["presets"]["qwen2-vl"]["suggest"]
    preset = get_preset(f"qwen2-vl:max_pixels={qwen['value']}")
    sizes = [Image.open(r["image"]).size for r in rows[:-1]]
    prompt = [preset.layout(*z).prompt_tokens for z in sizes]
    text_tokens = [math.ceil(len(r["caption"].encode()) / 4) for r in rows[:-1]]
    # every row (share 0.99 of 21 rows) fits that many images of its size beside its caption
    k = min((4096 - t) // p for p, t in zip(prompt, text_tokens, strict=True))
    assert qwen["images_per_prompt"] == k >= 1
    resized = [preset.layout(*z).resized for z in sizes]
    assert qwen["max_resized_width"] == max(w for w, _ in resized)
    assert qwen["largest_resized"] == list(max(resized, key=lambda r: r[0] * r[1]))
    side = math.isqrt(qwen["value"]) // 28 * 28
    text = " ".join(text.split())  # the sentences wrap at the terminal width
    line = re.search(r"qwen2-vl: max_pixels.*?images? per prompt", text).group(0)
    assert f"at most {qwen['value']:,} pixels (a square: {side}x{side})" in line
    assert "px wide and" in line and "1 images" not in text
    assert re.search(r"mllama: keep max_tiles=4, which the model fixes", text)
    internvl = doc["presets"]["internvl"]["suggest"]
    assert internvl["images_per_prompt"] >= 1 and internvl["value"] <= 12
    assert f"at most {internvl['value']} tiles of 448x448 pixels" in text


def test_sampled_report_shows_intervals_whole(dataset):
    source, _ = dataset
    doc, text = both(str(source), "-p", "qwen2-vl", "--sample", "12", "--samples", "1e6",
                     *PROJECTION, columns=60)  # fmt: skip
    ci = doc["presets"]["qwen2-vl"]["ci95"]
    lo, hi = ci["total_image_tokens"]
    assert type(lo) is int and lo <= doc["presets"]["qwen2-vl"]["total_image_tokens"] <= hi
    assert re.search(rf"95% interval from +{lo:,} *\n +to +{hi:,}", text)
    assert "…" not in text and np.isfinite(ci["mean_image_tokens"]).all()
