"""estimate-budget over videos mixed with images: per preset, the frames each video rule
samples and their vision tokens, from the container's timestamps alone (no decode)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mmtok import budget as b
from mmtok.cli.app import app
from mmtok.presets import get_preset
from mmtok.stages.budget import is_video
from mmtok.video.probe import probe_video
from mmtok.video.sampling import preset_spec, sample_frames
from mmtok.video.tokens import video_tokens
from tests.video.fixtures import VideoCorpus, session_corpus

runner = CliRunner()
EXAMPLES = Path(__file__).parents[2] / "examples" / "images"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> VideoCorpus:
    return session_corpus(tmp_path_factory)


def test_video_cost_is_sampling_then_tokens():
    pts = np.arange(300) / 30  # 10 s
    cost = b.video_cost("qwen2-vl", pts, 1280, 720)
    assert cost == b.VideoCost(20, 7200, (1008, 560), 20 * 1008 * 560 * 3)  # presets.md §2b
    assert b.video_cost("internvl", pts, 1280, 720).vision_tokens == 8 * 256
    assert b.video_cost("qwen2-vl", pts[:1], 1280, 720).startswith("too_short")
    assert b.video_preset_name("qwen2.5-vl:max_pixels=1003520", get_preset("qwen2.5-vl")) == (
        "qwen2.5-vl"
    )
    assert b.video_preset_name("mllama", get_preset("mllama")) is None


def test_is_video(corpus):
    for kind in ("h264", "mkv", "vp9"):
        data = corpus[kind].path.read_bytes()
        assert is_video({"path": None, "bytes": data}), kind
        assert is_video({"path": str(corpus[kind].path), "bytes": None})
    png = (EXAMPLES / "coffee_palette.png").read_bytes()
    assert not is_video({"path": None, "bytes": png})
    assert not is_video({"path": str(EXAMPLES / "coffee.jpg"), "bytes": None})


def test_estimate_budget_mixes_videos_and_images(corpus, tmp_path):
    images = ["coffee.jpg", "chelsea.jpg", "rocket.jpg"]
    only_images = tmp_path / "images"
    only_images.mkdir()
    for name in images:
        shutil.copy(EXAMPLES / name, only_images / name)
    mixed = tmp_path / "mixed"
    shutil.copytree(only_images, mixed)
    kinds = {"h264": ".mp4", "vfr_mkv": ".mkv", "rotated": ".mp4", "one_frame": ".mp4",
             "garbage": ".mp4"}  # fmt: skip
    for kind, suffix in kinds.items():
        shutil.copy(corpus[kind].path, mixed / f"{kind}{suffix}")
    presets = ["-p", "qwen2-vl", "-p", "internvl", "-p", "mllama"]

    def budget(folder: Path) -> dict:
        result = runner.invoke(app, ["estimate-budget", str(folder), *presets, "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.output)

    base, doc = budget(only_images), budget(mixed)
    assert doc["counts"]["in"] == len(images) + len(kinds)
    assert doc["counts"]["rejected_by_reason"] == {"not_video": 1}
    videos = doc["videos"]
    assert videos["videos"] == 4
    # every video's figures, from its probe (container timestamps) and the pure rules
    want: dict[str, dict[str, int]] = {"qwen2-vl": {}, "internvl": {}}
    for kind in ("h264", "vfr_mkv", "rotated", "one_frame"):
        meta = probe_video(mixed / f"{kind}{kinds[kind]}")
        width, height = meta.display_size
        for name in want:
            try:
                n = len(sample_frames(meta.pts, preset_spec(name)).indices)
            except Exception:  # noqa: BLE001 - too short for this rule
                continue
            want[name][kind] = video_tokens(name, n, width, height).vision_tokens
    for name, per_video in want.items():
        figures = videos["presets"][name]
        assert figures["videos"] == len(per_video)
        assert figures["vision_tokens"] == sum(per_video.values())
        # the videos are rows of the report too: its totals are images + videos
        image_tokens = base["presets"][name]["total_image_tokens"]
        assert doc["presets"][name]["total_image_tokens"] == image_tokens + sum(per_video.values())
    assert "one_frame" not in want["qwen2-vl"]  # Qwen needs 2 frames: refused, not rejected
    assert videos["presets"]["qwen2-vl"]["refused"] == 1
    assert videos["presets"]["mllama"] == {**videos["presets"]["mllama"], "videos": 0,
                                           "refused": 4}  # fmt: skip
    # the rotated file is laid out at its display size (96 x 128)
    h264_tokens = want["qwen2-vl"]["h264"]
    assert want["qwen2-vl"]["rotated"] == video_tokens("qwen2-vl", 6, 96, 128).vision_tokens
    assert h264_tokens == video_tokens("qwen2-vl", 6, 128, 96).vision_tokens


def test_frames_output_and_videos_agree(corpus, tmp_path):
    """The tokens videos.parquet records for a video equal estimate-budget's for it."""
    clips = tmp_path / "clips"
    clips.mkdir()
    shutil.copy(corpus["vfr_mp4"].path, clips / "vfr.mp4")
    out = tmp_path / "frames"
    result = runner.invoke(app, ["sample-frames", str(clips), "-p", "qwen3-vl", "-o", str(out)])
    assert result.exit_code == 0, result.output
    import pyarrow.parquet as pq

    (video,) = pq.read_table(out / "__mmtok__" / "videos.parquet").to_pylist()
    result = runner.invoke(app, ["estimate-budget", str(clips), "-p", "qwen3-vl", "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)["videos"]["presets"]["qwen3-vl"]
    assert figures["vision_tokens"] == video["vision_tokens"]
    assert figures["frames"] == video["frames_sampled"]
