"""`estimate-budget --plot`: per preset, histograms of tokens per image and of bytes per token,
one bar chart of bytes per token for each storage form, and a caption with the totals and the
GPU-hours. matplotlib loads only here.

Made to be compared: the presets of a column share one x axis and one set of bins, each preset
keeps its colour in every panel, a preset whose images all get the same token count (a
fixed-token model) shows one labelled bar, and the legend sits outside the bars.
"""

from __future__ import annotations

import math
import textwrap
from typing import Any

import numpy as np

from mmtok.errors import MmtokError

FORMS = {
    "encoded": "encoded files",
    "decoded_rgb": "decoded RGB",
    "pretiled_uint8": "pre-tiled uint8",
    "vq_ids": "VQ ids",
    "embeddings_fp16": "fp16 embeddings",
    "image_embedding_fp16": "fp16 embedding per image",
}
WIDTH_IN = 11.0
BINS = 40


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MmtokError("--plot needs matplotlib", hint="pip install 'mmtok[plot]'") from None
    return plt


def plot_budget(path: str, tallies: dict[str, Any], doc: dict[str, Any]) -> int:
    """Writes the figure to `path`; returns the number of panels."""
    plt = _pyplot()
    fig = budget_figure(tallies, doc)
    fig.savefig(path, dpi=90)
    panels = sum(1 for ax in fig.axes if ax.get_visible())
    plt.close(fig)
    return panels


def short(v: float) -> str:
    """A tick or bar label: 50, 1.5k, 20k, 1.2M (never 10^2 notation)."""
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:g}{unit}"
    return f"{v:g}"


def _log_bins(values: list[np.ndarray]) -> np.ndarray | None:
    """Shared log-spaced bins over every preset's values (positive ones)."""
    allv = np.concatenate([v[v > 0] for v in values]) if values else np.empty(0)
    if allv.size == 0:
        return None
    lo, hi = float(allv.min()), float(allv.max())
    if lo == hi:  # every value equal: a band around it
        lo, hi = lo / 1.5, hi * 1.5
    return np.geomspace(lo, hi * 1.0001, BINS + 1)


def _ticks(lo: float, hi: float) -> list[float]:
    """Plain round values at 1, 2, 5 x 10^k (fewer per decade on a wide range), from the one
    at or below `lo` to the one at or above `hi`."""
    decades = math.log10(hi / lo)
    steps = (1, 2, 5) if decades < 2.5 else (1, 3) if decades <= 4 else (1,)
    grid = sorted(
        m * 10.0**k
        for k in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
        for m in steps
    )
    below = max(t for t in grid if t <= lo * 1.0001)
    above = min(t for t in grid if t >= hi / 1.0001)
    return [t for t in grid if below <= t <= above]


