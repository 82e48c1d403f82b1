"""The Ray engine against a real two-node local cluster: each dataset command gives the same
output on Ray as on the local engine (the same shard files byte for byte, rejects and their
reasons, counts); a worker killed during a run is retried and every row is written once;
--resume gives the local run's files; the errors."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute
import pyarrow.parquet as pq
import pytest
from kill_stages import CaptionLengthModel, KillOnce
from ray_cluster import ray_address, ray_driver  # noqa: F401 (fixtures)
from typer.testing import CliRunner

pytest.importorskip("ray")

from mmtok.cli.app import app  # noqa: E402
from mmtok.engine.pipeline import OutputOptions, run_pipeline  # noqa: E402
from mmtok.errors import MmtokError  # noqa: E402
from mmtok.io.sources import Inputs, ReadOptions  # noqa: E402
from mmtok.models.runtime import DeviceStage  # noqa: E402
from mmtok.stages.probe import ProbeStage  # noqa: E402

pytestmark = pytest.mark.ray
runner = CliRunner()


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def pairs(tmp_path_factory, image_files) -> Path:
    """Every kind of image file (good, broken, bombs, missing), with captions that repeat, in
    enough rows for several batches (the CLI reads 256 rows per batch)."""
    rows = []
    for i in range(16):
        for name in sorted(image_files):
            rows.append({"image": str(image_files[name]), "caption": f"a photo of {name} {i % 3}"})
    rows.append({"image": "does/not/exist.jpg", "caption": "missing"})
    rows.append({"image": None, "caption": None})
    return write_jsonl(tmp_path_factory.mktemp("pairs") / "pairs.jsonl", rows)


def snapshot(out: Path | None, stdout: str) -> dict:
    """What a run produced, without its timing: rows in order, rejects, manifest counts, side
    files, and the --json document."""
    document = json.loads(stdout)
    document.pop("timing", None)
    document.pop("output", None)
    document.pop("clusters_file", None)
    if out is None:
        return {"document": document}
    manifest = json.loads((out / "__mmtok__" / "manifest.json").read_text())
    parts = [pq.read_table(out / f["name"]) for f in manifest["files"] if f["kind"] == "rows"]
    side = {
        f["name"]: pq.read_table(out / f["name"]).to_pylist()
        for f in manifest["files"]
        if f["kind"] != "rows" and f["name"].endswith(".parquet")
    }
    return {
        "document": document,
        "rows": [r for t in parts for r in t.to_pylist()],
        # the shard files themselves: names, row counts, and their bytes (Ray tasks write the
        # same slices with the same shard writer as the local workers)
        "shards": shard_files(out),
        "counts": manifest["counts"],
        "side": side,
    }


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def shard_files(out: Path) -> list[tuple[str, int, str]]:
    """(name, rows, sha256) of each shard of a finished dataset folder, in order."""
    return [(f.name, pq.read_metadata(f).num_rows, _sha256(f)) for f in sorted(out.glob("part-*"))]


COMMANDS = {
    "probe": ["probe", "--decode-check"],
    "filter": ["filter", "--min-side", "32", "--require-caption", "--caption-min-words", "4"],
    "tile": ["tile", "--preset", "internvl", "--max-pixels", "4000000"],
    "estimate-budget": ["estimate-budget", "--preset", "qwen2-vl", "--preset", "llava-1.5"],
    "dedup": ["dedup", "--by", "pair"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_ray_output_equals_local_output(command, pairs, tmp_path, ray_driver):
    args = COMMANDS[command]
    results = {}
    for engine in ("local", "ray"):
        flags = ["--engine", "ray", "--ray-address", ray_driver] if engine == "ray" else []
        out = tmp_path / engine
        result = runner.invoke(
            app, [args[0], str(pairs), "-o", str(out), "--json", *args[1:], *flags]
        )
        assert result.exit_code == 0, result.output
        results[engine] = snapshot(out, result.stdout)
    local, ray = results["local"], results["ray"]
    assert local["counts"]["in"] == 16 * 19 + 2
    assert local["counts"]["rejected"] > 0  # rejects and their reasons are compared too
    assert ray == local


def test_a_killed_worker_is_retried_and_every_row_written_once(tmp_path, ray_driver):
    rows = [{"id": f"r{i:04d}", "image": None, "caption": f"caption {i}"} for i in range(600)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    marker = tmp_path / "killed"
    inputs = Inputs([str(source)], ReadOptions(batch_rows=50))
    out = tmp_path / "out"
    manifest = run_pipeline(
        inputs,
        [KillOnce(str(marker), victim="r0333")],
        OutputOptions(str(out), shard_rows=100),
        engine="ray",
        ray_address=ray_driver,
    )
    assert marker.exists()  # the worker really died (it wrote its pid, then SIGKILLed itself)
    ids = [
        r["id"] for f in sorted(out.glob("part-*.parquet")) for r in pq.read_table(f).to_pylist()
    ]
    assert ids == [r["id"] for r in rows]  # each row once, in input order
    assert manifest["counts"]["in"] == 600 == manifest["counts"]["out"]
    victim = pq.read_table(out).filter(pa.compute.field("id") == "r0333")
    assert victim["worker_pid"][0].as_py() != int(marker.read_text())  # ran again elsewhere


def test_resume_on_ray_continues_a_killed_run(pairs, tmp_path, ray_driver):
    """A run stopped half-way (here: by an exception out of the sink loop) leaves committed
    shards; --resume on Ray finishes it with the same rows as one uninterrupted local run."""
    inputs = lambda: Inputs([str(pairs)], ReadOptions(batch_rows=40))  # noqa: E731
    whole = tmp_path / "whole"
    run_pipeline(inputs(), [ProbeStage()], OutputOptions(str(whole), shard_rows=40))

    class Stop(Exception):
        pass

    seen = []

    def stop_after_four(done: int, rejected: int) -> None:
        seen.append(done)
        if len(seen) == 4:
            raise Stop

    out = tmp_path / "out"
    with pytest.raises(Stop):
        run_pipeline(
            inputs(),
            [ProbeStage()],
            OutputOptions(str(out), shard_rows=40),
            on_progress=stop_after_four,
            engine="ray",
            ray_address=ray_driver,
        )
    # the stopped run recorded where it was as the local engine does when its workers write:
    # (next slice, 0 batches of it, rows read) after the last slice it adopted whole (slices
    # of one 40-row batch here), so the resumed Ray tasks start reading there
    state = json.loads((tmp_path / ".out.mmtok-staging" / "state.json").read_text())
    assert state["position"] == [3, 0, 120]
    assert len(state["parts"]) == 3  # one shard per slice adopted
    manifest = run_pipeline(
        inputs(),
        [ProbeStage()],
        OutputOptions(str(out), shard_rows=40, resume=True),
        engine="ray",
        ray_address=ray_driver,
    )
    assert manifest["timing"]["engine"] == "ray"
    assert pq.read_table(out).to_pylist() == pq.read_table(whole).to_pylist()
    assert shard_files(out) == shard_files(whole)  # the same files, byte for byte
    assert manifest["counts"]["in"] == 16 * 19 + 2


def test_a_task_that_cannot_see_the_staging_folder_is_one_line(tmp_path, ray_driver, monkeypatch):
    """The tasks write into the output's staging folder, which a multi-node cluster must share
    (-o on a shared filesystem); a task that does not see it stops the run in one line (here
    the spec names a folder no node has, as a node without the shared mount would see it)."""
    import dataclasses

    from mmtok.io.sink import DatasetSink

    elsewhere = tmp_path / "not-mounted" / "slices"
    shard_spec = DatasetSink.shard_spec
    monkeypatch.setattr(
        DatasetSink,
        "shard_spec",
        lambda self, columns: dataclasses.replace(shard_spec(self, columns), folder=str(elsewhere)),
    )
    inputs = Inputs([str(write_jsonl(tmp_path / "in.jsonl", [{"image": None, "caption": "x"}]))])
    with pytest.raises(MmtokError) as error:
        run_pipeline(
            inputs,
            [ProbeStage()],
            OutputOptions(str(tmp_path / "out")),
            engine="ray",
            ray_address=ray_driver,
        )
    message = str(error.value)
    assert "cannot see the output's staging folder" in message and str(elsewhere) in message
    assert "-o must be on a filesystem every node mounts" in message and "\n" not in message
    assert not (tmp_path / "out").exists()


class CudaModel(DeviceStage):
    name = "cuda_model"


def test_a_gpu_request_the_cluster_cannot_satisfy_fails_fast(tmp_path, ray_driver):
    inputs = Inputs([str(write_jsonl(tmp_path / "in.jsonl", [{"image": None, "caption": "x"}]))])
    t0 = time.monotonic()
    with pytest.raises(MmtokError, match=r"asks for 1 GPU per Ray actor.*has 0 GPUs"):
        run_pipeline(
            inputs,
            [CudaModel(device="cuda")],
            OutputOptions(str(tmp_path / "out")),
            engine="ray",
            ray_address=ray_driver,
        )
    assert time.monotonic() - t0 < 30  # not a dataset waiting for an actor that never comes
    assert not (tmp_path / "out").exists()


def test_an_unknown_engine_is_a_clear_error(tmp_path):
    inputs = Inputs([str(write_jsonl(tmp_path / "in.jsonl", [{"image": None, "caption": "x"}]))])
    with pytest.raises(MmtokError, match="unknown engine 'spark'"):
        run_pipeline(inputs, [], None, engine="spark")


def test_kept_rows_carry_arrow_types_through_ray(tmp_path, ray_driver):
    """Nested and binary columns survive the trip (Arrow IPC, not pickled Python rows)."""
    table = pa.table(
        {
            "id": ["a", "b"],
            "image": pa.array([None, None], pa.string()),
            "caption": ["x", "y"],
            "vec": pa.array([[1.5, 2.5], [3.5, 4.5]], pa.list_(pa.float32(), 2)),
            "blob": pa.array([b"\x00\xff", b""], pa.large_binary()),
        }
    )
    pq.write_table(table, tmp_path / "in.parquet")
    for engine in ("local", "ray"):
        run_pipeline(
            Inputs([str(tmp_path / "in.parquet")]),
            [KillOnce(str(tmp_path / "never"), victim="none")],
            OutputOptions(str(tmp_path / engine)),
            engine=engine,
            ray_address=ray_driver,
        )
    local, ray = (
        pq.read_table(tmp_path / e).drop_columns(["worker_pid"]) for e in ("local", "ray")
    )
    assert ray.equals(local) and ray.schema == local.schema
    assert ray.column("vec").to_pylist() == [[1.5, 2.5], [3.5, 4.5]]
    assert ray.column("blob").to_pylist() == [b"\x00\xff", b""]


def test_a_model_stage_runs_in_ray_actors_with_the_local_results(tmp_path, ray_driver):
    """CPU stages (tasks) then a model stage (an actor pool, kept apart from the tasks): the
    same kept rows, model columns and model rejects as the local engine's device runtime."""
    pytest.importorskip("torch")
    rows = [{"id": f"r{i:03d}", "image": None, "caption": "w" * (i % 23)} for i in range(300)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    outputs = {}
    for engine in ("local", "ray"):
        out = tmp_path / engine
        manifest = run_pipeline(
            Inputs([str(source)], ReadOptions(batch_rows=64)),
            [KillOnce(str(tmp_path / "never"), victim="none"), CaptionLengthModel(batch_size=64)],
            OutputOptions(str(out)),
            engine=engine,
            ray_address=ray_driver,
        )
        kept = pq.read_table(out)
        rejects = pq.read_table(out / "__mmtok__" / "rejects.parquet").to_pylist()
        outputs[engine] = (kept, rejects, manifest["counts"])
    (local, local_rejects, local_counts), (ray, ray_rejects, ray_counts) = outputs.values()
    assert ray.equals(local) and ray_rejects == local_rejects and ray_counts == local_counts
    assert local_counts["rejected_by_reason"] == {
        "caption_too_short": 66
    }  # lengths 0, 5, 10, 15, 20
    assert ray.column("double_length").to_pylist()[:3] == [2, 4, 6]


RECIPE = """
inputs = ["{inputs}"]
output = "{output}"

[[steps]]
command = "filter"
min_side = 32
caption_min_words = 4

[[steps]]
command = "dedup"
by = "pair"

[[steps]]
command = "tile"
preset = "internvl"
max_pixels = 4000000

[[steps]]
command = "estimate-budget"
preset = ["qwen2-vl", "llava-1.5"]
"""


def test_a_recipe_on_ray_equals_the_local_recipe(pairs, tmp_path, ray_driver):
    """filter -> dedup -> tile -> estimate-budget in one recipe: the same shards, rejects,
    clusters, budget and document on both engines."""
    results = {}
    for engine in ("local", "ray"):
        out = tmp_path / engine
        recipe = tmp_path / f"{engine}.toml"
        recipe.write_text(RECIPE.format(inputs=pairs, output=out))
        flags = ["--engine", "ray", "--ray-address", ray_driver] if engine == "ray" else []
        result = runner.invoke(app, ["run", str(recipe), "--json", *flags])
        assert result.exit_code == 0, result.output
        results[engine] = snapshot(out, result.stdout)
        results[engine]["budget"] = json.loads((out / "__mmtok__" / "budget.json").read_text())
    local, ray = results["local"], results["ray"]
    assert local["counts"]["rejected_by_reason"]["duplicate"] > 0
    assert local["rows"] and local["shards"]
    for result in (local, ray):  # what names the run's own folder, or times it
        result["document"].pop("recipe", None)
        result["budget"].pop("timing", None), result["budget"].pop("output", None)
        for step in result["document"]["steps"]:
            for key in ("timing", "output", "clusters_file"):
                step.pop(key, None)
    assert ray == local
