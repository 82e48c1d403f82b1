"""Why the Ray engine runs plain tasks, not Ray Data `map_batches`: a poison row (one that kills
its worker process every time, as a decoder segfault or the out-of-memory killer does) under
Ray Data, against `mmtok ... --engine ray` (per-row isolation: one `decoder_crash` reject).

  python benchmarks/ray_data_poison.py               # ~2-4 min on 2 idle cores
  python benchmarks/ray_data_poison.py --limit 60    # seconds each scenario may run

Each scenario runs in its own process with its own local Ray (2 CPUs): ROWS rows in BLOCKS
blocks, `map_batches(fn, batch_format="pyarrow")`, where fn `os._exit(3)`s on row POISON and
passes the other rows through. Prints per scenario: how it ended, seconds, rows out, and how
many worker processes the poison row killed (each death appends to a file first).

Measured with ray 2.60.0 on 2 shared cores (--limit 60): Ray Data's defaults retry the dying
task forever (35 deaths in 60 s, no result; the actor pool: 13 deaths, no result);
`max_retries=3` fails the whole job after 4 deaths (WorkerCrashedError, ~19 s, no rows);
`max_errored_blocks=1` does not change that (it counts exceptions, not dead workers); mmtok's
Ray engine: 1999 rows kept in order and one `decoder_crash` reject naming the row, ~12 s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROWS, BLOCKS, POISON = 2000, 16, 1000

SCENARIOS = {
    "ray_data_defaults": "Ray Data, defaults (map tasks: max_retries=-1)",
    "ray_data_retries3": "Ray Data, map_batches(max_retries=3)",
    "ray_data_errored_block": "Ray Data, max_retries=3 + DataContext.max_errored_blocks=1",
    "ray_data_actors": "Ray Data, actor pool (concurrency=2), defaults",
    "mmtok_ray": "mmtok run_pipeline --engine ray, poison stage",
}


def _poison_fn(deaths: str):
    import pyarrow as pa

    def fn(batch: pa.Table) -> pa.Table:
        if POISON in batch.column("id").to_pylist():
            with open(deaths, "a") as f:
                f.write(f"{os.getpid()}\n")
            os._exit(3)
        return batch

    return fn


class _PoisonActor:
    def __init__(self, deaths: str):
        self.fn = _poison_fn(deaths)

    def __call__(self, batch):
        return self.fn(batch)


def _ray_data(name: str, deaths: str) -> dict:
    import ray
    from ray.data import DataContext

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    ds = ray.data.range(ROWS, override_num_blocks=BLOCKS)
    kwargs: dict = {"batch_format": "pyarrow"}
    if name in ("ray_data_retries3", "ray_data_errored_block"):
        kwargs["max_retries"] = 3  # map_batches(**ray_remote_args)
    if name == "ray_data_errored_block":
        DataContext.get_current().max_errored_blocks = 1
    if name == "ray_data_actors":
        ds = ds.map_batches(_PoisonActor, fn_constructor_args=(deaths,), concurrency=2, **kwargs)
    else:
        ds = ds.map_batches(_poison_fn(deaths), **kwargs)
    try:
        rows = ds.take_all()
    except Exception as e:  # noqa: BLE001 - the outcome is what we measure
        return {"ended": f"raised {type(e).__name__}: {str(e).splitlines()[0][:160]}"}
    ids = {r["id"] for r in rows}
    return {"ended": "finished", "rows_out": len(rows), "lost": ROWS - len(ids)}


def _mmtok(deaths: str) -> dict:
    sys.path.insert(0, str(ROOT / "tests" / "engine"))  # the poison stage; the workers inherit
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests" / "engine"), str(ROOT)])
    import pyarrow.parquet as pq
    from PIL import Image
    from poison_stages import PoisonProbe

    from mmtok.engine.pipeline import OutputOptions, run_pipeline
    from mmtok.io.sources import Inputs, ReadOptions

    folder = Path(deaths).parent
    image = folder / "1x1.png"
    Image.new("RGB", (1, 1)).save(image)
    rows = [
        {"id": i, "image": str(image), "caption": "#exit" if i == POISON else "x"}
        for i in range(ROWS)
    ]
    source = folder / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    manifest = run_pipeline(
        Inputs([str(source)], ReadOptions(batch_rows=ROWS // BLOCKS)),
        [PoisonProbe()],
        OutputOptions(str(folder / "out")),
        engine="ray",
    )
    rejects = pq.read_table(folder / "out" / "__mmtok__" / "rejects.parquet").to_pylist()
    return {
        "ended": "finished",
        "rows_out": manifest["counts"]["out"],
        "lost": ROWS - manifest["counts"]["out"] - manifest["counts"]["rejected"],
        "rejects": [(r["id"], r["reason"], r["message"][:60]) for r in rejects][:5],
    }


def run_one(name: str, limit: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="mmtok-raydata-") as tmp:
        deaths = Path(tmp) / "deaths"
        deaths.touch()
        env = {**os.environ, "HOME": tmp, "RAY_USAGE_STATS_ENABLED": "0"}
        t0 = time.monotonic()
        command = [sys.executable, __file__, "--scenario", name, "--deaths", str(deaths)]
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=limit)
            lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
            result = json.loads(lines[-1]) if lines else {"ended": f"exit {done.returncode}"}
        except subprocess.TimeoutExpired:
            result = {"ended": f"still running after {limit:g} s (killed)"}
        result["seconds"] = round(time.monotonic() - t0, 1)
        if name != "mmtok_ray":  # mmtok's poison stage keeps no count (its batch, then alone)
            result["worker_deaths"] = len(deaths.read_text().split())
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=float, default=60.0)
    parser.add_argument("--scenario", help=argparse.SUPPRESS)
    parser.add_argument("--deaths", help=argparse.SUPPRESS)
    parser.add_argument("--only", nargs="*", default=list(SCENARIOS))
    args = parser.parse_args()
    if args.scenario:  # the child: one scenario, its result as the last line
        if args.scenario == "mmtok_ray":
            result = _mmtok(args.deaths)
        else:
            result = _ray_data(args.scenario, args.deaths)
        print(json.dumps(result), flush=True)
        os._exit(0)  # not Ray's shutdown: the parent times us
    print(f"{ROWS} rows in {BLOCKS} blocks, row {POISON} kills its worker every time")
    for name in args.only:
        print(f"{SCENARIOS[name]}: {json.dumps(run_one(name, args.limit))}", flush=True)


if __name__ == "__main__":
    main()
