"""`estimate-budget`: vision tokens and bytes per token for a dataset, per model preset.

One data pass (probe and count, optionally over a seeded random sample), then the global step:
totals, projections, bootstrap intervals and `--suggest` over what the pass gathered."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, ClassVar

from mmtok.errors import MmtokError
from mmtok.images import DEFAULT_MAX_PIXELS

from .options import DatasetOptions, option, require_module, same_fields, writable_file
from .plan import Part


class ShardBudget:
    """Per-shard sums per preset, for each shard's Parquet key-value metadata."""

    def __init__(self, labels: list[str], context: int | None):
        self.labels, self.context = labels, context
        self.tallies: dict[str, Any] = {}

    def add(self, kept: Any) -> None:
        from mmtok import budget as b

        for label in self.labels:
            _, _, sums = b.batch_sums(kept, label, self.context)
            if sums is not None:
                self.tallies[label] = self.tallies.get(label, b.Sums()) + sums

    def take(self) -> dict[str, str]:
        doc = {label: s.to_dict() for label, s in self.tallies.items()}
        self.tallies = {}
        return {"mmtok_budget": json.dumps(doc)}


@dataclass(kw_only=True)
class BudgetOptions(DatasetOptions):
    preset: list[str]
    preset_file: str | None = None
    tokenizer: str | None = None
    decode: bool = False
    sample: int | None = option(None, ge=1)
    seed: int = option(0, ge=0)
    context: int | None = option(None, ge=1)
    target_tokens: float | None = option(None, gt=0)
    samples: float | None = option(None, gt=0)
    gpus: int | None = option(None, ge=1)
    tokens_per_gpu_second: float | None = option(None, gt=0)
    read_gbps: float | None = option(None, gt=0)
    embed_dim: int | None = option(None, ge=1)
    image_embed_dim: int | None = option(None, ge=1)
    suggest: bool = False
    fit_share: float = option(0.99, gt=0, le=1)
    max_image_tokens: int | None = option(None, ge=1)
    images_per_sample: int = option(1, ge=1)
    plot: str | None = None
    exif: bool = True
    max_pixels: int = option(DEFAULT_MAX_PIXELS, ge=1)


