"""The model commands (embed, tokenize-images, detokenize) on a real two-node Ray cluster: CPU
stages in Ray tasks, the model in a Ray actor; the output equals the local engine's (the same
shard files byte for byte, rows, rejects and their reasons, counts, the --json document). Bad
rows (a truncated JPEG, a web page saved as .jpg, a missing file, ids that do not fit the
codebook) are the same rejects. A model actor that dies in the middle of a run is restarted
and the output still has every row exactly once."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import encode, photo, write_jsonl
from ray_cluster import ray_address, ray_driver  # noqa: F401 (fixtures)
from tiny_models import image_folder, tiny_clip, tiny_tokenizer
from typer.testing import CliRunner

pytest.importorskip("ray")
pytest.importorskip("torch")

from test_ray_engine import shard_files, snapshot  # noqa: E402

from mmtok.cli.app import app  # noqa: E402
from mmtok.engine.pipeline import OutputOptions, run_pipeline  # noqa: E402
from mmtok.io.sources import Inputs, ReadOptions  # noqa: E402

pytestmark = pytest.mark.ray
runner = CliRunner()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """The tiny models and ten rows: seven images of several formats, three bad files."""
    folder = tmp_path_factory.mktemp("models")
    images = folder / "images"
    images.mkdir()
    good = {
        "photo_640x480.jpg": encode(photo(640, 480, seed=1), "JPEG", quality=90),
        "photo_300x500.png": encode(photo(300, 500, seed=2), "PNG"),
        "gray_120x90.png": encode(photo(120, 90, seed=3).convert("L"), "PNG"),
        "strip_1000x200.webp": encode(photo(1000, 200, seed=4), "WEBP"),
        "palette_90x70.png": encode(photo(90, 70, seed=5).convert("P"), "PNG"),
        "photo_33x17.jpg": encode(photo(33, 17, seed=6), "JPEG"),
        "photo_64x64.jpg": encode(photo(64, 64, seed=7), "JPEG"),
    }
    order, _ = image_folder(images, good)
    rows = [
        {"id": f"r{i}", "image": str(images / n), "caption": f"a photo called {n}"}
        for i, n in enumerate(order)
    ]
    rows[1]["caption"] = None  # an image without a caption: no text embedding, no score
    config, checkpoint = tiny_tokenizer(folder)
    return {
        "source": write_jsonl(folder / "in.jsonl", rows),
        "clip": tiny_clip(folder),
        "config": config,
        "checkpoint": checkpoint,
    }


def on_both_engines(tmp_path: Path, address: str, *args: str) -> tuple[dict, dict]:
    """(local, ray) snapshots of one command line run on each engine."""
    results = {}
    for engine in ("local", "ray"):
        flags = ["--engine", "ray", "--ray-address", address] if engine == "ray" else []
        out = tmp_path / engine
        result = runner.invoke(app, [*map(str, args), "-o", str(out), "--json", *flags])
        assert result.exit_code == 0, result.output
        results[engine] = snapshot(out, result.stdout)
    return results["local"], results["ray"]


def reasons(result: dict) -> dict[str, int]:
    return result["counts"]["rejected_by_reason"]


BAD_IMAGES = {"truncated": 1, "missing_file": 1, "not_image": 1}


@pytest.mark.slow  # ~15 s on 2 busy cores: open_clip loads in each engine's model process
def test_embed_on_ray_equals_local(files, tmp_path, ray_driver):
    model = ["--model", f"local-dir:{files['clip']}", "--text", "--device", "cpu"]
    local, ray = on_both_engines(
        tmp_path, ray_driver, "embed", files["source"], *model, "--batch-size", "3"
    )
    assert reasons(local) == BAD_IMAGES
    assert len(local["rows"]) == 7 and local["document"]["clip_score"]["scored"] == 6
    assert ray == local


def test_tokenize_images_on_ray_equals_local(files, tmp_path, ray_driver):
    model = ["--config", files["config"], "--checkpoint", files["checkpoint"]]
    local, ray = on_both_engines(
        tmp_path, ray_driver, "tokenize-images", files["source"], *model, "--batch-size", "3"
    )
    assert reasons(local) == BAD_IMAGES
    assert len(local["rows"]) == 7
    assert ray == local


@pytest.mark.slow  # ~13 s: tokenize-images, then detokenize on both engines
def test_detokenize_on_ray_equals_local(files, tmp_path, ray_driver):
    """Ids from tokenize-images back to images: rows with a source (PSNR), one whose source is
    gone, and ids that do not fit (too few; one outside the codebook) as `bad_tokens`."""
    model = ["--config", files["config"], "--checkpoint", files["checkpoint"]]
    tokens = tmp_path / "tokens"
    result = runner.invoke(
        app, ["tokenize-images", str(files["source"]), *map(str, model), "-o", str(tokens), "-q"]
    )
    assert result.exit_code == 0, result.output
    tokenized = pq.read_table(tokens).to_pylist()
    keys = ("id", "vq_ids", "vq_grid_h", "vq_grid_w")
    rows = [{"image": r["image"]["path"], **{k: r[k] for k in keys}} for r in tokenized]
    ids, grid = rows[0]["vq_ids"], {k: rows[0][k] for k in keys[2:]}
    rows[2:2] = [
        {"id": "short", "image": None, "vq_ids": ids[:3], **grid},
        {"id": "too_big", "image": None, "vq_ids": [64, *ids[1:]], **grid},
    ]
    rows.append({"id": "gone", "image": str(tmp_path / "deleted.jpg"), "vq_ids": ids, **grid})
    source = write_jsonl(tmp_path / "ids.jsonl", rows)
    local, ray = on_both_engines(
        tmp_path, ray_driver, "detokenize", source, *model, "--batch-size", "3"
    )
    assert reasons(local) == {"bad_tokens": 2}
    assert len(local["rows"]) == 8 and local["document"]["psnr"]["rows"] == 7
    assert ray == local


@pytest.mark.slow  # ~20 s: the actor dies, Ray restarts it and loads the model again
def test_a_model_actor_killed_in_a_run_is_restarted_and_every_row_written_once(
    files, tmp_path, ray_driver, monkeypatch
):
    """The embed command whose model actor kills its own process (os._exit) the first time it
    sees row r4 (a test-only subclass of the real stage, kill_models.DieOnceEmbed): Ray
    restarts the actor and sends the batch again; the output is the local run's, byte for
    byte."""
    from kill_models import DieOnceEmbed

    import mmtok.stages.embed

    marker = tmp_path / "died"
    monkeypatch.setenv("MMTOK_TEST_DIE_ONCE", f"{marker}:r4")
    monkeypatch.setattr(mmtok.stages.embed, "EmbedStage", DieOnceEmbed)
    args = ["--model", f"local-dir:{files['clip']}", "--device", "cpu", "--batch-size", "3"]
    results = {}
    for engine in ("ray", "local"):
        flags = ["--engine", "ray", "--ray-address", ray_driver] if engine == "ray" else []
        out = tmp_path / engine
        result = runner.invoke(
            app, ["embed", str(files["source"]), *args, "-o", str(out), "--json", *flags]
        )
        assert result.exit_code == 0, result.output
        results[engine] = snapshot(out, result.stdout)
        monkeypatch.undo()  # the local run: the real stage
    assert int(marker.read_text()) > 0  # the actor really died (it wrote its pid first)
    ray, local = results["ray"], results["local"]
    ids = [r["id"] for r in ray["rows"]]
    assert ids == ["r0", "r1", "r3", "r4", "r7", "r8", "r9"]  # each kept row once, in order
    assert ray["counts"]["in"] == 10 == ray["counts"]["out"] + ray["counts"]["rejected"]
    assert ray == local
    assert shard_files(tmp_path / "ray") == shard_files(tmp_path / "local")


def test_batch_halvings_in_a_ray_actor_are_the_local_engines(tmp_path, ray_driver):
    """An automatic batch size that halves on out-of-memory in the model actor: the run's
    batch size and halvings (what embed and tokenize-images report) are those of the local
    run, and so are the rows."""
    from kill_models import OutOfMemoryAboveTwo

    rows = [{"id": f"r{i}", "image": None, "caption": "w" * i} for i in range(10)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    results = {}
    for engine in ("local", "ray"):
        stage = OutOfMemoryAboveTwo()
        run_pipeline(
            Inputs([str(source)], ReadOptions(batch_rows=stage.rows_per_batch)),
            [stage],
            OutputOptions(str(tmp_path / engine)),
            engine=engine,
            ray_address=ray_driver,
        )
        kept = pq.read_table(tmp_path / engine).to_pylist()
        results[engine] = (kept, stage.rows_per_batch, stage.halvings)
    assert results["local"][1:] == (2, 2)  # 10 rows: 10 -> 5 -> 2
    assert [r["length"] for r in results["local"][0]] == list(range(10))
    assert results["ray"] == results["local"]
