"""Frame sampling speed and memory: mmtok auto vs raw decord vs PyAV.

  python benchmarks/frames.py                   # the issue's setting: 60 s 720p30 H.264
  python benchmarks/frames.py --quick           # 10 s 360p (< 2 min on 2 busy cores)

Prints, per test file (H.264, GOP 30 and GOP 250, generated here with PyAV and cached in
--workdir), the median time per video for N uniform frames:
- raw decord: `VideoReader(path)` + one `get_batch` + drop the reader (the reference loaders);
- mmtok auto: `probe_video` (the PyAV demux preflight) + `decode_frames(..., "auto")`;
- mmtok pyav: `probe_video` + `decode_frames(..., "pyav")` (the frame-exact PyAV path);
as ratios to raw decord (target: auto within 1.2x where decord is right), the preflight's cost as
a share of the decode (target < 5 %), and whether every returned frame was the right one (the
fixtures paint each frame's number into its pixels). Then, in this process, RSS after 20 and
after 200 decodes of a short clip per backend (flat = no leak), and videos/s over short clips
with a spawn pool of workers that each probe + decode (the executor's own pool is measured by
its benchmarks; this is the decode work alone).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mmtok.video.decode import decode_frames  # noqa: E402
from mmtok.video.probe import probe_video  # noqa: E402
from tests.video.fixtures import make_video, read_frame_number  # noqa: E402


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident set size of this process in MB (Linux /proc)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def uniform(n: int, k: int) -> list[int]:
    return np.linspace(0, n - 1, k).round().astype(int).tolist()


def raw_decord(path: Path, idx: list[int], threads: int) -> list[np.ndarray]:
    from decord import VideoReader, cpu

    reader = VideoReader(str(path), ctx=cpu(0), num_threads=threads)
    try:
        return list(reader.get_batch(idx).asnumpy())
    finally:
        del reader


def mmtok(path: Path, k: int, decoder: str, threads: int) -> tuple[list[np.ndarray], float, str]:
    """Frames, the probe's share of the time, the decoder used."""
    t0 = time.perf_counter()
    meta = probe_video(path)
    t1 = time.perf_counter()
    out = decode_frames(path, meta, uniform(meta.frame_count, k), decoder, threads=threads)
    t2 = time.perf_counter()
    return out.frames, (t1 - t0) / (t2 - t1), out.decoder


def right(frames: list[np.ndarray], want: list[int]) -> str:
    got = sum(read_frame_number(f) == w for f, w in zip(frames, want, strict=True))
    return f"{got}/{len(want)}"


def speed(args, work: Path) -> None:
    n = args.seconds * 30
    print(
        f"## {args.frames} uniform frames, {args.seconds} s {args.width}x{args.height} 30 fps "
        f"H.264, median of {args.repeats}, decoder threads={args.threads or 'auto'}"
    )
    print(
        "| GOP | raw decord s | mmtok auto s (ratio) | PyAV exact s (ratio) | preflight share "
        "| right frames (decord/auto/pyav) |"
    )
    print("|---|---|---|---|---|---|")
    for gop in args.gops:
        path = work / f"h264_{args.width}x{args.height}_{args.seconds}s_gop{gop}.mp4"
        if not path.exists():
            t = time.perf_counter()
            make_video(
                path, "h264_long_gop", width=args.width, height=args.height, frames=n, gop=gop
            )
            print(
                f"(generated {path.name}: {path.stat().st_size / 1e6:.1f} MB in "
                f"{time.perf_counter() - t:.0f} s)",
                file=sys.stderr,
            )
        want = uniform(n, args.frames)
        runs = {
            "raw decord": lambda p=path, w=want: (raw_decord(p, w, args.threads), 0.0, "decord"),
            "auto": lambda p=path: mmtok(p, args.frames, "auto", args.threads),
            "pyav": lambda p=path: mmtok(p, args.frames, "pyav", args.threads),
        }
        # interleaved, so that load on a shared machine hits every backend alike
        times: dict[str, list[float]] = {name: [] for name in runs}
        shares, results = [], {}
        for fn in runs.values():  # warm up: imports, page cache
            fn()
        for _ in range(args.repeats):
            for name, fn in runs.items():
                t = time.perf_counter()
                results[name] = fn()
                times[name].append(time.perf_counter() - t)
                if name == "auto":
                    shares.append(results[name][1])
        med = {name: statistics.median(ts) for name, ts in times.items()}
        base = med["raw decord"]
        print(
            f"| {gop} | {base:.3f} | {med['auto']:.3f} ({med['auto'] / base:.2f}x, "
            f"{results['auto'][2]}) | {med['pyav']:.3f} ({med['pyav'] / base:.2f}x) | "
            f"{statistics.median(shares):.1%} | "
            + " / ".join(right(results[k][0], want) for k in runs)
            + " |"
        )


