"""The human report of `mmtok estimate-budget`: the result document as tables a person planning
GPUs can read at any terminal width.

Figures measured on the input and figures projected from the target and the fleet sit in
separate, labelled sections. Presets are columns side by side when they fit; otherwise the
presets are split over several tables (the labels repeat), and below that the report becomes
one `label: value` line per figure. No number is ever cut: column widths are computed from the
cells, never left for rich to shrink.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

FORMS = {
    "encoded": "encoded files",
    "decoded_rgb": "decoded RGB",
    "pretiled_uint8": "pre-tiled uint8",
    "vq_ids": "VQ ids (uint16)",
    "embeddings_fp16": "embeddings (fp16)",
    "image_embedding_fp16": "one embedding per image (fp16)",
}
PERCENTILES = ("p5", "p50", "p95", "p99")
MIN_LABEL = 16  # labels wrap down to this width before presets are split over tables
MISSING = "-"


# -- numbers as text ------------------------------------------------------------------------


def plural(n: int, word: str, words: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else (words or word + 's')}"


def count(v: Any) -> str:
    return MISSING if v is None else f"{int(round(v)):,}"


def number(v: Any) -> str:
    """A mean or ratio: three significant figures or more, never scientific notation."""
    if v is None:
        return MISSING
    a = abs(v)
    if a >= 100:
        return f"{v:,.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def share(v: Any) -> str:
    return MISSING if v is None else f"{v:.1%}"


def ratio(v: Any) -> str:
    if v is None:
        return MISSING
    return f"{v:,.0f}x" if v >= 100 else f"{v:.1f}x" if v >= 10 else f"{v:.2f}x"


def size(v: Any, unit: str = "") -> str:
    """Bytes in SI units (kB = 1,000 B), as storage and network rates are sold."""
    if v is None:
        return MISSING
    for name, scale in (("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:,.2f} {name}{unit}"
    return f"{v:,.0f} B{unit}"


def duration(seconds: Any) -> str:
    if seconds is None:
        return MISSING
    for name, scale in (("days", 86400), ("h", 3600), ("min", 60), ("s", 1), ("ms", 1e-3)):
        if seconds >= scale:
            return f"{number(seconds / scale)} {name}"
    return f"{seconds * 1e6:.0f} µs" if seconds else "0 s"


# -- the report as sections of rows ---------------------------------------------------------


@dataclass
class Section:
    title: str
    rows: list[tuple[str, list[str]]] = field(default_factory=list)


def _get(entry: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        entry = entry.get(part) if isinstance(entry, dict) else None
    return entry


def sections(doc: dict[str, Any]) -> list[Section]:
    """The report's rows, one cell per preset, grouped in titled sections."""
    presets = doc["presets"]
    labels = list(presets)
    opts = doc.get("options", {})
    compared = doc.get("comparison", {})
    sampled = doc["input"].get("sampled")

    def cells(key: str, fmt) -> list[str]:
        return [fmt(_get(presets[lb], key)) for lb in labels]

    def add(section: Section, label: str, key: str, fmt, ci: bool = True) -> None:
        section.rows.append((label, cells(key, fmt)))
        if not (sampled and ci):
            return
        bounds = [presets[lb].get("ci95", {}).get(key) for lb in labels]
        low = [fmt(b[0]) if b else MISSING for b in bounds]
        high = [fmt(b[1]) if b else MISSING for b in bounds]
        if low != high:  # an interval of one value (a given figure) says nothing
            section.rows.append(("  95% interval from", low))
            section.rows.append(("                 to", high))

    def versus(section: Section, label: str, key: str) -> None:
        values = compared.get(key)
        if values and any(abs(v - 1) > 0.005 for v in values.values()):
            section.rows.append((label, [ratio(values.get(lb)) for lb in labels]))

    rows = doc["input"]["rows"]
    measured = Section(
        "Measured on this input"
        + (f" (estimated from {doc['input']['rows_read']:,} sampled rows)" if sampled else "")
    )
    add(measured, "images", "images", count)
    add(measured, "rejected (unreadable + refused)", "rejected", count, ci=False)
    add(measured, "vision tokens", "total_image_tokens", count)
    versus(measured, "  x the fewest", "total_image_tokens")
    add(measured, "vision tokens per image, mean", "mean_image_tokens", number)
    for p in PERCENTILES:
        add(measured, f"  {p}", f"image_tokens_percentiles.{p}", count, ci=False)
    add(measured, "caption tokens", "total_text_tokens", count)
    add(measured, "tokens per sample (vision + text)", "mean_tokens_per_sample", number)
    add(measured, "vision share of tokens", "vision_share", share)

    per_token = Section("Encoded bytes per vision token")
    add(per_token, "whole input (sum / sum)", "bytes_per_token", number)
    for p in PERCENTILES:
        add(per_token, f"  per image {p}", f"bytes_per_token_percentiles.{p}", number, ci=False)
    add(per_token, "CV (std / mean)", "bytes_per_token_cv", number, ci=False)
    add(per_token, "p99 / p50", "bytes_per_token_p99_over_p50", number, ci=False)

    storage = Section(f"Bytes to read for one pass over this input ({plural(rows, 'row')})")
    for form, name in (*FORMS.items(), ("text_ids", "caption token ids")):
        if any(form in presets[lb].get("storage_bytes", {}) for lb in labels):
            add(storage, name, f"storage_bytes.{form}", size)
    if opts.get("read_gbps"):
        add(
            storage,
            f"one pass at {opts['read_gbps']:g} GB/s (encoded)",
            "epoch_read_seconds.encoded",
            duration,
        )
    out = [measured, per_token, storage]

    if opts.get("context"):
        fit = Section(f"Context of {opts['context']:,} tokens")
        add(fit, "rows that overflow", "context.overflow_rows", count)
        add(fit, "  share", "context.overflow_share", lambda v: share(v) if v else "0%")
        add(fit, "samples per packed sequence", "context.samples_per_sequence", number)
        out.append(fit)

    if any(presets[lb].get("projection") for lb in labels):
        out.append(_projection(doc, add, versus))
    return out