def part(opts: BudgetOptions) -> Part:
    from mmtok import budget as b
    from mmtok.engine.pipeline import Observer
    from mmtok.io.layout import BUDGET_FILE
    from mmtok.io.sample import SampledInputs
    from mmtok.presets import get_preset, load_preset_file
    from mmtok.stages.budget import BudgetStage, MediaBudgetStage, VideoBudgetStage
    from mmtok.stages.probe import ProbeStage
    from mmtok.stats import RowSample
    from mmtok.text import TextCounter

    if opts.preset_file:
        load_preset_file(opts.preset_file)
    presets = {spec: get_preset(spec) for spec in dict.fromkeys(opts.preset)}
    context, sample, seed, exif = opts.context, opts.sample, opts.seed, opts.exif
    if opts.suggest and not context:
        raise MmtokError("--suggest needs --context")
    if opts.target_tokens and opts.samples:
        raise MmtokError("give --target-tokens or --samples, not both")
    if bool(opts.gpus) != bool(opts.tokens_per_gpu_second):
        raise MmtokError("--gpus and --tokens-per-gpu-second go together")
    if opts.plot:
        require_module("matplotlib", "plot", "--plot")
        writable_file(opts.plot, "--plot", opts.output)
    text = TextCounter(opts.tokenizer).setup()
    projection = same_fields(b.Options, opts, text_bytes_per_token=text.bytes_per_id)
    summary = BudgetSummary(
        {label: b.PresetTally(p, arrays=[] if sample else None) for label, p in presets.items()},
        RowSample(3, seed=seed) if opts.suggest else None,
        context=context,
        exif=exif,
    )
    tallies, rows = summary.tallies, summary.rows

    sampled: list[SampledInputs] = []

    def wrap(inputs: Any) -> SampledInputs:
        sampled.append(SampledInputs(inputs, sample, seed))
        return sampled[0]

    def document(manifest: dict[str, Any], out: Any) -> dict[str, Any]:
        counts = manifest["counts"]
        total_rows = sampled[0].total_rows if sampled else counts["in"]
        scale = total_rows / counts["in"] if counts["in"] else 1.0
        doc: dict[str, Any] = {
            "output": out.path if out else None,
            "input": {
                "rows": total_rows,
                "rows_read": counts["in"],
                "sampled": bool(sample),
                "seed": seed if sample else None,
                "rejected": counts["rejected"],
                "rejected_by_reason": counts.get("rejected_by_reason", {}),
            },
            "text_tokens": {
                "method": text.label,
                "exact": text.exact,
                "bytes_per_id": text.bytes_per_id,
            },
            "options": {k: v for k, v in dataclasses.asdict(projection).items() if v is not None},
            "presets": {},
            "counts": counts,
            "timing": manifest.get("timing"),
        }
        for label, tally in tallies.items():
            entry = {
                "preset": tally.preset.spec(),
                "rejected": counts["rejected"] + tally.refused,
                "refused": tally.refused,
                **b.figures(tally.sums, scale, tally.preset, projection),
                **(b.distribution(tally) if tally.sums.rows else {}),
            }
            if sample:
                entry["ci95"] = b.bootstrap(
                    tally.arrays, scale, tally.preset, projection, seed=seed
                )
            if opts.suggest:
                entry["suggest"] = b.suggest(
                    tally.preset,
                    rows,
                    context=context,
                    share=opts.fit_share,
                    max_image_tokens=opts.max_image_tokens,
                    images_per_sample=opts.images_per_sample,
                )
            doc["presets"][label] = entry
        doc["comparison"] = b.comparison(doc["presets"])
        if videos.videos:
            doc["videos"] = videos.to_dict()
        if opts.plot:
            from mmtok.plot import plot_budget

            doc["plot"] = {"path": opts.plot, "panels": plot_budget(opts.plot, tallies, doc)}
        return doc

    budget_stage = BudgetStage(presets, text, context=context, apply_exif=exif)
    stages = [
        # videos among the images: their costs from the container alone (stages/budget.py)
        MediaBudgetStage(
            [ProbeStage(max_pixels=opts.max_pixels, decode_check=opts.decode), budget_stage],
            VideoBudgetStage(budget_stage),
        )
    ]
    videos = VideoSummary(list(presets))
    return Part(
        "estimate-budget",
        "estimating the budget",
        stages,
        document,
        [
            Observer(BudgetSummary.columns + list(presets), summary=summary),
            Observer(videos.columns, summary=videos),
        ],
        wrap=wrap if sample else None,
        shard_stats=ShardBudget(list(presets), context),
        side_outputs=lambda doc: {BUDGET_FILE: doc},  # budget.json beside the rows
        videos=True,
    )


class BudgetSummary:
    """What estimate-budget keeps of the image rows: a `PresetTally` per preset and, for
    --suggest, a sample of (width, height, text tokens) as each preset sees them (EXIF rotation
    applied). Mergeable (`Observer.summary`): workers fill a part per batch, the main process
    merges the parts in input order."""

    columns: ClassVar[list[str]] = [
        "file_bytes", "rgb_bytes", "text_tokens", "width", "height", "exif_orientation",
    ]  # fmt: skip

    def __init__(
        self, tallies: dict[str, Any], rows: Any, *, context: int | None, exif: bool
    ) -> None:
        self.tallies, self.rows, self.context, self.exif = tallies, rows, context, exif

    def empty(self) -> BudgetSummary:
        tallies = {label: t.empty() for label, t in self.tallies.items()}
        rows = self.rows.empty() if self.rows is not None else None
        return BudgetSummary(tallies, rows, context=self.context, exif=self.exif)

    def add(self, table: Any) -> None:
        import numpy as np

        from mmtok.images.probe import SWAPS_SIDES

        for label, tally in self.tallies.items():
            tally.add(table, label, self.context)
        if self.rows is not None and table.num_rows:
            w = table.column("width").to_numpy(zero_copy_only=False)
            h = table.column("height").to_numpy(zero_copy_only=False)
            o = table.column("exif_orientation").fill_null(0).to_numpy(zero_copy_only=False)
            swap = np.isin(o, list(SWAPS_SIDES)) & self.exif  # no Python per row
            t = table.column("text_tokens").to_numpy(zero_copy_only=False)
            self.rows.add(np.stack([np.where(swap, h, w), np.where(swap, w, h), t], axis=1))

    def merge(self, part: BudgetSummary) -> None:
        for label, tally in self.tallies.items():
            tally.merge(part.tallies[label])
        if self.rows is not None:
            self.rows.merge(part.rows)


