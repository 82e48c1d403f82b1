"""Probe throughput and memory. Prints figures as ratios against a bare Pillow loop measured
in the same run, so they compare across machines.

  python benchmarks/probe.py            # example data + 5,000 generated JPEGs, 5k vs 50k rows
  python benchmarks/probe.py --quick    # 1,000 JPEGs, 1k vs 10k rows
  python benchmarks/probe.py --scaling 20000 [--mmtok-root /work/main] [--baseline DIR]
                                        # only: `mmtok probe` -w1 vs -w2, whole process
                                        # (--baseline: another checkout too, interleaved)

Scaling: the `mmtok probe ... -o OUT` command in a fresh process, wall time from start to exit,
and the CPU time of it and all its processes (user + system) per row: on a machine shared with
other jobs the wall-time ratio says little, the CPU per row still does.

Reference: one process calling `PIL.Image.open(path).size` per file (the least any header
probe can do). mmtok adds the stage engine, Arrow batches, Parquet shards and the manifest.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _measure import command_cost
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def make_jpegs(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """Mixed sizes from thumbnails to 2 MP, photo-like content (smooth + noise)."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        w, h = (int(v) for v in rng.integers(64, 1800, 2))
        small = rng.integers(0, 255, (max(h // 32, 2), max(w // 32, 2), 3), dtype=np.uint8)
        im = Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR)
        path = folder / f"{i:06d}_{w}x{h}.jpg"
        im.save(path, "JPEG", quality=int(rng.integers(60, 95)))
        paths.append(path)
    return paths


def bare_pillow_rate(paths: list[Path], decode: bool) -> float:
    t0 = time.perf_counter()
    for p in paths:
        with Image.open(p) as im:
            if decode:
                im.convert("RGB")
            else:
                _ = im.size
    return len(paths) / (time.perf_counter() - t0)


def write_rows(path: Path, images: list[Path], rows: int) -> Path:
    with open(path, "w") as f:
        for i in range(rows):
            f.write(
                json.dumps({"image": str(images[i % len(images)]), "caption": f"row {i}"}) + "\n"
            )
    return path


RUNNER = """
import json, resource, sys, time
from mmtok.engine.pipeline import OutputOptions, run_pipeline
from mmtok.io.sources import Inputs
from mmtok.stages.probe import ProbeStage
src, out, workers, decode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
t0 = time.perf_counter()
m = run_pipeline(Inputs([src]), [ProbeStage(decode_check=decode)], OutputOptions(out, overwrite=True), workers=workers)
seconds = time.perf_counter() - t0
print(json.dumps({"rows": m["counts"]["in"], "seconds": seconds,
                  "main_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_mmtok(rows_file: Path, out: Path, workers: int, decode: bool = False) -> dict:
    """One run in a fresh process (includes pool start-up), so peak RSS is this run's own:
    the main process's, and the largest of all its processes (workers included)."""
    args = [str(rows_file), str(out), str(workers), "1" if decode else "0"]
    cost = command_cost([sys.executable, "-c", RUNNER, *args], ROOT)
    return {**json.loads(cost.stdout), "peak_mb": cost.peak_mb}


def scaling(rows: int, roots: list[Path], repeats: int = 2) -> None:
    """`mmtok probe` on `rows` JPEG rows with 1 and 2 workers, whole process (best of
    `repeats`, since other jobs on the machine only ever make a run slower), for each checkout
    in `roots`, their runs interleaved so that the machine's load falls on each alike."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "jpegs").mkdir()
        jpegs = make_jpegs(tmp / "jpegs", min(rows, 1_000))
        rows_file = write_rows(tmp / "rows.jsonl", jpegs, rows)
        reference = bare_pillow_rate(jpegs, decode=False)
        costs: dict[tuple[Path, int], list] = {(r, w): [] for r in roots for w in (1, 2)}
        for _ in range(repeats):
            for (root, workers), runs in costs.items():
                cmd = [sys.executable, "-m", "mmtok", "probe", str(rows_file), "-o"]
                cmd += [str(tmp / "out"), "--overwrite", "-w", str(workers), "--quiet"]
                runs.append(command_cost(cmd, root))
        print(f"probe, {rows:,} JPEG rows, whole process, best of {repeats}")
        print(f"bare Pillow header loop, 1 process: {reference:,.0f} rows/s")
        print(f"{'mmtok from':<24}{'workers':>8}{'rows/s':>10}{'speed-up':>10}"
              f"{'CPU us/row':>12}{'peak MB':>9}")  # fmt: skip
        for root in roots:
            first = None
            for workers in (1, 2):
                best = min(costs[root, workers], key=lambda c: c.wall)
                rate = rows / best.wall
                first = first or rate
                cpu = min(c.cpu for c in costs[root, workers]) / rows * 1e6
                print(
                    f"{str(root)[-24:]:<24}{workers:>8}{rate:>10,.0f}{rate / first:>10.2f}"
                    f"{cpu:>12.1f}{best.peak_mb:>9.0f}"
                )
        load = os.getloadavg()[0]
        print(f"load average now: {load:.1f} on {len(os.sched_getaffinity(0))} cores")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--scaling", type=int, metavar="ROWS", help="only 1 vs 2 workers")
    parser.add_argument("--mmtok-root", type=Path, default=ROOT)
    parser.add_argument(
        "--baseline", type=Path, help="--scaling: also another checkout, interleaved (before/after)"
    )
    parser.add_argument("--repeats", type=int, default=2, help="--scaling: runs of each")
    args = parser.parse_args()
    if args.scaling:
        roots = [args.baseline, args.mmtok_root] if args.baseline else [args.mmtok_root]
        scaling(args.scaling, roots, args.repeats)
        return
    n_images = 1_000 if args.quick else 5_000
    cores = len(os.sched_getaffinity(0))
    print(f"machine: {cores} cores; python {sys.version.split()[0]}; Pillow {Image.__version__}")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        examples = sorted((ROOT / "examples" / "images").glob("*"))
        t0 = time.perf_counter()
        (tmp / "jpegs").mkdir()
        jpegs = make_jpegs(tmp / "jpegs", n_images)
        total_mb = sum(p.stat().st_size for p in jpegs) / 1e6
        print(
            f"generated {n_images:,} JPEGs ({total_mb:,.0f} MB) in {time.perf_counter() - t0:.0f} s\n"
        )

        print("probe rate (images/s); ratio = mmtok per worker / bare Pillow loop")
        print(
            f"{'data':<28}{'mode':<14}{'workers':>8}{'mmtok/s':>10}{'per worker':>12}{'pillow/s':>10}{'ratio':>8}"
        )
        sets = [
            ("examples (37 rows)", examples, write_rows(tmp / "ex.jsonl", examples, len(examples))),
            (f"{n_images:,} mixed JPEGs", jpegs, write_rows(tmp / "gen.jsonl", jpegs, n_images)),
        ]
        for label, paths, rows_file in sets:
            good = [p for p in paths if p.name not in ("coffee_truncated.jpg",)]
            for decode in (False, True):
                reference = bare_pillow_rate(good, decode)
                for workers in sorted({1, cores}):
                    r = run_mmtok(rows_file, tmp / "out", workers, decode)
                    rate = r["rows"] / r["seconds"]
                    mode = "decode-check" if decode else "header"
                    print(
                        f"{label:<28}{mode:<14}{workers:>8}{rate:>10,.0f}{rate / workers:>12,.0f}"
                        f"{reference:>10,.0f}{rate / workers / reference:>8.2f}"
                    )

        print("\npeak memory, header probe, all cores (must not grow with rows)")
        small, large = (1_000, 10_000) if args.quick else (5_000, 50_000)
        results = {}
        for rows in (small, large):
            r = run_mmtok(write_rows(tmp / f"rows{rows}.jsonl", jpegs, rows), tmp / "out", cores)
            results[rows] = r
            print(
                f"{rows:>8,} rows: main {r['main_rss_mb']:6.0f} MB, largest process {r['peak_mb']:6.0f} MB,"
                f" {r['rows'] / r['seconds']:,.0f} rows/s"
            )
        ratio = results[large]["main_rss_mb"] / results[small]["main_rss_mb"]
        print(f"main RSS ratio {large:,} / {small:,} rows: {ratio:.2f} (1.00 = flat)")


if __name__ == "__main__":
    main()