def _projection(doc, add, versus) -> Section:
    opts = doc["options"]
    proj = Section("Projection (from the options, not measured)")
    # the compute tokens are in the JSON: samples x tokens per sample, both shown
    if opts.get("samples"):
        add(proj, "samples (given)", "projection.samples", count, ci=False)
    elif opts.get("target_tokens"):
        add(proj, "samples for the target", "projection.samples", count)
        versus(proj, "  x the fewest", "projection.samples")
    add(proj, "training time", "projection.train_seconds", duration)
    add(proj, "GPU-hours", "projection.gpu_hours", count)
    versus(proj, "  x the fewest", "projection.gpu_hours")
    add(proj, "bytes to read (encoded + text)", "projection.bytes_to_read.encoded", size)
    versus(proj, "  x the fewest", "projection.bytes_to_read.encoded")
    add(
        proj,
        "read rate needed, total",
        "projection.read_bandwidth_bytes_per_second.encoded",
        lambda v: size(v, "/s"),
    )
    add(
        proj,
        "  per GPU",
        "projection.read_bandwidth_per_gpu_bytes_per_second.encoded",
        lambda v: size(v, "/s"),
    )
    if opts.get("read_gbps"):
        add(
            proj,
            f"  headroom at {opts['read_gbps']:g} GB/s",
            "projection.read_headroom.encoded",
            ratio,
        )
        add(
            proj,
            f"reading it all at {opts['read_gbps']:g} GB/s",
            "projection.read_seconds.encoded",
            duration,
        )
    proj.rows = [r for r in proj.rows if any(c != MISSING for c in r[1])]
    return proj


def assumptions(doc: dict[str, Any]) -> str | None:
    """One line stating what the projection assumes."""
    opts = doc.get("options", {})
    parts = []
    if opts.get("samples"):
        parts.append(f"{opts['samples']:,.0f} samples")
    elif opts.get("target_tokens"):
        parts.append(f"{opts['target_tokens']:,.0f} compute tokens (vision + text)")
    if opts.get("gpus"):
        parts.append(
            f"{plural(opts['gpus'], 'GPU')} at {opts['tokens_per_gpu_second']:,g} tokens/s each"
        )
    if opts.get("read_gbps"):
        parts.append(f"storage reads {opts['read_gbps']:g} GB/s")
    return "projection: " + ", ".join(parts) if parts else None


# -- layout ---------------------------------------------------------------------------------


def _header(label: str, width: int) -> str:
    """A preset name wider than its numbers breaks after ':' and ',' (name:key=value,...)."""
    if len(label) <= width:
        return label
    return label.replace(":", ":\n").replace(",", ",\n")


def _widths(secs: list[Section], labels: list[str]) -> tuple[int, list[int]]:
    label_w = max(len(r[0]) for s in secs for r in s.rows)  # section titles wrap
    value_w = []
    for i, lb in enumerate(labels):
        cells = max(len(r[1][i]) for s in secs for r in s.rows)
        value_w.append(max(cells, *(len(x) for x in _header(lb, cells).splitlines())))
    return label_w, value_w


def _table(title: str, headers: list[str], label_w: int, value_w: list[int]) -> Table:
    table = Table(
        title=escape(title),
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        header_style="bold",
    )
    table.add_column("", width=label_w, overflow="fold")
    for header, w in zip(headers, value_w, strict=True):
        table.add_column(escape(header), justify="right", width=w, overflow="fold")
    return table


