"""`estimate-budget --plot`: per preset, histograms of tokens per image and of bytes per token,
and one bar chart of bytes per token for each storage form. matplotlib loads only here."""

from __future__ import annotations

from typing import Any

import numpy as np

from mmtok.errors import MmtokError


def plot_budget(path: str, tallies: dict[str, Any], doc: dict[str, Any]) -> int:
    """Writes the figure to `path`; returns the number of panels."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MmtokError("--plot needs matplotlib", hint="pip install 'mmtok[plot]'") from None
    labels = list(tallies)
    rows = len(labels) + 1
    fig, axes = plt.subplots(rows, 2, figsize=(11, 3.2 * rows), squeeze=False)
    for i, label in enumerate(labels):
        tally = tallies[label]
        tokens = tally.tokens.values
        b = tally.bytes_per_token.values
        ax = axes[i][0]
        if tokens.size:
            ax.hist(tokens, bins=40, color="#4c72b0")
        ax.set_title(f"{label}: vision tokens per image")
        ax.set_xlabel("tokens per image")
        ax.set_ylabel("images")
        ax = axes[i][1]
        b = b[b > 0]
        if b.size:
            bins = np.logspace(np.log10(b.min()), np.log10(b.max() * 1.0001), 40)
            ax.hist(b, bins=bins, color="#dd8452")
            ax.set_xscale("log")
        cv = doc["presets"][label].get("bytes_per_token_cv")
        ax.set_title(f"{label}: encoded bytes per vision token (CV {cv:.2f})" if cv else label)
        ax.set_xlabel("bytes per token (log)")
        ax.set_ylabel("images")
    bar = plt.subplot2grid((rows, 2), (rows - 1, 0), colspan=2, fig=fig)
    axes[rows - 1][0].remove()
    axes[rows - 1][1].remove()
    forms = sorted(
        {f for p in doc["presets"].values() for f in p.get("bytes_per_token_by_form", {})}
    )
    width = 0.8 / max(len(labels), 1)
    for i, label in enumerate(labels):
        by_form = doc["presets"][label].get("bytes_per_token_by_form", {})
        values = [by_form.get(f, np.nan) for f in forms]
        bar.bar(np.arange(len(forms)) + i * width, values, width, label=label)
    bar.set_xticks(np.arange(len(forms)) + width * (len(labels) - 1) / 2, forms)
    bar.set_yscale("log")
    bar.set_ylabel("bytes per vision token (log)")
    bar.set_title("bytes the loader reads per vision token, by storage form")
    bar.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return 2 * len(labels) + 1
