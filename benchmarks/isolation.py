"""Fault injection for the executor's isolation: workers SIGKILLed from outside at random
instants, on top of rows that kill their worker every time. Reports trials and failures.

  python benchmarks/isolation.py                 # 100 trials (~2 s each on 2 idle cores)
  python benchmarks/isolation.py --trials 500

Each trial probes 200 rows with 2 workers (batches of 8) and kills 1-3 random workers at random
instants (at setup, mid-batch, during a row-by-row retry, idle). A trial passes when every input row is in the output or in
the rejects exactly once, the kept rows are in input order, the poison rows are `decoder_crash`
rejects, and every other reject is a row a random kill hit twice (also `decoder_crash`). Linux
only (finds the workers in /proc).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "engine"))  # the poison stage, importable by workers

from poison_stages import PoisonProbe  # noqa: E402

from mmtok.engine.pipeline import OutputOptions, run_pipeline  # noqa: E402
from mmtok.io.sources import Inputs, ReadOptions  # noqa: E402

ROWS, POISON = 200, (37, 151)


def workers_of(pid: int) -> list[int]:
    found = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        for child in map(int, Path(f"/proc/{pid}/task/{tid}/children").read_text().split()):
            try:
                if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                    found.append(child)
            except FileNotFoundError:
                pass
    return found


def killer(rng: random.Random, kills: int, stop: threading.Event, log: list[int]) -> None:
    for _ in range(kills):
        if stop.wait(rng.uniform(0.02, 0.6)):
            return
        pids = workers_of(os.getpid())
        if pids:
            pid = rng.choice(pids)
            try:
                os.kill(pid, signal.SIGKILL)
                log.append(pid)
            except ProcessLookupError:
                pass


def trial(source: Path, out: Path, rng: random.Random) -> tuple[bool, str, int]:
    stop, log = threading.Event(), []
    thread = threading.Thread(target=killer, args=(rng, rng.randint(1, 3), stop, log))
    thread.start()
    try:
        manifest = run_pipeline(
            Inputs([str(source)], ReadOptions(batch_rows=8)),
            [PoisonProbe()],
            OutputOptions(str(out), overwrite=True, shard_rows=100),
            workers=2,
        )
    finally:
        stop.set()
        thread.join()
    kept = [
        r
        for f in manifest["files"]
        if f["kind"] == "rows"
        for r in pq.read_table(out / f["name"], columns=["id"]).to_pylist()
    ]
    rejects = pq.read_table(
        out / "__mmtok__" / "rejects.parquet", columns=["id", "reason"]
    ).to_pylist()
    ids = [r["id"] for r in kept] + [r["id"] for r in rejects]
    expected = [f"r{i}" for i in range(ROWS)]
    if sorted(ids) != sorted(expected):
        return False, f"rows lost or duplicated: {len(ids)} ids for {ROWS} rows", len(log)
    order = [int(r["id"][1:]) for r in kept]
    if order != sorted(order):
        return False, "kept rows out of input order", len(log)
    reasons = {r["id"]: r["reason"] for r in rejects}
    if any(reasons.get(f"r{i}") != "decoder_crash" for i in POISON):
        return False, f"poison rows not rejected: {reasons}", len(log)
    if any(reason != "decoder_crash" for reason in reasons.values()):
        return False, f"unexpected reasons: {reasons}", len(log)
    extra = len(reasons) - len(POISON)
    return True, f"{extra} extra rows hit twice" if extra else "", len(log)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        image = tmp / "photo.jpg"
        Image.effect_noise((640, 480), 64).convert("RGB").save(image, quality=90)
        rows = [{"id": f"r{i}", "image": str(image), "caption": f"row {i}"} for i in range(ROWS)]
        for i in POISON:
            rows[i]["caption"] = "#kill"
        source = tmp / "rows.jsonl"
        source.write_text("".join(json.dumps(r) + "\n" for r in rows))
        failures = kills = hit_twice = 0
        t0 = time.monotonic()
        for n in range(args.trials):
            ok, note, killed = trial(source, tmp / "out", rng)
            kills += killed
            failures += not ok
            hit_twice += bool(note) and ok
            if not ok or note:
                print(f"trial {n}: {'ok' if ok else 'FAILED'} {note}", flush=True)
        seconds = time.monotonic() - t0
    print(
        f"{args.trials} trials, {kills} workers killed at random instants, {failures} failures, "
        f"{hit_twice} trials where a random kill hit a row twice; {seconds:.0f} s"
    )
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
