"""The last commands as recipe steps (sample-frames, tokenize-images, detokenize): a recipe
equals the same commands run one after the other; and a filter step that computes clip_score
with a model, or reads it, followed by dedup."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import photo, write_jsonl
from test_recipes import invoke, rejects_of, rows_of, without_timing

from mmtok import recipes
from mmtok.io.layout import SIDE_DIR, VIDEOS_FILE
from tests.video.fixtures import session_corpus


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """Two good videos and one that is not a video."""
    corpus = session_corpus(tmp_path_factory)
    folder = tmp_path_factory.mktemp("clips")
    for kind in ("h264", "rotated", "garbage"):
        shutil.copy(corpus[kind].path, folder / f"{kind}.mp4")
    return folder


def run_recipe(tmp_path: Path, recipe: dict) -> dict:
    path = tmp_path / "recipe.toml"
    path.write_text(recipes.dumps(recipe))
    return json.loads(invoke("run", path, "--json").stdout)


def test_sample_frames_alone_equals_the_command(clips, tmp_path):
    flags = ["--num-frames", "3", "--max-side", "64"]
    alone = json.loads(
        invoke("sample-frames", clips, "-o", tmp_path / "a", *flags, "-w", 1, "--json").stdout
    )
    doc = run_recipe(
        tmp_path,
        {
            "inputs": [str(clips)],
            "output": str(tmp_path / "b"),
            "workers": 1,
            "steps": [{"command": "sample-frames", "num_frames": 3, "max_side": 64}],
        },
    )
    a, b = tmp_path / "a", tmp_path / "b"
    assert rows_of(b).equals(rows_of(a))  # the frames, their values and order
    assert rejects_of(b) == rejects_of(a) and len(rejects_of(a)) == 1  # garbage: not_video
    videos = [pq.read_table(f / SIDE_DIR / VIDEOS_FILE) for f in (a, b)]
    assert videos[1].equals(videos[0])
    [step] = doc["steps"]
    assert step["command"] == "sample-frames"
    assert without_timing(step) == {"command": "sample-frames", **without_timing(alone)} | {
        "videos_table": str(b / SIDE_DIR / VIDEOS_FILE)
    }
    assert alone["counts"]["frames_out"] == 6 == doc["counts"]["out"]


def test_sample_frames_then_tile_reads_the_frames(clips, tmp_path):
    invoke("sample-frames", clips, "-o", tmp_path / "f", "--num-frames", 2, "-w", 1)
    invoke("tile", tmp_path / "f", "-p", "qwen2-vl", "-o", tmp_path / "t", "-w", 1)
    doc = run_recipe(
        tmp_path,
        {
            "inputs": [str(clips)],
            "output": str(tmp_path / "r"),
            "workers": 1,
            "steps": [
                {"command": "sample-frames", "num_frames": 2},
                {"command": "tile", "preset": "qwen2-vl"},
            ],
        },
    )
    assert rows_of(tmp_path / "r").equals(rows_of(tmp_path / "t"))
    assert doc["steps"][1]["images"] == 4


@pytest.fixture(scope="module")
def tiny_vq(tmp_path_factory) -> tuple[Path, Path]:
    from mmtok.models.vq.tiny import tiny_checkpoint, tiny_config

    folder = tmp_path_factory.mktemp("vq")
    config = folder / "tiny-vq.json"
    config.write_text(json.dumps(tiny_config().to_dict()))
    tiny_checkpoint(folder / "tiny-vq.pt", 1)
    return config, folder / "tiny-vq.pt"


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("images")
    rows = []
    for i, (w, h) in enumerate([(96, 80), (40, 30), (120, 64), (70, 90)]):
        photo(w, h, seed=i).save(d / f"img{i}.jpg", quality=90)
        rows.append({"image": str(d / f"img{i}.jpg"), "caption": f"photo {i}"})
    rows += [{"image": str(d / "missing.jpg"), "caption": "gone"}, dict(rows[0], caption="again")]
    return write_jsonl(d / "rows.jsonl", rows)


def test_filter_then_tokenize_images_then_detokenize_equal_the_commands(images, tiny_vq, tmp_path):
    config, checkpoint = tiny_vq
    vq = ["--config", config, "--checkpoint", checkpoint, "--device", "cpu", "-w", 1]
    a, b, c = (tmp_path / n for n in ("filtered", "tokens", "seen"))
    invoke("filter", images, "-o", a, "--min-side", 60, "-w", 1)
    tokens = json.loads(
        invoke("tokenize-images", a, "-o", b, *vq, "--emit", "bin", "--json").stdout
    )
    invoke("detokenize", b, "-o", c, *vq)
    doc = run_recipe(
        tmp_path,
        {
            "inputs": [str(images)],
            "output": str(tmp_path / "r"),
            "workers": 1,
            "steps": [
                {"command": "filter", "min_side": 60},
                {
                    "command": "tokenize-images",
                    "config": str(config),
                    "checkpoint": str(checkpoint),
                    "device": "cpu",
                    "emit": "bin",
                },
            ],
        },
    )
    out = tmp_path / "r"
    assert rows_of(out).equals(rows_of(b))  # the ids, in the same order
    assert rejects_of(out) == rejects_of(a, b)
    step = doc["steps"][1]
    assert step["tokens"] == tokens["tokens"] == 4 * tokens["tokens_per_image"]
    stream = out / SIDE_DIR / "vq_stream"
    for name in (p.name for p in (b / SIDE_DIR / "vq_stream").iterdir()):
        assert (stream / name).read_bytes() == (b / SIDE_DIR / "vq_stream" / name).read_bytes()
    assert {k: v for k, v in step["stream"].items() if k != "path"} == {
        k: v for k, v in tokens["stream"].items() if k != "path"
    }
    # and the tokens back to images, as a recipe of one step over the tokens
    run_recipe(
        tmp_path,
        {
            "inputs": [str(b)],
            "output": str(tmp_path / "d"),
            "workers": 1,
            "steps": [
                {
                    "command": "detokenize",
                    "config": str(config),
                    "checkpoint": str(checkpoint),
                    "device": "cpu",
                }
            ],
        },
    )
    assert rows_of(tmp_path / "d").equals(rows_of(c))


def test_a_model_step_goes_last_or_before_dedup(images, tiny_vq):
    config, checkpoint = tiny_vq
    vq = {"command": "tokenize-images", "config": str(config), "checkpoint": str(checkpoint)}
    for steps, ok in [
        ([vq, {"command": "tile", "preset": "qwen2-vl"}], False),
        ([{"command": "filter", "min_side": 8}, vq, {"command": "dedup"}], True),
        ([vq, {"command": "detokenize", **{k: vq[k] for k in ("config", "checkpoint")}}], False),
        ([{"command": "filter", "min_side": 8}, {"command": "sample-frames"}], False),
    ]:
        recipe = recipes.load({"inputs": [str(images)], "output": "-", "steps": steps})
        if ok:
            recipes.plan(recipe)
        else:
            with pytest.raises(recipes.RecipeError, match="first step|last step"):
                recipes.plan(recipe)


@pytest.fixture(scope="module")
def scored(tmp_path_factory) -> dict:
    """Rows with exact and resized duplicates, a tiny CLIP model, its clip_score of each row
    (an `mmtok embed --text` output) and a limit that drops about half of them."""
    import numpy as np

    from mmtok.models.tiny import write_local_dir

    d = tmp_path_factory.mktemp("scored")
    rows = []
    for i in range(8):
        photo(120 + 10 * i, 90, seed=30 + i).save(d / f"p{i}.jpg", quality=90)
        rows.append({"image": str(d / f"p{i}.jpg"), "caption": f"a picture of thing {i}"})
    photo(120, 90, seed=30).resize((60, 45)).save(d / "p0_small.jpg", quality=90)
    rows += [
        dict(rows[1], caption="the same picture"),
        dict(rows[2], caption="a picture of thing 2"),
        {"image": str(d / "p0_small.jpg"), "caption": "a smaller copy"},
        {"image": str(d / "gone.jpg"), "caption": "no file"},
    ]
    source = write_jsonl(d / "rows.jsonl", rows)
    model = "local-dir:" + str(write_local_dir(d / "tiny-clip", seed=1))
    invoke("embed", source, "-o", d / "emb", "-m", model, "--text", "-w", 1)
    scores = [s for s in rows_of(d / "emb").column("clip_score").to_pylist() if s is not None]
    return {
        "source": source,
        "model": model,
        "embedded": d / "emb",
        "limit": float(np.median(scores)),
    }


@pytest.mark.parametrize("computed", [True, False], ids=["with-model", "from-column"])
def test_filter_min_clip_score_then_dedup_equals_the_commands(scored, tmp_path, computed):
    limit = round(scored["limit"], 4)
    source = scored["source"] if computed else scored["embedded"]
    model = {"model": scored["model"], "device": "cpu"} if computed else {}
    flags = [x for k, v in model.items() for x in (f"--{k}", v)]
    a, b = tmp_path / "filtered", tmp_path / "unique"
    invoke("filter", source, "-o", a, "--min-clip-score", limit, *flags, "-w", 1)
    alone = json.loads(invoke("dedup", a, "-o", b, "-w", 1, "--json").stdout)
    doc = run_recipe(
        tmp_path,
        {
            "inputs": [str(source)],
            "output": str(tmp_path / "r"),
            "workers": 1,
            "steps": [
                {"command": "filter", "min_clip_score": limit, **model},
                {"command": "dedup"},
            ],
        },
    )
    out = tmp_path / "r"
    assert rows_of(out).equals(rows_of(b))  # values and order
    assert rejects_of(out) == rejects_of(a, b)
    reasons = doc["counts"]["rejected_by_reason"]
    assert reasons["low_clip_score"] >= 3 and reasons["duplicate"] >= 1
    assert doc["steps"][1]["duplicates_removed"] == alone["duplicates_removed"]
