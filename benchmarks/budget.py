"""`estimate-budget` throughput with 3 presets (header only) next to a reference image processor
on the same images, in one run, and peak memory at two dataset sizes.

  python benchmarks/budget.py            # 100,000 image headers (files generated once)
  python benchmarks/budget.py --quick    # 10,000

Reference: transformers' Qwen2-VL PIL processor on the same files (open, RGB, processor), timed
on the first 200 images: what a team runs today to count tokens. mmtok: the whole command on
all cores (`-w 2` here), timed by its manifest (after imports), then peak RSS (largest single
process of the run) for 10% of the rows and for all of them (memory must not grow with the rows).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

PRESETS = ["llama3-336", "qwen2-vl", "kimi-vl"]


def make_files(folder: Path, count: int) -> list[Path]:
    """`count` rows over 2,000 distinct JPEGs (sizes 200-4000 px); rows repeat files, as the
    header probe reads each row's file anyway (warm cache, as the issue's figures)."""
    rng = np.random.default_rng(0)
    distinct = []
    for i in range(2000):
        w, h = (int(v) for v in rng.integers(200, 4001, 2))
        path = folder / f"{i:05d}_{w}x{h}.jpg"
        Image.new("RGB", (w, h), tuple(int(c) for c in rng.integers(0, 255, 3))).save(
            path, quality=80
        )
        distinct.append(path)
    return [distinct[i % len(distinct)] for i in range(count)]


def reference_rate(paths: list[Path]) -> float:
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    proc = Qwen2VLImageProcessorPil(
        size={"shortest_edge": 3136, "longest_edge": 12845056},
        patch_size=14,
        merge_size=2,
        temporal_patch_size=2,
    )
    t0 = time.perf_counter()
    for path in paths:
        with Image.open(path) as im:
            proc(im.convert("RGB"))
    return len(paths) / (time.perf_counter() - t0)


def run_budget(source: Path, rows: int, work: Path) -> tuple[float, float]:
    """(rows/s by the manifest's clock, peak RSS MB of the mmtok process tree)."""
    cmd = [sys.executable, "-m", "mmtok", "estimate-budget", str(source), "-w", "2", "--json"]
    cmd += sum((["-p", p] for p in PRESETS), [])
    cmd += ["-o", str(work / f"out{rows}"), "--overwrite"]
    # a fresh wrapper per run: RUSAGE_CHILDREN is a running maximum over a process's children
    wrapper = (
        "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)"
    )
    result = subprocess.run(
        [sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True, check=True
    )
    doc = json.loads(result.stdout)
    assert doc["counts"]["in"] == rows
    peak_kb = int(result.stderr.strip().splitlines()[-1])
    return rows / doc["timing"]["seconds"], peak_kb / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    count = 10_000 if args.quick else 100_000
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "img").mkdir()
        paths = make_files(work / "img", count)
        ref = reference_rate(paths[:200])
        small, full = work / "small.jsonl", work / "full.jsonl"
        for path, n in ((small, count // 10), (full, count)):
            path.write_text(
                "".join(
                    json.dumps({"image": str(p), "caption": "a photo " * 8}) + "\n"
                    for p in paths[:n]
                )
            )
        rate_small, rss_small = run_budget(small, count // 10, work)
        rate, rss = run_budget(full, count, work)
        print(f"{count:,} image headers, 3 presets ({', '.join(PRESETS)}), 2 workers")
        print(f"reference Qwen2-VL processor: {ref:,.1f} images/s (one core)")
        print(
            f"mmtok estimate-budget:        {rate:,.0f} images/s  = {rate / ref:,.0f}x the reference"
        )
        print(f"  at {count // 10:,} rows: {rate_small:,.0f} images/s")
        print(
            f"peak RSS: {rss_small:,.0f} MB at {count // 10:,} rows, {rss:,.0f} MB at {count:,} rows ({rss / rss_small:.2f}x)"
        )


if __name__ == "__main__":
    main()
