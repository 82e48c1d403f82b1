"""The --plot figure: comparable axes, nothing overlapping, a fixed-token model as one labelled
bar, and a caption with the totals and GPU-hours."""

import itertools
import json

import numpy as np
import pytest
from conftest import encode, photo, write_jsonl
from typer.testing import CliRunner

from mmtok.budget import PresetTally
from mmtok.cli.app import app
from mmtok.presets import get_preset

pytest.importorskip("matplotlib")
from mmtok.plot import budget_figure  # noqa: E402

SIZES = [(640, 480), (1920, 1080), (300, 1200), (64, 64), (3000, 2000), (1000, 700), (17, 900)]


def tallies_and_doc(labels):
    """Real layouts of real sizes, with file sizes that vary like JPEGs do."""
    rng = np.random.default_rng(0)
    tallies, presets = {}, {}
    for label in labels:
        preset = get_preset(label)
        tokens = np.array([preset.layout(w, h).image_tokens for w, h in SIZES * 5], float)
        files = np.array([w * h * rng.uniform(0.05, 0.4) for w, h in SIZES * 5])
        tally = PresetTally(preset)
        tally.tokens.add(tokens)
        tally.bytes_per_token.add(files / tokens)
        tallies[label] = tally
        presets[label] = {
            "images": len(tokens),
            "total_image_tokens": int(tokens.sum()),
            "image_tokens_percentiles": tally.tokens.percentiles((5, 50, 95, 99)),
            "bytes_per_token_cv": float(np.std(files / tokens) / np.mean(files / tokens)),
            "bytes_per_token_by_form": {
                "encoded": files.sum() / tokens.sum(),
                "decoded_rgb": sum(3 * w * h for w, h in SIZES * 5) / tokens.sum(),
            },
            "projection": {"gpu_hours": tokens.sum() * 1e6 / 3600},
        }
    doc = {
        "input": {"rows": 36, "rows_read": 36, "sampled": False},
        "options": {"samples": 1e9, "gpus": 64, "tokens_per_gpu_second": 3000.0},
        "presets": presets,
    }
    return tallies, doc


def texts(fig):
    """Every text drawn on the figure, with its box in pixels (tick labels of ticks outside the
    axis limits exist but are not drawn)."""
    renderer = fig.canvas.get_renderer()
    hidden = set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if not lo - 1e-9 * abs(lo) <= tick.get_loc() <= hi + 1e-9 * abs(hi):
                    hidden.update({id(tick.label1), id(tick.label2)})
    from matplotlib.text import Text

    unique = {id(t): t for t in fig.findobj(Text)}.values()  # findobj can reach one twice
    return [
        (t.get_text(), t.get_window_extent(renderer))
        for t in unique
        if t.get_visible() and t.get_text().strip() and id(t) not in hidden
    ]


@pytest.mark.parametrize(
    "labels",
    [
        ["llama3-336", "qwen2-vl", "kimi-vl"],
        ["llava-1.5", "qwen2-vl", "chameleon", "internvl", "mllama", "gemma3", "emu3", "kimi-vl"],
    ],
)
def test_presets_share_axes_and_nothing_overlaps(labels):
    tallies, doc = tallies_and_doc(labels)
    fig = budget_figure(tallies, doc)
    fig.canvas.draw()
    n = len(labels)
    hist = fig.axes[: 2 * n]
    left, right = hist[0::2], hist[1::2]
    for column in (left, right):
        assert all(ax.get_xlim() == column[0].get_xlim() for ax in column)
        assert all(column[0].get_shared_x_axes().joined(column[0], ax) for ax in column)
    # no two texts overlap: titles, tick labels, axis labels, bar values, caption, legend
    boxes = texts(fig)
    for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2):
        assert not box_a.overlaps(box_b), (a, b)
    bars = fig.axes[-1]
    legend = bars.get_legend().get_window_extent(fig.canvas.get_renderer())
    for patch in bars.patches:
        assert not legend.overlaps(patch.get_window_extent()), "the legend covers a bar"
    caption = fig._suptitle.get_text().replace("\n", " ")
    assert "GPU-hours for 1,000,000,000 samples on 64 GPUs" in caption
    for label in labels:
        assert f"{label} {doc['presets'][label]['total_image_tokens']:,}" in caption


def test_a_fixed_token_model_shows_one_labelled_bar():
    tallies, doc = tallies_and_doc(["llava-1.5", "qwen2-vl"])
    fig = budget_figure(tallies, doc)
    fig.canvas.draw()
    fixed = fig.axes[0]  # llava-1.5: 576 tokens for every image
    drawn = [p for p in fixed.patches if p.get_height() > 0]
    assert len(drawn) == 1 and drawn[0].get_height() == len(SIZES) * 5
    x0, x1 = drawn[0].get_x(), drawn[0].get_x() + drawn[0].get_width()
    assert x0 <= 576 <= x1
    assert [t.get_text() for t in fixed.texts] == ["all 35 images: 576 tokens"]
    # alone on its axis too (every image of every preset the same)
    tallies, doc = tallies_and_doc(["llava-1.5"])
    fig = budget_figure(tallies, doc)
    assert [t.get_text() for t in fig.axes[0].texts] == ["all 35 images: 576 tokens"]
    assert fig.axes[0].get_xlim()[0] < 576 < fig.axes[0].get_xlim()[1]


def test_cli_writes_the_png(tmp_path):
    rows = []
    for i, (w, h) in enumerate(SIZES):
        path = tmp_path / f"{i}.jpg"
        path.write_bytes(encode(photo(w, h, seed=i), "JPEG"))
        rows.append({"image": str(path), "caption": "a photo"})
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    plot = tmp_path / "budget.png"
    result = CliRunner().invoke(
        app,
        ["estimate-budget", str(source), "-p", "llava-1.5", "-p", "qwen2-vl", "--plot", str(plot),
         "--samples", "1e6", "--gpus", "8", "--tokens-per-gpu-second", "1000", "--json", "-w", "1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(result.stdout)["plot"]["panels"] == 5
