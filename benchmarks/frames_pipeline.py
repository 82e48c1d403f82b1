"""`mmtok sample-frames` as a whole process: wall time, the main process's own CPU, and the CPU
of every process, over generated clips; two mmtok trees side by side (before/after a change).

  python benchmarks/frames_pipeline.py --roots /path/to/old ./ --clips 40 --repeats 3

Runs are interleaved (root A, root B, root A, ...) and the best of --repeats is kept, so a
noisy shared machine moves both alike. The main process's CPU is its own `RUSAGE_SELF` (its
threads included, its workers and the worker server not). Each root's outputs are also read
back and compared: the rows, rejects and videos side file of every run must be equal.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.video.fixtures import make_video  # noqa: E402

# runs mmtok's CLI in this process and records this process's own CPU at exit
MAIN = """
import atexit, json, resource, sys
out = sys.argv.pop(1)
def dump():
    r = resource.getrusage(resource.RUSAGE_SELF)
    # VmHWM, not ru_maxrss: that one keeps the peak of the process that exec'd this one
    status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines())
    with open(out, "w") as f:
        json.dump({"cpu": r.ru_utime + r.ru_stime,
                   "rss_mb": int(status["VmHWM"].split()[0]) / 1024}, f)
atexit.register(dump)
sys.argv[0] = "mmtok"
from mmtok.cli.entry import main
main()
"""


def make_clips(folder: Path, count: int, size: tuple[int, int], distinct: int = 8) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    kinds = ["h264", "open_gop", "mkv", "vfr_mp4"]
    made = []
    for i in range(distinct):
        path = folder / f"src{i}.{'mkv' if kinds[i % 4] == 'mkv' else 'mp4'}"
        make_video(path, kinds[i % 4], width=size[0], height=size[1], frames=120)
        made.append(path)
    for i in range(count):
        src = made[i % distinct]
        shutil.copy(src, folder / f"clip{i:03d}{src.suffix}")
    for path in made:
        path.unlink()
    return folder


def run(root: Path, clips: Path, out: Path, workers: int, fmt: str) -> dict:
    stats = out.with_suffix(".json")
    cmd = [
        sys.executable, "-c", MAIN, str(stats), "sample-frames", str(clips),
        "--num-frames", "8", "--frame-format", fmt, "-o", str(out), "--overwrite",
        "-w", str(workers),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(root)}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    main = json.loads(stats.read_text())
    return {"wall": wall, "main_cpu": main["cpu"], "main_rss_mb": main["rss_mb"]}


def contents(out: Path) -> tuple[pa.Table, pa.Table | None, pa.Table]:
    """The rows in shard order, the rejects, the videos side file (file layout aside)."""
    rows = pa.concat_tables(pq.read_table(p) for p in sorted(out.glob("part-*.parquet")))
    rejects_path = out / "__mmtok__" / "rejects.parquet"
    rejects = pq.read_table(rejects_path) if rejects_path.exists() else None
    videos = pq.read_table(out / "__mmtok__" / "videos.parquet")
    return rows.replace_schema_metadata(None), rejects, videos.replace_schema_metadata(None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--roots", type=Path, nargs="+", default=[ROOT])
    parser.add_argument("--clips", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--formats", nargs="+", default=["jpeg", "raw"])
    parser.add_argument("--size", default="320x240", help="of the clips, WxH")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mmtok-frames-bench-"))
    try:
        size = tuple(int(x) for x in args.size.split("x"))
        clips = make_clips(work / "clips", args.clips, size)  # type: ignore[arg-type]
        print(f"{args.clips} clips {args.size}, 120 frames; --num-frames 8; best of {args.repeats}")
        print("| format | -w | root | wall s | main CPU s | main peak RSS MB |")
        print("|---|---|---|---|---|---|")
        for fmt in args.formats:
            for workers in args.workers:
                best: dict[Path, dict] = {}
                for _ in range(args.repeats):
                    for i, root in enumerate(args.roots):
                        out = work / f"out-{fmt}-{workers}-{i}"
                        got = run(root.resolve(), clips, out, workers, fmt)
                        if root not in best or got["wall"] < best[root]["wall"]:
                            best[root] = got
                        best[root]["main_cpu"] = min(best[root]["main_cpu"], got["main_cpu"])
                reference = contents(work / f"out-{fmt}-{workers}-0")
                for i, root in enumerate(args.roots):
                    same = contents(work / f"out-{fmt}-{workers}-{i}") == reference
                    b = best[root]
                    print(
                        f"| {fmt} | {workers} | {root} | {b['wall']:.2f} | {b['main_cpu']:.2f} "
                        f"| {b['main_rss_mb']:.0f} |" + ("" if same else " OUTPUT DIFFERS")
                    )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
