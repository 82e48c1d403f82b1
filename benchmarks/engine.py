"""The local engine against the Ray engine on this machine: the same stages on N generated
images, and dedup's clustering on M synthetic signatures.

  python benchmarks/engine.py                       # 20,000 images, 10,000,000 signatures
  python benchmarks/engine.py --images 2000 --signatures 1000000
  python benchmarks/engine.py --images 0            # clustering only (or --signatures 0)

Stages (one pass, as a recipe probe -> filter -> tile layout would run them): ProbeStage with
a full decode, FilterStage (min side 64, captions of 3+ words), LayoutStage (qwen2-vl), into an
output folder. Images: JPEG/PNG of 40-400 px with captions, 5% too small, 2% truncated.

Ray runs on a cluster this script starts (`ray start --head --block --num-cpus 2`, no
dashboard), reached by its address like a user's cluster; its start-up is reported apart.
Each measured run is a fresh process. Memory: the peak over time of the summed PSS of every
process involved (the run's process tree, plus the Ray node's processes), sampled every 0.2 s,
and the peak RSS of the largest single process.

Signatures: 64-bit perceptual hashes, a fifth of them with near copies (0-10 bits flipped) and
exact copies; clustering by image (distance 8), local `find_clusters` against
`mmtok.engine.ray_dedup.find_clusters_on_ray`. Caption bands are not generated at this size
(a Python loop per caption); their search on Ray is checked for exactness by the tests.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


# --- memory of a process tree ---------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            kids.setdefault(parent, []).append(int(entry))
    return kids


def tree(roots: list[int]) -> list[int]:
    kids, seen, todo = _children(), [], list(roots)
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.append(pid)
            todo.extend(kids.get(pid, []))
    return seen


def _kib(path: str, key: str) -> int:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Sampler:
    """Peak summed PSS of the trees under `roots` and peak RSS of the largest process."""

    def __init__(self, roots: list[int]):
        self.roots, self.total, self.largest = roots, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            pids = tree(self.roots)
            pss = sum(_kib(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids)
            self.total = max(self.total, pss)
            peaks = [_kib(f"/proc/{p}/status", "VmHWM:") for p in pids]
            self.largest = max([self.largest, *peaks])
            self._stop.wait(0.2)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


# --- a Ray cluster of our own ---------------------------------------------------------------


class Cluster:
    """A one-node Ray cluster with 2 CPUs, stopped (only it) at the end."""

    def __init__(self, cpus: int = 2):
        self.home = Path(tempfile.mkdtemp(prefix="mmtok-rb-"))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.address = f"127.0.0.1:{port}"
        self.env = {
            **os.environ,
            "HOME": str(self.home),
            "PYTHONPATH": str(ROOT),
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_worker_niceness": "0",  # Ray nices its workers (15): not on a shared machine
        }
        log = self.home / "head.log"
        t0 = time.monotonic()
        self.process = subprocess.Popen(
            [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block",
             "--num-cpus", str(cpus), "--include-dashboard=false", "--port", str(port),
             "--temp-dir", str(self.home / "t"), "--disable-usage-stats"],
            env=self.env, stdout=log.open("w"), stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, stopped whole at the end
        )  # fmt: skip
        while "Ray runtime started" not in log.read_text():
            if self.process.poll() is not None:
                raise RuntimeError(log.read_text())
            time.sleep(0.2)
        self.start_seconds = time.monotonic() - t0

    def stop(self) -> None:
        """SIGTERM, then SIGKILL to the node's process group (only the processes it started)."""
        self.process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        shutil.rmtree(self.home, ignore_errors=True)


# --- inputs -----------------------------------------------------------------------------------


