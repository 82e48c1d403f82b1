"""sample-frames on a real two-node Ray cluster: videos decoded in Ray tasks (a fresh worker
process per task, as the local engine recycles its decoding workers) give the local engine's
output (the same shard files byte for byte, frames, rejects and their reasons, the videos side
file, the --json document); a cut video keeps the frames before the damage, a video without
its index, a file that is no video are the same rejects; a decoder that crashes or hangs on a
video costs that video only, as on the local engine."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ray_cluster import ray_address, ray_driver  # noqa: F401 (fixtures)
from typer.testing import CliRunner

pytest.importorskip("ray")

from test_ray_engine import snapshot  # noqa: E402

from mmtok.cli.app import app  # noqa: E402
from mmtok.engine.pipeline import OutputOptions, run_pipeline  # noqa: E402
from mmtok.io.sources import Inputs, ReadOptions  # noqa: E402
from mmtok.video.sampling import SamplingSpec  # noqa: E402
from tests.video.fixtures import session_corpus  # noqa: E402
from tests.video.poison_decoders import PoisonDecoders  # noqa: E402

pytestmark = pytest.mark.ray
runner = CliRunner()

# decord's videos, one PyAV decodes (open GOP), a cut one (frames before the cut), and three
# rejects: the index cut off, not a video, no bytes
KINDS = ["h264", "open_gop", "truncated", "truncated_no_moov", "garbage", "empty"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return session_corpus(tmp_path_factory)


@pytest.fixture(scope="module")
def clips(corpus, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("clips")
    for kind in KINDS:
        shutil.copy(corpus[kind].path, folder / f"{kind}{corpus[kind].path.suffix}")
    return folder


def test_sample_frames_on_ray_equals_local(clips, tmp_path, ray_driver):
    results = {}
    for engine in ("local", "ray"):
        flags = ["--engine", "ray", "--ray-address", ray_driver] if engine == "ray" else []
        out = tmp_path / engine
        args = ["sample-frames", str(clips), "--num-frames", "4", "-o", str(out), "--json"]
        result = runner.invoke(app, [*args, *flags])
        assert result.exit_code == 0, result.output
        results[engine] = snapshot(out, result.stdout)
        results[engine]["document"].pop("videos_table")  # a path in the run's own folder
    local, ray = results["local"], results["ray"]
    assert local["document"]["counts"]["rejected_by_reason"] == {
        "truncated": 1, "not_video": 1, "empty_file": 1,
    }  # fmt: skip
    videos = local["side"]["__mmtok__/videos.parquet"]
    assert sorted(Path(v["video_path"]).stem for v in videos) == ["h264", "open_gop", "truncated"]
    assert {v["decoder"] for v in videos} == {"decord", "pyav"}
    assert len(local["rows"]) == 12
    assert ray == local


@pytest.mark.parametrize("source", ["folder", "listing"])
def test_recycled_workers_on_ray_write_the_local_files(clips, tmp_path, ray_driver, source):
    """--recycle-after cuts the slices of a folder (tasks and workers write them, a process
    runs the slices that fit); a listing read whole, larger than the limit, goes in batches
    locally and through the driver on Ray: the same files either way."""
    path = clips
    if source == "listing":
        path = tmp_path / "videos.parquet"
        videos = sorted(str(p) for p in clips.iterdir())
        pq.write_table(pa.table({"id": [Path(v).stem for v in videos], "video": videos}), path)
    results = {}
    for engine in ("local", "ray"):
        flags = ["--engine", "ray", "--ray-address", ray_driver] if engine == "ray" else []
        out = tmp_path / engine
        args = ["sample-frames", str(path), "--num-frames", "2", "--recycle-after", "3"]
        result = runner.invoke(app, [*args, "-o", str(out), "--json", "-w", "2", *flags])
        assert result.exit_code == 0, result.output
        results[engine] = snapshot(out, result.stdout)
        results[engine]["document"].pop("videos_table")
    assert len(results["local"]["shards"]) == (2 if source == "folder" else 1)  # slices of 4
    assert results["ray"] == results["local"]


def run_poison(folder: Path, out: Path, engine: str, address: str, attempts: Path) -> dict:
    manifest = run_pipeline(
        Inputs([str(folder)], ReadOptions(batch_rows=3, videos=True)),
        [PoisonDecoders(SamplingSpec(num_frames=2), attempts_dir=str(attempts))],
        OutputOptions(str(out)),
        workers=2,
        row_timeout=2.0,
        engine=engine,
        ray_address=address,
    )
    rejects = pq.read_table(out / "__mmtok__" / "rejects.parquet").to_pylist()
    return {
        "rows": pq.read_table(out).to_pylist(),
        "rejects": {Path(r["image"]["path"]).stem: r["reason"] for r in rejects},
        "counts": manifest["counts"],
        "messages": {Path(r["image"]["path"]).stem: r["message"] for r in rejects},
    }


@pytest.mark.slow  # ~20 s: each video a fresh Ray worker, a hang waits for the row timeout
def test_a_decoder_that_crashes_or_hangs_on_ray_costs_that_video_only(corpus, tmp_path, ray_driver):
    """A decoder that segfaults is a `decoder_crash`, one that hangs whatever the decoder a
    `timeout`; one that hangs in decord only is retried alone with PyAV and kept (the local
    engine's `row_retries`)."""
    folder = tmp_path / "poison"
    folder.mkdir()
    names = ["a_ok", "crash", "b_ok", "hang_decord", "c_ok", "hang", "d_ok"]
    for name in names:
        shutil.copy(corpus["h264"].path, folder / f"{name}.mp4")
    results = {}
    for engine in ("local", "ray"):
        attempts = tmp_path / f"attempts-{engine}"
        attempts.mkdir()
        results[engine] = run_poison(folder, tmp_path / engine, engine, ray_driver, attempts)
    local, ray = results["local"], results["ray"]
    assert ray["rejects"] == local["rejects"] == {"crash": "decoder_crash", "hang": "timeout"}
    assert ray["rows"] == local["rows"]
    assert ray["counts"] == local["counts"]
    retried = [r for r in ray["rows"] if Path(r["video_path"]).stem == "hang_decord"]
    assert {r["decoder"] for r in retried} == {"pyav"}
    assert "retried with PyAV" in json.loads(retried[0]["video_info"])["decoder_why"]
    assert "the Ray worker process died" in ray["messages"]["crash"]
    assert "2 s (--row-timeout)" in ray["messages"]["hang"]