class VideoSummary:
    """The video rows of a mixed dataset: per preset, frames sampled and vision tokens.
    Mergeable, as `BudgetSummary`; seconds are summed exactly (as fractions), so the total
    does not depend on the batching."""

    def __init__(self, labels: list[str]):
        self.labels = labels
        self.columns = ["media", "video_duration", "file_bytes", *labels]
        self.videos = 0
        self.seconds = Fraction(0)
        self.file_bytes = 0
        self.per_preset = {
            label: {"videos": 0, "refused": 0, "seconds": Fraction(0), "frames": 0,
                    "vision_tokens": 0, "pixel_bytes_uint8": 0, "file_bytes": 0}
            for label in labels
        }  # fmt: skip

    def empty(self) -> VideoSummary:
        return VideoSummary(self.labels)

    def merge(self, part: VideoSummary) -> None:
        self.videos += part.videos
        self.seconds += part.seconds
        self.file_bytes += part.file_bytes
        for label, tally in self.per_preset.items():
            for key, value in part.per_preset[label].items():
                tally[key] += value

    def add(self, table: Any) -> None:
        import pyarrow.compute as pc

        if table.num_rows == 0 or "media" not in table.column_names:
            return
        video = pc.equal(table.column("media"), "video")
        if not pc.any(video).as_py():  # the common batch: images only, nothing to filter
            return
        rows = table.filter(video)
        self.videos += rows.num_rows
        seconds = [Fraction(d or 0.0) for d in rows.column("video_duration").to_pylist()]
        self.seconds += sum(seconds)
        sizes = rows.column("file_bytes").to_pylist()
        self.file_bytes += sum(sizes)
        for label in self.labels:
            tally = self.per_preset[label]
            costs = rows.column(label).to_pylist()
            for size, second, cost in zip(sizes, seconds, costs, strict=True):
                if cost is None or cost["error"] is not None:
                    tally["refused"] += 1
                    continue
                tally["videos"] += 1
                tally["seconds"] += second
                tally["frames"] += cost["num_tiles"]
                tally["vision_tokens"] += cost["image_tokens"]
                tally["pixel_bytes_uint8"] += cost["pixel_bytes_uint8"]
                tally["file_bytes"] += size

    def to_dict(self) -> dict[str, Any]:
        presets = {}
        for label, t in self.per_preset.items():
            n, tokens = t["videos"], t["vision_tokens"]
            t = {**t, "seconds": float(t["seconds"])}
            presets[label] = {
                **t,
                "mean_frames": t["frames"] / n if n else None,
                "mean_vision_tokens": tokens / n if n else None,
                "vision_tokens_per_second": tokens / t["seconds"] if t["seconds"] else None,
                "file_bytes_per_token": t["file_bytes"] / tokens if tokens else None,
                "frame_bytes_per_token": t["pixel_bytes_uint8"] / tokens if tokens else None,
            }
        return {
            "videos": self.videos,
            "seconds": round(float(self.seconds), 3),
            "file_bytes": self.file_bytes,
            "presets": presets,
        }
