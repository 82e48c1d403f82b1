"""Fault injection: real `mmtok` runs killed at random instants, then resumed until complete.

For each command (probe, filter, tile, estimate-budget, dedup), on inputs that carry their
image bytes (data URIs, so the main process writes large row groups), every trial:

  1. starts `python -m mmtok CMD input.jsonl -o OUT ...` in its own process group;
  2. at a random instant within a clean run's duration, sends SIGINT (Ctrl-C) or SIGKILL to
     the group; up to `--kills` times, each one to the `--resume` run that follows;
  3. runs `--resume` until the output is complete;
  4. checks: ids unique, rows out + rejects = rows in, every input id present exactly once,
     the manifest's counts and sha256 match the files, no staging folder left.

Prints trials and failures per command, and one JSON line at the end. Example:

    python benchmarks/faults.py --trials 20
    python benchmarks/faults.py --trials 500 --commands probe,dedup --workers 2
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

COMMANDS = {
    "probe": ["probe", "--decode-check"],
    "filter": ["filter", "--min-side", "60"],
    "tile": ["tile", "--preset", "qwen2-vl"],
    "estimate-budget": ["estimate-budget", "--preset", "qwen2-vl"],
    "dedup": ["dedup"],
}


def make_input(folder: Path, rows: int, seed: int = 0) -> tuple[Path, set[str]]:
    """JSON Lines whose images are inline (data URIs); repeats for dedup, some broken."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(40):
        w, h = int(rng.integers(40, 160)), int(rng.integers(40, 160))
        pixels = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "JPEG", quality=90)
        images.append(buf.getvalue())
    path = folder / "input.jsonl"
    ids = set()
    with open(path, "w") as f:
        for i in range(rows):
            data = images[i % len(images)] if i % 13 else b"\xff\xd8 not really a jpeg"
            uri = "data:image/jpeg;base64," + base64.b64encode(data).decode()
            ids.add(f"row-{i:06d}")
            f.write(json.dumps({"id": f"row-{i:06d}", "image": uri, "caption": f"row {i}"}) + "\n")
    return path, ids


def mmtok(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mmtok", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, as a shell job is
    )


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        return -999, "hung: " + err.decode(errors="replace")[-300:]
    return proc.returncode, err.decode(errors="replace")


def kill_at(proc: subprocess.Popen, delay: float, sig: signal.Signals) -> tuple[int, str]:
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.005)
    if proc.poll() is None:
        # Ctrl-C reaches the whole foreground group; so does kill -9 here, so that orphaned
        # workers (the executor's to stop) do not pile up on a small machine
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
    code, err = finish(proc)
    if sig == signal.SIGKILL:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    return code, err


def verify(out: Path, input_ids: set[str]) -> str | None:
    """None if the output is complete and exact; else what is wrong."""
    manifest_path = out / "__mmtok__" / "manifest.json"
    if not manifest_path.exists():
        return "no manifest"
    manifest = json.loads(manifest_path.read_text())
    for f in manifest["files"]:
        path = out / f["name"]
        if hashlib.sha256(path.read_bytes()).hexdigest() != f["sha256"]:
            return f"sha256 of {f['name']} differs from the manifest"
        if f["name"].endswith(".parquet") and pq.read_metadata(path).num_rows != f.get("rows"):
            return f"{f['name']} holds {pq.read_metadata(path).num_rows} rows, not {f.get('rows')}"
    kept = [
        i
        for f in manifest["files"]
        if f["kind"] == "rows"
        for i in pq.read_table(out / f["name"], columns=["id"]).column("id").to_pylist()
    ]
    rejected = pq.read_table(out / "__mmtok__" / "rejects.parquet", columns=["id"])
    rejected = rejected.column("id").to_pylist()
    counts = manifest["counts"]
    if len(set(kept)) != len(kept):
        return f"{len(kept) - len(set(kept))} duplicated kept ids"
    if counts["out"] != len(kept) or counts["rejected"] != len(rejected):
        return f"manifest counts {counts} vs {len(kept)} kept, {len(rejected)} rejected"
    if counts["in"] != len(input_ids) or len(kept) + len(rejected) != len(input_ids):
        return f"rows in {len(input_ids)} != out {len(kept)} + rejected {len(rejected)}"
    if set(kept) | set(rejected) != input_ids or set(kept) & set(rejected):
        return "an input id is missing, or both kept and rejected"
    if list(out.parent.glob(f".{out.name}.mmtok-staging*")):
        return "a staging folder is left"
    return None


def before_mmtok(err: str) -> bool:
    """A Ctrl-C that landed while Python itself started (site, runpy), before any mmtok code
    ran: the interpreter prints its own traceback, exit 1, and nothing was read or written."""
    lines = err.strip().splitlines()
    return bool(lines) and lines[-1].strip() == "KeyboardInterrupt" and "/mmtok/" not in err


def trial(
    command: str, base: list[str], out: Path, ids: set[str], duration: float, kills: int, rng
) -> str | None:
    shutil.rmtree(out, ignore_errors=True)
    for leftover in out.parent.glob(f".{out.name}.mmtok-staging*"):
        shutil.rmtree(leftover)
    first = True
    for _ in range(kills):
        sig = rng.choice([signal.SIGINT, signal.SIGKILL])
        args = base if first else [*base, "--resume"]
        code, err = kill_at(mmtok(args), rng.uniform(0, duration), sig)
        first = False
        if code not in (0, 130, 2, -signal.SIGKILL, -signal.SIGINT) and not before_mmtok(err):
            return f"{command}: exit {code} after {sig.name}: {err.strip()[-400:]}"
        if code == 2 and "already complete" not in err and "another mmtok run" not in err:
            return f"{command}: exit 2: {err.strip()[-400:]}"
    for _ in range(5):  # resume until complete (a second lock holder may still be exiting)
        code, err = finish(mmtok([*base, "--resume"]))
        if code == 0 or "already complete" in err:
            return verify(out, ids)
        if "another mmtok run" not in err:
            return f"{command}: resume exit {code}: {err.strip()[-400:]}"
        time.sleep(0.5)
    return f"{command}: never completed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10, help="trials per command")
    parser.add_argument("--commands", default=",".join(COMMANDS))
    parser.add_argument("--rows", type=int, default=600)
    parser.add_argument("--workers", default="1")
    parser.add_argument("--kills", type=int, default=2, help="kills per trial before the resume")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    results = {}
    with tempfile.TemporaryDirectory(prefix="mmtok-faults-") as tmp:
        folder = Path(tmp)
        source, ids = make_input(folder, args.rows, args.seed)
        for command in args.commands.split(","):
            out = folder / f"out-{command}"
            base = [
                *COMMANDS[command],
                str(source),
                "-o",
                str(out),
                "-w",
                args.workers,
                "--shard-rows",
                "50",
                "-q",
            ]
            t0 = time.monotonic()
            code, err = finish(mmtok(base))
            duration = time.monotonic() - t0
            problem = f"clean run exit {code}: {err[-400:]}" if code else verify(out, ids)
            failures = [problem] if problem else []
            trials = 0
            t0 = time.monotonic()
            for _ in range(args.trials):
                trials += 1
                if problem := trial(command, base, out, ids, duration, args.kills, rng):
                    failures.append(problem)
            results[command] = {"trials": trials, "failures": len(failures)}
            print(
                f"{command:16s} trials {trials:4d}  failures {len(failures):3d}  "
                f"(clean run {duration:.1f} s; {time.monotonic() - t0:.0f} s in all)",
                flush=True,
            )
            for problem in failures[:5]:
                print(f"    {problem}", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