def _table_width(label_w: int, value_w: list[int]) -> int:
    """Columns that wide, as rich draws them (padding and separators included)."""
    table = _table("", ["" for _ in value_w], label_w, value_w)
    table.add_row("x" * label_w, *("x" * w for w in value_w))
    console = Console(width=10_000, file=io.StringIO(), color_system=None)
    console.print(table)
    return max(len(line.rstrip()) for line in console.file.getvalue().splitlines())


def _chunks(label_w: int, value_w: list[int], width: int) -> tuple[int, list[list[int]]] | None:
    """The label width and the groups of preset columns: as many side by side as fit, in order;
    None when not even one preset fits next to the labels."""
    label = min(label_w, MIN_LABEL)
    groups: list[list[int]] = []
    for i in range(len(value_w)):
        if groups and _table_width(label, [value_w[j] for j in [*groups[-1], i]]) <= width:
            groups[-1].append(i)
        elif _table_width(label, [value_w[i]]) <= width:
            groups.append([i])
        else:
            return None

    def fits(label: int) -> bool:
        return all(_table_width(label, [value_w[i] for i in g]) <= width for g in groups)

    while label < label_w and fits(label + 1):  # then widen the labels into what is left
        label += 1
    return label, groups


def _lines(console: Console, secs: list[Section], labels: list[str]) -> None:
    """Narrower than any table: per preset, one `label: value` line per figure, which a
    terminal wraps whole."""
    for i, preset in enumerate(labels):
        console.print(f"[bold]{escape(preset)}[/]", soft_wrap=True)
        for sec in secs:
            console.print(f"  {escape(sec.title)}", soft_wrap=True)
            for label, values in sec.rows:
                console.print(f"    {escape(label.strip())}: {values[i]}", soft_wrap=True)


def render(console: Console, doc: dict[str, Any]) -> None:
    inp = doc["input"]
    head = plural(inp["rows"], "row")
    if inp["sampled"]:
        head += f", estimated from a sample of {inp['rows_read']:,} (95% intervals below each)"
    reasons = ", ".join(f"{k}: {v:,}" for k, v in inp.get("rejected_by_reason", {}).items())
    head += f"; {plural(inp['rejected'], 'row')} unreadable" + (f" ({reasons})" if reasons else "")
    console.print(f"[bold]estimate-budget[/]: {escape(head)}", soft_wrap=False)
    console.print(f"caption tokens: {escape(doc['text_tokens']['method'])}", soft_wrap=False)
    labels = list(doc["presets"])
    secs = sections(doc)
    label_w, value_w = _widths(secs, labels)
    layout = _chunks(label_w, value_w, console.width)
    if layout is None:
        _lines(console, secs, labels)
    else:
        label_w, groups = layout
        for group in groups:
            for sec in secs:
                widths = [value_w[i] for i in group]
                headers = [_header(labels[i], value_w[i]) for i in group]
                table = _table(sec.title, headers, label_w, widths)
                for label, values in sec.rows:
                    table.add_row(escape(label), *(values[i] for i in group))
                console.print(table)
    line = assumptions(doc)
    if line and any(doc["presets"][lb].get("projection") for lb in labels):
        console.print(escape(line), soft_wrap=False)
    for label in labels:
        s = doc["presets"][label].get("suggest")
        if s:
            console.print(suggestion(label, s, doc), soft_wrap=False)
    if doc.get("plot"):
        console.print(f"plot: {escape(doc['plot']['path'])}", soft_wrap=False)


def suggestion(label: str, s: dict[str, Any], doc: dict[str, Any]) -> str:
    """The --suggest result of one preset as a sentence."""
    name = f"[bold]{escape(label)}[/]"
    if not s.get("value"):
        return f"{name}: {escape(s.get('error', 'no suggestion'))}"
    key, value = s["parameter"], s["value"]
    spec = f"{s['preset'].split(':')[0]}:{key}={value}"
    if s.get("fixed"):
        first = f"keep {key}={value:,}, which the model fixes ({s['fixed']}). It fits"
    else:
        first = f"{key}={value:,} fits"
    w, h = s["largest_resized"]
    n = s["images_per_prompt"]
    images = (
        f"{plural(n, 'image')} per prompt ({s['images_per_prompt_bound']})"
        if n is not None
        else f"images per prompt: {s['images_per_prompt_bound']}"
    )
    text = (
        f"{first} {s['fit_share']:.1%} of rows within {doc['options']['context']:,} tokens "
        f"(image tokens p50 {s['image_tokens_p50']:,}, p99 {s['image_tokens_p99']:,}). "
        f"Serve with --preset {spec}: {s['limit']}; in this data at most "
        f"{s['max_resized_width']:,} px wide and {s['max_resized_height']:,} px tall after "
        f"resize (largest {w:,}x{h:,}); {images}."
    )
    return f"{name}: {escape(text)}"
