"""The schema scan of a big JSON Lines input, in one pass in the main process against in parts
by the scan pool (`mmtok.io.sources.scan_pool`), and the whole `estimate-budget` command it
comes first in, against another checkout.

  python benchmarks/scan.py                                   # 1,000,000 rows, 1 and 2 processes
  python benchmarks/scan.py --rows 300000 --workers 1 2 4
  python benchmarks/scan.py --baseline /path/to/previous/checkout   # + the whole command

Rows point at a few hundred small JPEGs (the header probe is cheap, so the serial part shows).
Each figure is the best of `--repeat`, each in a fresh process whose worker server is already
up (as in the CLI, which starts it before its imports). Wall-clock seconds; ratio > 1: faster
than the scan in one pass (or than the baseline checkout).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

SCAN = """
import sys, time
from mmtok.engine.process import start_worker_server
from mmtok.io.sources import Inputs, ReadOptions
from mmtok.io.sources.slices import plan_slices
if __name__ == "__main__":
    start_worker_server()
    time.sleep(1.0)  # the server's imports, done while the CLI does its own
    start = time.perf_counter()
    inputs = Inputs([sys.argv[1]], ReadOptions(), int(sys.argv[2]))
    plan = plan_slices(inputs)
    print(time.perf_counter() - start)
"""


def write_rows(folder: Path, rows: int) -> Path:
    rng = np.random.default_rng(0)
    images = []
    for i in range(300):
        w, h = (int(v) for v in rng.integers(200, 2000, 2))
        path = folder / f"img{i}.jpg"
        small = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(small).resize((w, h)).save(path, quality=80)
        images.append(str(path))
    words = random.Random(0)
    path = folder / "rows.jsonl"
    with open(path, "w") as f:
        for i in range(rows):
            caption = f"a photo of thing {words.randint(0, 10**6)} on a table"
            f.write(json.dumps({"image": images[i % 300], "caption": caption, "url": f"u/{i}"}))
            f.write("\n")
    return path


def best(fn, repeat: int) -> float:
    return min(fn() for _ in range(repeat))


def scan_seconds(path: Path, workers: int, root: str) -> float:
    env = {**os.environ, "PYTHONPATH": root}
    done = subprocess.run(
        [sys.executable, "-c", SCAN, str(path), str(workers)],
        capture_output=True, text=True, env=env, check=True, cwd=root,
    )  # fmt: skip
    return float(done.stdout.split()[-1])


def command_seconds(path: Path, out: Path, root: str) -> float:
    env = {**os.environ, "PYTHONPATH": root}
    presets = ["-p", "llama3-336", "-p", "qwen2-vl", "-p", "kimi-vl"]
    cmd = [sys.executable, "-m", "mmtok", "estimate-budget", str(path), *presets]
    start = time.perf_counter()
    subprocess.run([*cmd, "-o", str(out), "--overwrite"], capture_output=True, env=env, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline", help="another checkout: the whole command, both ways")
    args = parser.parse_args()
    root = str(Path(__file__).resolve().parents[1])
    with tempfile.TemporaryDirectory() as tmp:
        path = write_rows(Path(tmp), args.rows)
        size = path.stat().st_size / 2**20
        print(f"{args.rows:,} JSON Lines rows, {size:.0f} MiB, {os.cpu_count()} CPUs")
        one = best(lambda: scan_seconds(path, 1, root), args.repeat)
        print(f"  scan + plan, one pass in the main process: {one:.2f} s")
        for workers in [w for w in args.workers if w > 1]:
            seconds = best(lambda w=workers: scan_seconds(path, w, root), args.repeat)
            print(
                f"  scan + plan, in parts, {workers} processes: {seconds:.2f} s ({one / seconds:.2f}x)"
            )
        if args.baseline:
            out = Path(tmp) / "out"
            times: dict[str, list[float]] = {root: [], args.baseline: []}
            for _ in range(args.repeat):  # interleaved: the machine's load hits both alike
                for checkout in times:
                    times[checkout].append(command_seconds(path, out, checkout))
            new, old = min(times[root]), min(times[args.baseline])
            print(
                f"  estimate-budget -o, 3 presets, default workers: {new:.2f} s "
                f"({args.rows / new:,.0f} rows/s), baseline {old:.2f} s ({old / new:.2f}x)"
            )


if __name__ == "__main__":
    main()
