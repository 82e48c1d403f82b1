"""Reader throughput: rows per CPU second for reading inputs into Arrow batches (scan + read),
on clean JSON Lines, on JSON Lines where 1% of the rows are dirty (lone surrogates, bytes that
are not UTF-8: repaired row by row in their batch), on CSV, and a WebDataset shard through the
tar walker next to Python's `tarfile`.

  python benchmarks/read.py            # 100,000 rows
  python benchmarks/read.py --quick    # 20,000

CPU time (`time.process_time`), best of 5, so other work on a shared machine counts less.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import tarfile
import tempfile
import time
from pathlib import Path

from mmtok.io.sources import Inputs, ReadOptions
from mmtok.io.tar import tar_members


def row(i: int, rng: random.Random) -> dict:
    return {
        "id": f"r{i}",
        "image": f"images/{i % 1000}/{i}.jpg",
        "caption": f"a photo of a cat sitting on a mat number {i} with some words",
        "url": f"http://example.com/{i}.jpg",
        "width": 640,
        "score": rng.random(),
        "tags": ["a", "b"],
    }


def write_inputs(folder: Path, count: int) -> dict[str, Path]:
    rng = random.Random(0)
    rows = [row(i, rng) for i in range(count)]
    clean, dirty, table = folder / "clean.jsonl", folder / "dirty.jsonl", folder / "rows.csv"
    with open(clean, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    with open(dirty, "wb") as f:
        for i, r in enumerate(rows):
            if i % 200 == 0:
                r = {**r, "caption": r["caption"] + " \ud83d"}  # a cut emoji, escaped
            line = json.dumps(r).encode()
            if i % 200 == 100:
                line = line.replace(b"a photo", b"a ph\xf6to")  # Latin-1, not UTF-8
            f.write(line + b"\n")
    with open(table, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return {"jsonl clean": clean, "jsonl 1% dirty": dirty, "csv": table}


def best_cpu(fn, repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def read_all(path: Path) -> int:
    inputs = Inputs([str(path)], ReadOptions())
    return sum(b.num_records for b in inputs.batches())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    count = 20_000 if parser.parse_args().quick else 100_000
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, path in write_inputs(folder, count).items():
            assert read_all(path) == count
            seconds = best_cpu(lambda path=path: read_all(path))
            print(f"{name:16} {count / seconds:12,.0f} rows per CPU second")
        shard = folder / "shard.tar"
        rng = random.Random(1)
        with tarfile.open(shard, "w") as tar:
            for i in range(count // 10):
                for ext, data in (("jpg", rng.randbytes(20_000)), ("txt", b"a caption")):
                    info = tarfile.TarInfo(f"{i:07d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))

        def with_tarfile() -> None:
            with tarfile.open(shard, "r|") as tar:
                for m in tar:
                    tar.extractfile(m).read()

        def with_walker() -> None:
            with open(shard, "rb") as f:
                for _ in tar_members(f):
                    pass

        mb = shard.stat().st_size / 1e6
        for name, fn in (("tarfile", with_tarfile), ("mmtok.io.tar", with_walker)):
            print(f"{name:16} {mb / best_cpu(fn, 3):12,.0f} MB per CPU second (members only)")
        seconds = best_cpu(lambda: read_all(shard), 3)
        print(f"{'webdataset':16} {count // 10 / seconds:12,.0f} samples per CPU second")


if __name__ == "__main__":
    main()
