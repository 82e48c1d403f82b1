"""The budget arithmetic of `../shared/design/budget.md`: sums per preset, the figures built from
them (totals, means, bytes per token, storage forms, context fit, projection), bootstrap
intervals for a sample, and the settings search behind `--suggest`. Pure functions over
numbers; the command feeds them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pyarrow as pa

from mmtok.presets import Preset, Refused
from mmtok.stats import PercentileSample, RowSample, exact_float, exact_sum

# Presets whose image tokens are discrete codebook ids a trainer can store instead of pixels.
VQ_PRESETS = frozenset({"chameleon", "emu3", "janus"})
PERCENTILES = (5, 50, 95, 99)
# per-row values kept when sampling, for the bootstrap
ARRAY_COLUMNS = (
    "image_tokens", "prompt_tokens", "text_tokens", "file_bytes", "rgb_bytes",
    "pixel_bytes_uint8", "sequence_tokens", "overflow", "bytes_per_token",
)  # fmt: skip


@dataclass
class Options:
    """What the figures depend on besides the data."""

    context: int | None = None
    target_tokens: float | None = None
    samples: float | None = None
    gpus: int | None = None
    tokens_per_gpu_second: float | None = None
    read_gbps: float | None = None  # GB/s (bytes), not gigabits
    embed_dim: int | None = None
    image_embed_dim: int | None = None  # one pooled embedding per image (CLIP-style)
    text_bytes_per_token: int = 4


@dataclass
class Sums:
    """Additive totals over the rows one preset laid out. The float sums are exact
    (`mmtok.stats.exact_sum`, rounded once when read), so they do not depend on how the rows
    were cut into batches, merged from workers or re-read by a resumed run."""

    rows: int = 0
    image_tokens: int = 0
    prompt_tokens: int = 0
    text_tokens: int = 0
    file_bytes: int = 0
    rgb_bytes: int = 0
    pixel_bytes_uint8: int = 0
    sequence_tokens: int = 0
    overflow: int = 0
    fit_rows: int = 0
    fit_sequence_tokens: int = 0
    # per-row bytes per token: exact sum and sum of squares (`b_sum`, `b_sumsq`), for the CV
    b_exact: int = 0
    b_sq_exact: int = 0
    b_rows: int = 0

    @property
    def b_sum(self) -> float:
        return exact_float(self.b_exact)

    @property
    def b_sumsq(self) -> float:
        return exact_float(self.b_sq_exact)

    def to_dict(self) -> dict[str, int | float]:
        """The sums as numbers (the exact sums as floats), for a shard's metadata."""
        out: dict[str, int | float] = {
            f.name: getattr(self, f.name) for f in fields(self) if not f.name.endswith("exact")
        }
        out["b_sum"], out["b_sumsq"] = self.b_sum, self.b_sumsq
        return out

    @classmethod
    def of(cls, a: dict[str, np.ndarray], *, spread: bool = True) -> Sums:
        """Sums of per-row arrays (the columns of ARRAY_COLUMNS). `spread` False: without the
        bytes-per-token sums (`distribution`'s, which `figures` does not read: the bootstrap's
        thousand resamples skip their exact sums)."""
        b = a["bytes_per_token"][~np.isnan(a["bytes_per_token"])]
        if not spread:
            b = b[:0]
        fit = a["overflow"] == 0
        return cls(
            rows=len(a["image_tokens"]),
            image_tokens=int(a["image_tokens"].sum()),
            prompt_tokens=int(a["prompt_tokens"].sum()),
            text_tokens=int(a["text_tokens"].sum()),
            file_bytes=int(a["file_bytes"].sum()),
            rgb_bytes=int(a["rgb_bytes"].sum()),
            pixel_bytes_uint8=int(a["pixel_bytes_uint8"].sum()),
            sequence_tokens=int(a["sequence_tokens"].sum()),
            overflow=int((~fit).sum()),
            fit_rows=int(fit.sum()),
            fit_sequence_tokens=int(a["sequence_tokens"][fit].sum()),
            b_exact=exact_sum(b),
            b_sq_exact=exact_sum(b * b),
            b_rows=int(b.size),
        )

    def __add__(self, other: Sums) -> Sums:
        return Sums(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


@dataclass
class PresetTally:
    """Everything kept per preset while the rows stream past (bounded memory). Mergeable: a
    worker fills a part per batch (`empty`, `add`; no preset, which would travel with every
    part), the main process merges them in input order (`merge`)."""

    preset: Preset | None
    sums: Sums = field(default_factory=Sums)
    refused: int = 0
    tokens: PercentileSample = field(default_factory=lambda: PercentileSample(seed=1, integer=True))
    bytes_per_token: PercentileSample = field(default_factory=lambda: PercentileSample(seed=2))
    arrays: list[dict[str, np.ndarray]] | None = None  # per-row values, only when sampling

    def empty(self) -> PresetTally:
        return PresetTally(
            None,
            tokens=self.tokens.empty(),
            bytes_per_token=self.bytes_per_token.empty(),
            arrays=[] if self.arrays is not None else None,
        )

    def add(self, table: pa.Table, label: str, context: int | None) -> None:
        arrays, refused, sums = batch_sums(table, label, context)
        self.refused += refused
        if arrays is None:
            return
        self.sums = self.sums + sums
        self.tokens.add(arrays["image_tokens"])
        self.bytes_per_token.add(arrays["bytes_per_token"])
        if self.arrays is not None:
            self.arrays.append(arrays)

    def merge(self, part: PresetTally) -> None:
        self.refused += part.refused
        self.sums = self.sums + part.sums
        self.tokens.merge(part.tokens)
        self.bytes_per_token.merge(part.bytes_per_token)
        if self.arrays is not None and part.arrays is not None:
            self.arrays.extend(part.arrays)


# (label, context) -> (the identity of the columns read, the columns, batch_sums' answer)
_LAST: dict[tuple[str, int | None], tuple[tuple, list[pa.ChunkedArray], tuple]] = {}
_READ = ("text_tokens", "file_bytes", "rgb_bytes")  # row_arrays' columns besides the preset's


def batch_sums(
    table: pa.Table, label: str, context: int | None
) -> tuple[dict[str, np.ndarray] | None, int, Sums | None]:
    """`row_arrays` and their `Sums` (None if no row was laid out). A worker writing shards
    asks twice per batch and preset (the shard's metadata, `ShardBudget`, then the summary's
    part, `PresetTally`), so the last answer per preset is kept, keyed by the columns'
    buffers (addresses, offsets, lengths). Those columns are held with it, so no other data
    can take their addresses while the key names them (Arrow buffers are immutable)."""
    columns = [table.column(label), *(table.column(name) for name in _READ)]
    key = tuple(
        (c.offset, len(c), *(0 if x is None else x.address for x in c.buffers()))
        for column in columns
        for c in column.chunks
    )
    last = _LAST.get((label, context))
    if last is not None and last[0] == key:
        return last[2]
    arrays, refused = row_arrays(table, label, context)
    answer = (arrays, refused, Sums.of(arrays) if arrays is not None else None)
    _LAST[(label, context)] = (key, columns, answer)
    return answer


def row_arrays(
    table: pa.Table, label: str, context: int | None
) -> tuple[dict[str, np.ndarray] | None, int]:
    """The ARRAY_COLUMNS of the rows one preset laid out (None if none), and how many it refused."""
    struct = table.column(label).combine_chunks()
    error = struct.field("error")
    refused = len(error) - error.null_count
    if refused == len(error):
        return None, refused
    # the rows laid out; None: all of them (the common batch), nothing to select
    ok = error.is_null().to_numpy(zero_copy_only=False) if refused else None

    def col(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
        x = values.to_numpy(zero_copy_only=False)  # nulls as NaN
        return np.asarray(x if ok is None else x[ok], dtype=np.float64)

    a = {
        name: col(struct.field(name))
        for name in ("image_tokens", "prompt_tokens", "sequence_tokens", "bytes_per_token")
    }
    pixels = struct.field("pixel_bytes_uint8")  # null: no pixel tensor, 0 bytes
    a["pixel_bytes_uint8"] = col(pixels.fill_null(0) if pixels.null_count else pixels)
    for name in ("text_tokens", "file_bytes", "rgb_bytes"):
        a[name] = col(table.column(name))
    over = a["sequence_tokens"] > context if context else np.zeros(len(a["image_tokens"]), bool)
    a["overflow"] = over.astype(np.float64)
    return a, refused


def _count(v: float) -> int:
    """A count estimated as a float (a sum times N_rows / n) is still a count."""
    return int(round(v))


def figures(s: Sums, scale: float, preset: Preset, opts: Options) -> dict[str, Any]:
    """The additive figures of one preset: totals scaled by `scale` (N_rows / n for a sample).
    Counts (images, tokens, bytes, rows) are integers; means and ratios are floats."""
    if s.rows == 0:
        return {"images": 0}
    text_bytes = opts.text_bytes_per_token * s.text_tokens
    per_sample = (s.image_tokens + s.text_tokens) / s.rows
    storage = {
        "encoded": s.file_bytes,
        "decoded_rgb": s.rgb_bytes,
        "pretiled_uint8": s.pixel_bytes_uint8 or None,
        "vq_ids": 2 * s.image_tokens if preset.name in VQ_PRESETS else None,
        "embeddings_fp16": 2 * opts.embed_dim * s.image_tokens if opts.embed_dim else None,
        # one float16 vector of D per image, as `mmtok embed` stores it
        "image_embedding_fp16": 2 * opts.image_embed_dim * s.rows if opts.image_embed_dim else None,
        "text_ids": text_bytes,
    }
    storage = {k: _count(v * scale) for k, v in storage.items() if v is not None}
    out: dict[str, Any] = {
        "images": _count(s.rows * scale),
        "total_image_tokens": _count(s.image_tokens * scale),
        "mean_image_tokens": s.image_tokens / s.rows,
        "total_prompt_tokens": _count(s.prompt_tokens * scale),
        "total_text_tokens": _count(s.text_tokens * scale),
        "mean_text_tokens": s.text_tokens / s.rows,
        "mean_tokens_per_sample": per_sample,
        "mean_sequence_tokens": s.sequence_tokens / s.rows,
        "vision_share": s.image_tokens / (s.image_tokens + s.text_tokens)
        if s.image_tokens + s.text_tokens
        else None,
        "bytes_per_token": s.file_bytes / s.image_tokens if s.image_tokens else None,
        "storage_bytes": storage,
        "bytes_per_token_by_form": {
            k: v / (s.image_tokens * scale) for k, v in storage.items() if k != "text_ids"
        }
        if s.image_tokens
        else {},
    }
    if opts.read_gbps:
        # One pass over this input (not a projection): images of each form plus the text ids.
        out["epoch_read_seconds"] = {
            k: (v + storage["text_ids"]) / (opts.read_gbps * 1e9)
            for k, v in storage.items()
            if k != "text_ids"
        }
    if opts.context:
        out["context"] = {
            "context": opts.context,
            "overflow_rows": _count(s.overflow * scale),
            "overflow_share": s.overflow / s.rows,
            "samples_per_sequence": opts.context / (s.fit_sequence_tokens / s.fit_rows)
            if s.fit_rows
            else None,
        }
    out["projection"] = projection(s, storage, scale, opts, per_sample, text_bytes)
    return out


def projection(s, storage, scale, opts: Options, per_sample, text_bytes) -> dict[str, Any] | None:
    """Samples, training time, GPU-hours, bytes to read and the read bandwidth the loader must
    sustain (design note, "Projection"). Needs a target (--target-tokens or --samples) or a
    fleet (--gpus with --tokens-per-gpu-second)."""
    if not (opts.target_tokens or opts.samples or opts.gpus):
        return None
    out: dict[str, Any] = {}
    forms = {k: v for k, v in storage.items() if k != "text_ids"}
    per_sample_bytes = {k: (v / scale + text_bytes) / s.rows for k, v in forms.items()}
    samples = None
    if opts.samples:
        samples = _count(opts.samples)
    elif opts.target_tokens:
        samples = math.ceil(opts.target_tokens / per_sample)  # samples needed to reach it
    if samples:
        out["samples"] = samples
        out["compute_tokens"] = _count(samples * per_sample)
        out["bytes_to_read"] = {k: _count(samples * v) for k, v in per_sample_bytes.items()}
    if opts.gpus and opts.tokens_per_gpu_second:
        tokens_per_second = opts.gpus * opts.tokens_per_gpu_second
        per_token = {k: v / per_sample for k, v in per_sample_bytes.items()}
        out["read_bandwidth_bytes_per_second"] = {
            k: tokens_per_second * v for k, v in per_token.items()
        }
        out["read_bandwidth_per_gpu_bytes_per_second"] = {
            k: opts.tokens_per_gpu_second * v for k, v in per_token.items()
        }
        if samples:
            out["train_seconds"] = samples * per_sample / tokens_per_second
            out["gpu_hours"] = out["train_seconds"] * opts.gpus / 3600
        if opts.read_gbps:
            # how many times over the storage covers the sustained read rate
            out["read_headroom"] = {
                k: opts.read_gbps * 1e9 / v
                for k, v in out["read_bandwidth_bytes_per_second"].items()
                if v
            }
    if samples and opts.read_gbps:
        out["read_seconds"] = {
            k: v / (opts.read_gbps * 1e9) for k, v in out["bytes_to_read"].items()
        }
    return out


# The figures compared across presets (dotted keys into a preset's entry).
COMPARED = (
    "total_image_tokens",
    "projection.samples",
    "projection.gpu_hours",
    "projection.bytes_to_read.encoded",
)


def dotted(entry: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        entry = entry.get(part) if isinstance(entry, dict) else None
    return entry


def comparison(entries: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Each compared figure of each preset divided by the smallest among the presets (1.0 for
    the cheapest), when at least two presets have it."""
    out = {}
    for key in COMPARED:
        values = {label: dotted(e, key) for label, e in entries.items()}
        values = {k: v for k, v in values.items() if isinstance(v, int | float) and v > 0}
        if len(values) >= 2:
            low = min(values.values())
            out[key] = {label: v / low for label, v in values.items()}
    return out


def distribution(t: PresetTally) -> dict[str, Any]:
    """Non-additive figures: percentiles and the predictability of bytes per token."""
    s = t.sums
    b = t.bytes_per_token.percentiles(PERCENTILES)
    mean = s.b_sum / s.b_rows if s.b_rows else None
    cv = None
    if s.b_rows > 1 and mean:
        var = max(s.b_sumsq / s.b_rows - mean * mean, 0.0) * s.b_rows / (s.b_rows - 1)
        cv = var**0.5 / mean
    return {
        "image_tokens_percentiles": t.tokens.percentiles(PERCENTILES),
        "bytes_per_token_percentiles": b,
        "bytes_per_token_cv": cv,
        "bytes_per_token_p99_over_p50": b["p99"] / b["p50"] if b["p50"] else None,
        "percentiles_exact": t.tokens.exact,
    }


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, int | float]:
    """The numbers of a nested figures dict under dotted keys (`projection.samples`)."""
    out: dict[str, int | float] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        elif isinstance(v, int | float) and not isinstance(v, bool):
            out[prefix + k] = v
    return out


def bootstrap(
    arrays: list[dict[str, np.ndarray]],
    scale: float,
    preset: Preset,
    opts: Options,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, list[float]]:
    """95% percentile-bootstrap intervals of every additive figure (means, totals, ratios of
    sums, projections) from the sampled rows; the bounds of a count are counts."""
    if not arrays:
        return {}
    a = {k: np.concatenate([x[k] for x in arrays]) for k in ARRAY_COLUMNS}
    n = len(a["image_tokens"])
    counts = {
        k
        for k, v in flatten(figures(Sums.of(a, spread=False), scale, preset, opts)).items()
        if type(v) is int
    }
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    for _ in range(resamples):
        idx = rng.integers(0, n, n)
        resample = Sums.of({k: v[idx] for k, v in a.items()}, spread=False)
        values = flatten(figures(resample, scale, preset, opts))
        for k, v in values.items():
            draws.setdefault(k, []).append(v)
    out: dict[str, list[float]] = {}
    for k, v in draws.items():
        lo, hi = float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))
        out[k] = [_count(lo), _count(hi)] if k in counts else [lo, hi]
    return out


# -- --suggest ----------------------------------------------------------------------------------

SEARCHED = {
    "smart_resize": "max_pixels",
    "fit_to_canvas": "max_tiles",
    "internvl": "max_tiles",
    "moonvit": "in_token_limit",
}


def candidates(preset: Preset) -> list[int]:
    """Values of the searched parameter, smallest first (tokens never fall as they grow)."""
    p, family = preset.params, preset.family
    if family == "smart_resize":
        unit = (p["patch_size"] * p["merge_size"]) ** 2
        lo = max(p["min_pixels"] // unit, 1)
        hi = max(p["max_pixels"] // unit, lo)
        return [k * unit for k in range(lo, hi + 1)]
    if family in ("fit_to_canvas", "internvl"):
        return list(range(max(p.get("min_tiles", 1), 1), p["max_tiles"] + 1))
    if family == "moonvit":
        return [64 * k for k in range(1, p["in_token_limit"] // 64 + 1)]
    return []


# What a model accepts beyond its processor's arithmetic. Cross-attention tiling (Mllama, and
# the Llama 3 paper's design it ships): the vision model numbers its aspect-ratio embeddings for
# a fixed tile count (transformers mllama/configuration_mllama.py: "max_num_tiles must be 4 for
# default supported aspect ratios"; image_processing_mllama.py numbers aspect_ratio_ids from
# get_all_supported_aspect_ratios(max_image_tiles)), so another max_tiles gives wrong ids.
FIXED_REASON = {
    "cross_attention": "its aspect-ratio embeddings are learned for that many tiles; "
    "transformers' MllamaVisionConfig requires max_num_tiles=4",
}
# Images per prompt a model is known to handle, with the source.
IMAGES_PER_PROMPT = {
    "mllama": (
        1,
        "Meta recommends one image per prompt (huggingface.co/meta-llama/"
        "Llama-3.2-11B-Vision-Instruct/discussions/43)",
    ),
}


def fixed_reason(preset: Preset) -> str | None:
    """Why the searched parameter must keep its published value, or None if it may change."""
    if preset.family == "fit_to_canvas" and preset.params.get("cross_attention"):
        return FIXED_REASON["cross_attention"]
    return None


def limit_meaning(preset: Preset, value: int) -> str:
    """What the parameter's value bounds, in pixels, for a person configuring a server."""
    p, family = preset.params, preset.family
    if family == "smart_resize":
        f = p["patch_size"] * p["merge_size"]
        side = max(int(math.isqrt(value) // f) * f, f)
        return f"each image resized to at most {value:,} pixels (a square: {side}x{side})"
    if family in ("fit_to_canvas", "internvl"):
        t = p["tile_size"]
        tiles = "1 tile" if value == 1 else f"{value} tiles"
        return f"each image resized onto at most {tiles} of {t}x{t} pixels"
    if family == "moonvit":
        side = math.isqrt(value) * p["patch_size"]
        return (
            f"each image resized to at most {value:,} patches of {p['patch_size']} px "
            f"(a square: {side}x{side})"
        )
    return ""


def suggest(
    preset: Preset,
    rows: RowSample,
    *,
    context: int,
    share: float = 0.99,
    max_image_tokens: int | None = None,
    images_per_sample: int = 1,
) -> dict[str, Any]:
    """The largest value of the family's parameter at which `share` of rows fit: the images'
    prompt tokens plus the caption within `context` (and image tokens within the cap). The
    serving limits that go with it are ones the model accepts: a parameter the model fixes
    keeps its value, and a known limit on images per prompt caps the count."""
    key = SEARCHED.get(preset.family)
    if key is None:
        return {"error": f"{preset.family} presets have no size parameter to search"}
    sizes, text = rows.rows[:, :2].astype(int), rows.rows[:, 2]
    if len(sizes) == 0:
        return {"error": "no rows"}

    def evaluate(value: int):
        candidate = preset.with_overrides({key: str(value)})
        layouts = [candidate.layout(int(w), int(h)) for w, h in sizes]
        good = [not isinstance(x, Refused) for x in layouts]
        prompt = np.array(
            [x.prompt_tokens if g else np.inf for x, g in zip(layouts, good, strict=True)]
        )
        image = np.array(
            [x.image_tokens if g else np.inf for x, g in zip(layouts, good, strict=True)]
        )
        fits = images_per_sample * prompt + text <= context
        if max_image_tokens:
            fits &= image <= max_image_tokens
        return float(fits.mean()), layouts, image

    fixed = fixed_reason(preset)
    values = [preset.params[key]] if fixed else candidates(preset)
    lo, hi, best = 0, len(values) - 1, None
    while lo <= hi:  # the share that fits never rises with the value: binary search
        mid = (lo + hi) // 2
        fit, layouts, image = evaluate(values[mid])
        if fit >= share:
            best, lo = (values[mid], fit, layouts, image), mid + 1
        else:
            hi = mid - 1
    if best is None:
        what = f"{key}={values[0]:,}" if fixed else f"even the smallest {key} ({values[0]:,})"
        return {
            "parameter": key,
            "value": None,
            "fixed": fixed,
            "error": f"{what} leaves fewer than {share:.0%} of rows within {context:,} tokens"
            + (f" and {max_image_tokens:,} image tokens" if max_image_tokens else ""),
        }
    value, fit, layouts, image = best
    done = [x for x in layouts if not isinstance(x, Refused)]
    finite = image[np.isfinite(image)]
    largest = max(done, key=lambda x: x.resized[0] * x.resized[1])
    # Images per prompt, judged like the search: the largest k at which `share` of rows fit
    # k images of their own size beside their own caption.
    prompt = np.array([x.prompt_tokens if not isinstance(x, Refused) else np.inf for x in layouts])
    per_row = np.floor(np.maximum(context - text, 0) / prompt)
    by_context = int(np.sort(per_row)[len(per_row) - math.ceil(share * len(per_row))])
    known = IMAGES_PER_PROMPT.get(preset.name)
    if preset.params.get("cross_attention"):
        # the image is one text token: the context does not bound the count, the model does
        per_prompt, bound = (known[0], known[1]) if known else (None, "not bounded by the context")
    elif known and known[0] < by_context:
        per_prompt, bound = known
    else:
        per_prompt = by_context
        bound = (
            f"{share:.0%} of rows fit that many images of their size beside their caption "
            f"within {context:,} tokens"
        )
    return {
        "parameter": key,
        "value": value,
        "fixed": fixed,
        "preset": preset.with_overrides({key: str(value)}).spec(),
        "fit_share": fit,
        "limit": limit_meaning(preset, value),
        "image_tokens_p50": int(np.percentile(finite, 50, method="inverted_cdf")),
        "image_tokens_p99": int(np.percentile(finite, 99, method="inverted_cdf")),
        "max_resized_width": max(x.resized[0] for x in done),
        "max_resized_height": max(x.resized[1] for x in done),
        "largest_resized": list(largest.resized),
        "images_per_prompt": per_prompt,
        "images_per_prompt_bound": bound,
    }


# -- videos -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoCost:
    """One video under one preset's video rule, from its presented timestamps alone."""

    frames: int  # frames the rule samples
    vision_tokens: int
    frame_size: tuple[int, int]  # (width, height) each frame is fed at
    pixel_bytes_uint8: int  # frames x fed width x height x 3


def video_preset_name(label: str, preset: Preset) -> str | None:
    """The video rule of a preset label (`qwen2.5-vl:max_pixels=...` -> `qwen2.5-vl`), or None
    when the model has no published video rule in mmtok."""
    from mmtok.video.sampling import VIDEO_PRESETS

    base = label.split(":", 1)[0]
    for name in (base, preset.name):
        if name in VIDEO_PRESETS:
            return name
    return None


def video_cost(name: str, pts: np.ndarray, width: int, height: int) -> VideoCost | str:
    """What a video with presented timestamps `pts` (display size `width` x `height`) costs
    under video preset `name`; a string says why the rule cannot take it (too short, a size
    the model refuses)."""
    from mmtok.video.sampling import VIDEO_PRESETS, TooShort, sample_frames
    from mmtok.video.tokens import video_tokens

    try:
        frames = len(sample_frames(pts, VIDEO_PRESETS[name]).indices)
    except TooShort as e:
        return f"too_short: {e.message}"
    cost = video_tokens(name, frames, width, height)
    if isinstance(cost, Refused):
        return cost.error
    fed_w, fed_h = cost.frame_size
    return VideoCost(frames, cost.vision_tokens, (fed_w, fed_h), frames * fed_w * fed_h * 3)