def _log_axis(ax, bins: np.ndarray) -> None:
    """A log x axis with plain-number ticks (50, 1k; never 10^2) that never crowd, ending on
    a tick at each side."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    ax.set_xscale("log")
    ticks = _ticks(bins[0], bins[-1])
    ax.set_xlim(ticks[0], ticks[-1])
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: short(v)))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())


def _log_y(ax, lo: float, hi: float) -> None:
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    ax.set_yscale("log")
    ticks = _ticks(lo, hi)
    ax.set_ylim(ticks[0], ticks[-1])
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: short(v)))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_minor_formatter(NullFormatter())


def _histogram(ax, values: np.ndarray, bins: np.ndarray | None, color, unit: str) -> None:
    v = values[values > 0]
    if bins is None or v.size == 0:
        ax.text(0.5, 0.5, "no images", ha="center", va="center", transform=ax.transAxes)
        return
    _log_axis(ax, bins)
    if v.min() == v.max():  # a fixed-token model: one bar, labelled with its value
        i = int(np.clip(np.searchsorted(bins, v[0], side="right") - 1, 0, len(bins) - 2))
        ax.bar(bins[i], v.size, width=bins[i + 1] - bins[i], align="edge", color=color)
        ax.annotate(
            f"all {v.size:,} images: {v[0]:,.0f} {unit}",
            (math.sqrt(bins[i] * bins[i + 1]), v.size),
            xytext=(0, 4),
            textcoords="offset points",
            ha="center"
            if 0.2 < i / len(bins) < 0.8
            else ("left" if i < len(bins) / 2 else "right"),
            va="bottom",
            fontsize=9,
        )
        ax.set_ylim(0, v.size * 1.3)
    else:
        ax.hist(v, bins=bins, color=color)
    ax.set_ylabel("images")


def _caption(doc: dict[str, Any]) -> str:
    """One line (wrapped to the figure) of totals and, with a fleet, GPU-hours."""
    presets, inp, opts = doc["presets"], doc["input"], doc.get("options", {})
    images = max((e.get("images", 0) for e in presets.values()), default=0)
    parts = [f"{inp['rows']:,} rows, {images:,} images"]
    tokens = [
        f"{lb} {e['total_image_tokens']:,}"
        for lb, e in presets.items()
        if "total_image_tokens" in e
    ]
    if tokens:
        parts.append("vision tokens: " + ", ".join(tokens))
    hours = [
        f"{lb} {e['projection']['gpu_hours']:,.0f}"
        for lb, e in presets.items()
        if (e.get("projection") or {}).get("gpu_hours") is not None
    ]
    if hours:
        target = (
            f"{opts['samples']:,.0f} samples"
            if opts.get("samples")
            else f"{opts.get('target_tokens', 0):,.0f} tokens"
        )
        parts.append(
            f"GPU-hours for {target} on {opts['gpus']:,} GPUs at "
            f"{opts['tokens_per_gpu_second']:,g} tokens/s: " + ", ".join(hours)
        )
    text = "; ".join(parts)
    if inp.get("sampled"):
        text += f" (estimated from {inp['rows_read']:,} sampled rows)"
    return "\n".join(textwrap.wrap(text, width=int(WIDTH_IN * 13)))


def budget_figure(tallies: dict[str, Any], doc: dict[str, Any]):
    """The figure as a matplotlib Figure (not saved)."""
    plt = _pyplot()
    labels = list(tallies)
    n = len(labels)
    colors = [plt.get_cmap("tab10")(i % 10) for i in range(n)]
    fig = plt.figure(figsize=(WIDTH_IN, 2.6 * n + 4.2), layout="constrained")
    grid = fig.add_gridspec(n + 1, 2, height_ratios=[1] * n + [1.5])
    tokens = [tallies[lb].tokens.values for lb in labels]
    ratios = [tallies[lb].bytes_per_token.values for lb in labels]
    token_bins, ratio_bins = _log_bins(tokens), _log_bins(ratios)
    left = right = None
    for i, label in enumerate(labels):
        entry = doc["presets"][label]
        left = fig.add_subplot(grid[i, 0], sharex=left)
        right = fig.add_subplot(grid[i, 1], sharex=right)
        _histogram(left, tokens[i], token_bins, colors[i], "tokens")
        _histogram(right, ratios[i], ratio_bins, colors[i], "B/token")
        p = entry.get("image_tokens_percentiles") or {}
        stats = f" (p50 {p['p50']:,}, p99 {p['p99']:,})" if p.get("p50") is not None else ""
        left.set_title(f"{label}: vision tokens per image{stats}", fontsize=10, loc="left")
        cv = entry.get("bytes_per_token_cv")
        cv_text = f" (CV {cv:.2f})" if cv is not None else ""
        right.set_title(f"{label}: encoded bytes per token{cv_text}", fontsize=10, loc="left")
        last = i == n - 1
        left.set_xlabel("vision tokens per image (log scale)" if last else "")
        right.set_xlabel("encoded bytes per vision token (log scale)" if last else "")
        left.tick_params(labelbottom=last)
        right.tick_params(labelbottom=last)
    _storage_bars(fig.add_subplot(grid[n, :]), labels, colors, doc)
    fig.suptitle(_caption(doc), fontsize=10, x=0.01, ha="left")
    return fig


def _storage_bars(ax, labels: list[str], colors, doc: dict[str, Any]) -> None:
    forms = [
        f
        for f in FORMS
        if any(f in doc["presets"][lb].get("bytes_per_token_by_form", {}) for lb in labels)
    ]
    n = max(len(labels), 1)
    width = 0.8 / n
    x = np.arange(len(forms))
    for i, label in enumerate(labels):
        by_form = doc["presets"][label].get("bytes_per_token_by_form", {})
        values = [by_form.get(f, np.nan) for f in forms]
        bars = ax.bar(x + (i - (n - 1) / 2) * width, values, width, label=label, color=colors[i])
        ax.bar_label(
            bars,
            labels=[short(float(f"{v:.3g}")) if np.isfinite(v) else "" for v in values],
            fontsize=8 if n <= 4 else 7,
            rotation=0 if n <= 4 else 90,
            padding=2,
        )
    ax.set_xticks(x, [FORMS[f] for f in forms])
    shown = [
        v
        for lb in labels
        for f, v in doc["presets"][lb].get("bytes_per_token_by_form", {}).items()
        if f in forms and v > 0
    ] or [1.0]
    # room below the lowest bar, and above the highest for its value label
    _log_y(ax, min(shown) / 2, max(shown) * (3 if n <= 4 else 12))
    ax.set_ylabel("bytes per vision token (log)")
    ax.set_title(
        "bytes the loader reads per vision token, by storage form", fontsize=10, loc="left"
    )
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)