def make_images(folder: Path, n: int, seed: int = 0) -> Path:
    """n image files and a JSON Lines listing with captions (made once per size)."""
    from PIL import Image

    listing = folder / f"images-{n}.jsonl"
    if listing.exists():
        return listing
    images = folder / f"images-{n}"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    words = [
        "a",
        "photo",
        "of",
        "the",
        "red",
        "blue",
        "cat",
        "dog",
        "on",
        "in",
        "tree",
        "house",
        "road",
        "sea",
        "sky",
    ]
    with open(listing.with_suffix(".tmp"), "w") as f:
        for i in range(n):
            w, h = (int(v) for v in rng.integers(40, 400, 2))
            if rng.random() < 0.05:
                w = int(rng.integers(8, 60))
            y, x = np.mgrid[0:h, 0:w]
            pixels = np.stack([x * 255 // w, y * 255 // h, (x + y + i) % 256], axis=2)
            pixels = (pixels + rng.integers(0, 30, (h, w, 3))).clip(0, 255).astype(np.uint8)
            path = images / f"{i:06d}.{'png' if i % 10 == 0 else 'jpg'}"
            Image.fromarray(pixels).save(path, quality=85)
            if rng.random() < 0.02:
                path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
            caption = " ".join(rng.choice(words, int(rng.integers(1, 12))).tolist())
            f.write(json.dumps({"image": str(path), "caption": caption}) + "\n")
    listing.with_suffix(".tmp").rename(listing)
    return listing


def synthetic_signatures(n: int, seed: int = 3):
    """Signatures with planted near and exact copies (image hashes only)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from mmtok.duplicates import Signatures

    rng = np.random.default_rng(seed)
    phash = rng.integers(0, 2**63, n, dtype=np.uint64) << np.uint64(1)
    copies = rng.choice(n, n // 5, replace=False)
    sources = rng.integers(0, n, len(copies))
    flips = rng.integers(0, 11, len(copies))
    noise = np.zeros(len(copies), np.uint64)
    for k in range(10):  # up to 10 random bits flipped per copy
        bit = rng.integers(0, 64, len(copies)).astype(np.uint64)
        noise ^= np.where(flips > k, np.uint64(1) << bit, np.uint64(0))
    phash[copies] = phash[sources] ^ noise
    sha = np.zeros((n, 4), np.uint64)
    sha[:, 0] = np.arange(n, dtype=np.uint64)
    sha[copies[flips == 0], 0] = sources[flips == 0].astype(np.uint64)
    return Signatures(
        # ids as Arrow strings made by Arrow: no Python object per row (10M of them: ~1 GB)
        ids=pc.binary_join_element_wise("r", pa.array(np.arange(n)).cast(pa.string()), ""),
        sha256=sha,
        phash=phash,
        mirror=phash ^ np.uint64(0x5555),
        pixels=rng.integers(10_000, 1_000_000, n),
        image_ok=np.ones(n, bool),
        bands=np.zeros((n, 0), np.uint64),
        caption_ok=np.zeros(n, bool),
        captions=pa.nulls(n, pa.string()),
        reason=pa.nulls(n, pa.string()),
        message=pa.nulls(n, pa.string()),
        reference=np.zeros(n, bool),
        embedding=np.zeros((n, 0), np.float16),
        embedding_ok=np.zeros(n, bool),
    )


# --- the measured runs (each in a child process) ----------------------------------------------


def child_pipeline(listing: str, out: str, engine: str, address: str | None) -> dict:
    from mmtok.engine.pipeline import OutputOptions, run_pipeline
    from mmtok.filters import FilterRules
    from mmtok.io.sources import Inputs
    from mmtok.presets import get_preset
    from mmtok.stages.filter import FilterStage
    from mmtok.stages.layout import LayoutStage
    from mmtok.stages.probe import ProbeStage

    stages = [
        ProbeStage(decode_check=True),
        FilterStage(FilterRules(min_side=64, require_caption=True, caption_min_words=3)),
        LayoutStage(get_preset("qwen2-vl")),
    ]
    t0 = time.monotonic()
    manifest = run_pipeline(
        Inputs([listing]), stages, OutputOptions(out), engine=engine, ray_address=address
    )
    return {"seconds": time.monotonic() - t0, "counts": manifest["counts"]}


def child_clusters(n: int, engine: str, address: str | None) -> dict:
    from mmtok.duplicates import Settings, find_clusters

    t0 = time.monotonic()
    sig = synthetic_signatures(n)
    made = time.monotonic() - t0
    settings = Settings(by="image", max_distance=8)
    t0 = time.monotonic()
    if engine == "ray":
        from mmtok.engine.ray_dedup import find_clusters_on_ray

        clusters = find_clusters_on_ray(sig, settings, address)
    else:
        clusters = find_clusters(sig, settings)
    seconds = time.monotonic() - t0
    return {
        "seconds": seconds,
        "signature_seconds": made,
        "dropped": int(clusters.dropped.sum()),
        "label_checksum": int(np.bitwise_xor.reduce(clusters.label * 2654435761 % 2**61)),
    }


def measure(args: list[str], roots: list[int], env: dict | None = None) -> dict:
    """Run this script as a child with `args`; its result plus the memory of it and `roots`."""
    process = subprocess.Popen(
        [sys.executable, __file__, "--child", *args],
        stdout=subprocess.PIPE,
        env=env or {**os.environ, "PYTHONPATH": str(ROOT)},
        text=True,
    )
    with Sampler([process.pid, *roots]) as sampler:
        stdout, _ = process.communicate()
    if process.returncode:
        raise RuntimeError(f"child {args} failed ({process.returncode})")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["peak_total_mib"] = sampler.total / 1024
    result["largest_process_mib"] = sampler.largest / 1024
    return result


def report(title: str, local: dict, ray: dict) -> None:
    print(f"\n{title}")
    print(f"  {'engine':8} {'seconds':>9} {'peak PSS (all processes)':>25} {'largest process':>16}")
    for name, r in (("local", local), ("ray", ray)):
        print(
            f"  {name:8} {r['seconds']:9.1f} {r['peak_total_mib']:21.0f} MiB"
            f" {r['largest_process_mib']:12.0f} MiB"
        )
    print(
        f"  ray / local: {ray['seconds'] / local['seconds']:.2f}x time, "
        f"{ray['peak_total_mib'] / local['peak_total_mib']:.2f}x memory (all processes), "
        f"{ray['largest_process_mib'] / local['largest_process_mib']:.2f}x largest process"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--signatures", type=int, default=10_000_000)
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "mmtok-bench-engine"))
    parser.add_argument("--child", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.child:
        kind, engine, address, *rest = args.child
        address = None if address == "-" else address
        if kind == "pipeline":
            result = child_pipeline(rest[0], rest[1], engine, address)
        else:
            result = child_clusters(int(rest[0]), engine, address)
        print(json.dumps(result))
        return

    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    listing = None
    if args.images:
        t0 = time.monotonic()
        listing = make_images(cache, args.images)
        print(f"{args.images:,} images ready in {time.monotonic() - t0:.1f} s ({listing})")
    cluster = Cluster(cpus=2)
    print(f"Ray head started in {cluster.start_seconds:.1f} s (2 CPUs), at {cluster.address}")
    roots = [cluster.process.pid]
    try:
        if listing is not None:
            work = Path(tempfile.mkdtemp(prefix="engine-", dir=cache))
            runs = {}
            for engine in ("local", "ray"):
                address = cluster.address if engine == "ray" else "-"
                runs[engine] = measure(
                    ["pipeline", engine, address, str(listing), str(work / engine)],
                    roots if engine == "ray" else [],
                    env=cluster.env if engine == "ray" else None,
                )
            assert runs["local"]["counts"] == runs["ray"]["counts"], runs
            counts = runs["local"]["counts"]
            report(
                f"probe (decode) -> filter -> layout on {args.images:,} images "
                f"({counts['out']:,} kept, {counts['rejected']:,} rejected; same on both)",
                runs["local"],
                runs["ray"],
            )
        if args.signatures:
            runs = {}
            for engine in ("local", "ray"):
                address = cluster.address if engine == "ray" else "-"
                runs[engine] = measure(
                    ["clusters", engine, address, str(args.signatures)],
                    roots if engine == "ray" else [],
                    env=cluster.env if engine == "ray" else None,
                )
            assert runs["local"]["label_checksum"] == runs["ray"]["label_checksum"], runs
            report(
                f"dedup clustering (by image, distance 8) on {args.signatures:,} signatures "
                f"({runs['local']['dropped']:,} duplicates; the same clusters on both; "
                f"signatures made in {runs['local']['signature_seconds']:.1f} s, not counted)",
                runs["local"],
                runs["ray"],
            )
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