def memory(args, work: Path) -> None:
    path = work / "rss_clip.mp4"
    if not path.exists():
        make_video(path, "h264", width=320, height=240, frames=60)
    loops = args.rss_loops
    print(
        f"\n## RSS (MB, this process) over {loops} decodes of 16 frames from a 2 s 320x240 "
        "clip, per backend in turn"
    )
    print(f"| backend | after 20 | after {loops} | growth 20 -> {loops} | peak |")
    print("|---|---|---|---|---|")
    meta = probe_video(path)
    idx = uniform(meta.frame_count, 16)
    runs = {
        "raw decord": lambda: raw_decord(path, idx, args.threads),
        "mmtok auto": lambda: decode_frames(path, probe_video(path), idx, "auto"),
        "mmtok pyav": lambda: decode_frames(path, probe_video(path), idx, "pyav"),
    }
    for name, fn in runs.items():
        at20 = 0.0
        for i in range(loops):
            fn()
            if i == 19:
                at20 = rss_mb()[0]
        now, peak = rss_mb()
        print(f"| {name} | {at20:.0f} | {now:.0f} | {now - at20:+.1f} | {peak:.0f} |")


def _clip_job(path: str) -> int:
    meta = probe_video(path)
    return len(decode_frames(path, meta, uniform(meta.frame_count, 8), "auto", threads=1).frames)


def throughput(args, work: Path) -> None:
    clips = []
    for k in range(4):  # four distinct clips, each listed clips/4 times
        path = work / f"clip_{k}.mp4"
        if not path.exists():
            make_video(path, "h264", width=320, height=240, frames=150, gop=30 + 30 * k)
        clips.append(str(path))
    jobs = [clips[i % 4] for i in range(args.clips)]
    with mp.get_context("spawn").Pool(args.workers) as pool:
        pool.map(_clip_job, clips)  # warm the workers (imports)
        t = time.perf_counter()
        frames = sum(pool.map(_clip_job, jobs, chunksize=1))
        dt = time.perf_counter() - t
    print(
        f"\n## {args.clips} clips (5 s 320x240), 8 uniform frames each, {args.workers} spawn "
        f"workers, 1 decoder thread each: {args.clips / dt:.1f} videos/s "
        f"({frames} frames in {dt:.1f} s)"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=int, default=60)
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--gops", type=int, nargs="+", default=[30, 250])
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="decoder threads (0: library default)")
    p.add_argument("--rss-loops", type=int, default=200)
    p.add_argument("--clips", type=int, default=100)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/mmtok-bench-frames"))
    p.add_argument("--quick", action="store_true", help="10 s 640x360, 5 repeats (runs in < 2 min)")
    args = p.parse_args()
    if args.quick:
        args.seconds, args.width, args.height, args.repeats = 10, 640, 360, 5
    args.workdir.mkdir(parents=True, exist_ok=True)
    speed(args, args.workdir)
    memory(args, args.workdir)
    throughput(args, args.workdir)


if __name__ == "__main__":
    main()
