"""Per-row isolation on a real two-node Ray cluster: a row that kills its Ray worker (SIGKILL,
os._exit) or hangs past --row-timeout becomes the same `decoder_crash` / `timeout` reject as on
the local engine (the same poison stage as tests/engine/test_isolation.py), every other row is
kept in input order, and the resume position is per slice."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from ray_cluster import ray_address, ray_driver  # noqa: F401 (fixtures)

pytest.importorskip("ray")

from poison_stages import PoisonProbe  # noqa: E402 (tests/engine, see ray_cluster.py)

from mmtok.engine.pipeline import OutputOptions, run_pipeline  # noqa: E402
from mmtok.errors import MmtokError  # noqa: E402
from mmtok.io.sources import Inputs, ReadOptions  # noqa: E402

pytestmark = pytest.mark.ray


def rows_with(image: Path, poison: dict[int, str], n: int = 40) -> list[dict]:
    rows = [{"id": f"r{i}", "image": str(image), "caption": f"row {i}"} for i in range(n)]
    for i, caption in poison.items():
        rows[i]["caption"] = caption
    return rows


def run(tmp_path: Path, rows: list[dict], engine: str, address: str, **kwargs) -> dict:
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / engine
    manifest = run_pipeline(
        Inputs([str(source)], ReadOptions(batch_rows=8)),
        [PoisonProbe()],
        OutputOptions(str(out), shard_rows=16),
        workers=2,
        engine=engine,
        ray_address=address,
        **kwargs,
    )
    rejects = pq.read_table(out / "__mmtok__" / "rejects.parquet").to_pylist()
    return {
        "kept": pq.read_table(out).to_pylist(),
        "rejects": [{k: r[k] for k in ("id", "stage", "reason", "caption")} for r in rejects],
        "messages": {r["id"]: r["message"] for r in rejects},
        "counts": manifest["counts"],
        # (name, rows, sha256) of each shard: the tasks write their slices' files
        "shards": [
            (f.name, pq.read_metadata(f).num_rows, hashlib.sha256(f.read_bytes()).hexdigest())
            for f in sorted(out.glob("part-*"))
        ],
    }


@pytest.mark.slow  # ~15 s: each poison row kills two Ray workers, which restart
def test_a_row_that_kills_its_ray_worker_is_the_local_engines_reject(
    tmp_path, image_files, ray_driver
):
    image = image_files["tiny_1x1.png"]
    rows = rows_with(image, {3: "#kill", 21: "#exit", 22: "#exit", 39: "#kill"})
    local, ray = (run(tmp_path, rows, engine, ray_driver) for engine in ("local", "ray"))
    assert ray["kept"] == local["kept"]  # values and order
    assert [r["id"] for r in ray["kept"]] == [
        f"r{i}" for i in range(40) if i not in (3, 21, 22, 39)
    ]
    assert ray["rejects"] == local["rejects"]
    assert ray["counts"] == local["counts"]
    assert ray["shards"] == local["shards"]
    assert ray["counts"]["rejected_by_reason"] == {"decoder_crash": 4}
    for row in ("r3", "r21", "r22", "r39"):
        assert ray["messages"][row] == (
            "the Ray worker process died (WorkerCrashedError), also with this row alone: "
            f"id={row} image={image}"
        )


def test_a_task_killed_in_a_slice_it_writes_leaves_the_local_engines_files(
    tmp_path, image_files, ray_driver
):
    """Slices of two batches (128 rows, batches of 8, --shard-rows 16): a row in the second
    batch of a slice kills the task writing it; that batch is retried row by row, then the
    slice runs again whole with its result, and its file is the local engine's, byte for byte
    (the local workers rerun a slice the same way)."""
    image = image_files["tiny_1x1.png"]
    rows = rows_with(image, {27: "#kill"}, n=128)
    local, ray = (run(tmp_path, rows, engine, ray_driver) for engine in ("local", "ray"))
    assert len(ray["shards"]) == 8  # a file per slice of 16 rows
    assert ray["shards"][1][1] == 15  # the killing row's slice, without it
    assert ray["shards"] == local["shards"]
    assert ray["kept"] == local["kept"]
    assert (
        ray["rejects"]
        == local["rejects"]
        == [{"id": "r27", "stage": "probe", "reason": "decoder_crash", "caption": "#kill"}]
    )
    assert ray["counts"] == local["counts"]


def test_a_hung_row_on_ray_is_a_timeout_reject(tmp_path, image_files, ray_driver):
    image = image_files["tiny_1x1.png"]
    rows = rows_with(image, {10: "#hang"})
    t0 = time.monotonic()
    ray = run(tmp_path, rows, "ray", ray_driver, row_timeout=2.5)
    # killed with its slice, then alone (its batch's other rows finish meanwhile)
    assert time.monotonic() - t0 < 90
    assert [r["id"] for r in ray["kept"]] == [f"r{i}" for i in range(40) if i != 10]
    assert ray["rejects"] == [
        {"id": "r10", "stage": "probe", "reason": "timeout", "caption": "#hang"}
    ]
    assert "2.5 s (--row-timeout)" in ray["messages"]["r10"]
    assert f"id=r10 image={image}" in ray["messages"]["r10"]


@pytest.mark.slow  # ~15 s: each poison row kills two Ray workers, which restart
def test_batches_the_driver_reads_are_isolated_too(tmp_path, image_files, ray_driver):
    """Inputs that only give batches (a random sample, as estimate-budget --sample reads) are
    read by the driver and sent batch by batch; a row that kills its worker there is the same
    reject as on the local engine."""
    from mmtok.engine.pipeline import Observer
    from mmtok.io.sample import SampledInputs

    image = image_files["tiny_1x1.png"]
    rows = rows_with(image, {i: "#exit" if i % 2 else "#kill" for i in range(0, 40, 7)})
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    outputs = {}
    for engine in ("local", "ray"):
        seen: list = []
        sample = SampledInputs(Inputs([str(source)], ReadOptions(batch_rows=8)), 30, seed=1)
        manifest = run_pipeline(
            sample,
            [PoisonProbe()],
            None,  # a summary: rows are observed, not written
            workers=2,
            observers=[Observer(["id", "width"], lambda t, into=seen: into.extend(t.to_pylist()))],
            engine=engine,
            ray_address=ray_driver,
        )
        outputs[engine] = (seen, manifest["counts"])
    assert outputs["ray"] == outputs["local"]
    kept, counts = outputs["ray"]
    assert counts["in"] == 30 and counts["rejected_by_reason"]["decoder_crash"] > 0
    assert len(kept) == 30 - counts["rejected"]


def test_a_stage_that_raises_stops_the_ray_run_with_its_error(tmp_path, ray_driver):
    """An exception out of a stage is a bug, not a bad row: no reject, the run stops with it."""
    from kill_stages import Buggy

    rows = [{"id": f"r{i}", "image": None, "caption": "x"} for i in range(40)]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(ZeroDivisionError, match="a bug met r17"):
        run_pipeline(
            Inputs([str(source)], ReadOptions(batch_rows=8)),
            [Buggy("r17")],
            OutputOptions(str(tmp_path / "out")),
            engine="ray",
            ray_address=ray_driver,
        )
    assert not (tmp_path / "out").exists()


def test_tasks_that_always_die_while_they_start_stop_the_run(tmp_path, image_files, ray_driver):
    """A setup that kills its worker every time is not a row's fault: one line, after a few
    tries; one that dies once is tried again and the run is whole."""
    from poison_stages import DieInSetup

    rows = rows_with(image_files["tiny_1x1.png"], {}, n=12)
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    inputs = Inputs([str(source)], ReadOptions(batch_rows=8))
    with pytest.raises(MmtokError, match="Ray workers keep dying while they start"):
        run_pipeline(
            inputs,
            [DieInSetup()],
            OutputOptions(str(tmp_path / "always")),
            engine="ray",
            ray_address=ray_driver,
        )
    manifest = run_pipeline(
        Inputs([str(source)], ReadOptions(batch_rows=8)),
        [DieInSetup(str(tmp_path / "died-once"))],
        OutputOptions(str(tmp_path / "once")),
        engine="ray",
        ray_address=ray_driver,
    )
    assert (tmp_path / "died-once").exists()
    assert manifest["counts"]["out"] == 12 and manifest["counts"]["rejected"] == 0
