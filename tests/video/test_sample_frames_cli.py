"""`mmtok sample-frames`: the exact frames (numbers read back from the pixels) for every mode
and preset, bad files as rejects, hung and crashing decoders isolated, and output that every
other command reads."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from mmtok.cli.app import app
from mmtok.engine.pipeline import OutputOptions, run_pipeline
from mmtok.io.sources import Inputs, ReadOptions
from mmtok.stages.frames import FrameOptions, SampleFramesStage, VideoRejected
from mmtok.video.sampling import Mode, Pick, Rounding, SamplingSpec, preset_spec, sample_frames
from mmtok.video.tokens import video_tokens
from tests.video.fixtures import GOOD_KINDS, VideoCorpus, read_frame_number, session_corpus
from tests.video.poison_decoders import PoisonDecoders

runner = CliRunner()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> VideoCorpus:
    return session_corpus(tmp_path_factory)


def number_of(frame_bytes: bytes, rotation: int) -> int:
    rgb = np.asarray(Image.open(io.BytesIO(frame_bytes)).convert("RGB"))
    return read_frame_number(np.rot90(rgb, k=rotation // 90))  # back to coded orientation


def number_at(video, pts: float) -> int:
    """The number painted in the frame the fixture presents at `pts`."""
    return video.numbers[int(np.argmin(np.abs(np.asarray(video.pts) - pts)))]


def check_frames(video, spec: SamplingSpec, decoder: str = "auto") -> list[dict]:
    """Sample `video` with the stage and check every frame against the fixture's truth."""
    stage = SampleFramesStage(spec, decoder=decoder)
    rows, info = stage.video_rows({"id": video.kind, "image": {"path": str(video.path)}})
    truth_pts = np.asarray(video.pts)
    want = sample_frames(truth_pts, spec, key=video.kind)
    assert [r["frame_index"] for r in rows] == list(want.indices), video.kind
    for row in rows:
        index = row["frame_index"]
        assert number_of(row["image"]["bytes"], video.rotation) == video.numbers[index], (
            video.kind,
            index,
            row["decoder"],
        )
        # times from the first frame; the container's own clock may start later (a B-frame
        # delay without an edit list, a start time): pts_s - time_s is the same for every frame
        assert row["time_s"] == pytest.approx(video.pts[index] - video.pts[0], abs=1e-3)
        assert row["pts_s"] - row["time_s"] == pytest.approx(rows[0]["pts_s"] - rows[0]["time_s"])
    assert info["frames_written"] == len(rows)
    if video.kind == "start_2s":
        assert rows[0]["pts_s"] - rows[0]["time_s"] == pytest.approx(2.0, abs=1e-3)
    return rows


SPECS = {
    "uniform16": SamplingSpec(num_frames=16),
    "uniform16_floor": SamplingSpec(num_frames=16, rounding=Rounding.FLOOR),
    "fps1": SamplingSpec(mode=Mode.FPS, fps=1.0),
    "fps3_window": SamplingSpec(mode=Mode.FPS, fps=3.0, start=0.5, end=2.0),
    "segments8": SamplingSpec(mode=Mode.SEGMENTS, segments=8),
    "segments5_first": SamplingSpec(mode=Mode.SEGMENTS, segments=5, pick=Pick.FIRST),
    "segments6_random": SamplingSpec(mode=Mode.SEGMENTS, segments=6, pick=Pick.RANDOM, seed=3),
    "timestamps": SamplingSpec(mode=Mode.TIMESTAMPS, timestamps=(0.0, 0.51, 1.0, 1.9)),
    "timestamps_floor": SamplingSpec(
        mode=Mode.TIMESTAMPS, timestamps=(0.51, 1.5), rounding=Rounding.FLOOR
    ),
    "uniform4_window": SamplingSpec(num_frames=4, start=1.0, end=2.5),
    **{
        f"preset_{name}": preset_spec(name)
        for name in (
            "qwen2-vl",
            "qwen2.5-vl",
            "qwen3-vl",
            "llama3-336",
            "llava-video",
            "llava-onevision",
            "internvl",
        )
    },  # fmt: skip
}
HARD_KINDS = ["h264", "vfr_mp4", "vfr_mkv", "edit_list", "open_gop", "start_2s", "rotated"]


@pytest.mark.parametrize("kind", HARD_KINDS)
@pytest.mark.parametrize("spec", list(SPECS))
def test_every_mode_and_preset_gives_the_exact_frames(corpus, kind, spec):
    check_frames(corpus[kind], SPECS[spec])


GOOD = [k for k in GOOD_KINDS if k not in ("truncated", "one_frame")]


@pytest.mark.parametrize("kind", GOOD)
def test_every_file_kind_gives_the_exact_frames(corpus, kind):
    check_frames(corpus[kind], SPECS["uniform16"])
    check_frames(corpus[kind], SPECS["preset_qwen2-vl"])


@pytest.mark.parametrize("decoder", ["decord", "pyav"])
def test_requested_decoder(corpus, decoder):
    rows = check_frames(corpus["h264"], SPECS["uniform16"], decoder=decoder)
    assert {r["decoder"] for r in rows} == {decoder}


def test_qwen_frames_and_sizes_match_qwen_vl_utils_fetch_video(corpus):
    """qwen-vl-utils 0.0.14 `fetch_video` (decord backend) on the same file: the same frame
    indices, and each frame resized to the size `mmtok.video.tokens` says."""
    vp = pytest.importorskip("qwen_vl_utils.vision_process")
    pytest.importorskip("torchvision")
    video = corpus["h264"]
    for name, patch, total in (
        ("qwen2-vl", 14, 24576 * 28 * 28),
        ("qwen2.5-vl", 14, 90316800),
        ("qwen3-vl", 16, 128000 * 32 * 32 * 0.9),
    ):
        ele = {"video": str(video.path), "fps": 2.0, "total_pixels": total}
        frames, meta = vp.fetch_video(ele, image_patch_size=patch, return_video_metadata=True)
        rows = check_frames(video, preset_spec(name))
        assert [r["frame_index"] for r in rows] == meta["frames_indices"]
        width, height = video.size
        tokens = video_tokens(name, len(rows), width, height)
        assert tokens.frame_size == (frames.shape[3], frames.shape[2])


def test_truncated_file_gives_frames_before_the_damage(corpus):
    video = corpus["truncated"]
    stage = SampleFramesStage(SamplingSpec(num_frames=8))
    rows, info = stage.video_rows({"id": "t", "image": {"path": str(video.path)}})
    assert rows and any("truncated" in w for w in info["warnings"])
    for row in rows:  # the packets left are not a prefix of presentation order (B-frames)
        assert number_of(row["image"]["bytes"], 0) == number_at(video, row["pts_s"])


@pytest.mark.parametrize(
    ("kind", "spec", "reason"),
    [
        ("empty", SPECS["uniform16"], "empty_file"),
        ("garbage", SPECS["uniform16"], "not_video"),
        ("audio_only", SPECS["uniform16"], "no_video_stream"),
        ("truncated_no_moov", SPECS["uniform16"], "truncated"),
        ("one_frame", SPECS["preset_qwen2-vl"], "too_short"),
        ("h264", SamplingSpec(mode=Mode.TIMESTAMPS, timestamps=(9.0,)), "too_short"),
    ],
)
def test_bad_files_are_rejects(corpus, kind, spec, reason):
    stage = SampleFramesStage(spec)
    with pytest.raises(VideoRejected) as e:
        stage.video_rows({"id": kind, "image": {"path": str(corpus[kind].path)}})
    assert e.value.reason == reason


def test_frame_formats(corpus):
    video = corpus["h264"]
    row = {"id": "v", "image": {"path": str(video.path)}}
    spec = SamplingSpec(num_frames=2)
    png = SampleFramesStage(spec, frames=FrameOptions("png")).video_rows(row)[0]
    assert Image.open(io.BytesIO(png[0]["image"]["bytes"])).format == "PNG"
    raw = SampleFramesStage(spec, frames=FrameOptions("raw", max_side=64)).video_rows(row)[0]
    assert raw[0]["image"] is None and (raw[0]["width"], raw[0]["height"]) == (64, 48)
    assert len(raw[0]["pixels"]) == 64 * 48 * 3


# -- the command ---------------------------------------------------------------------------------

BAD = {"empty": "empty_file", "garbage": "not_video", "audio_only": "no_video_stream",
       "truncated_no_moov": "truncated", "one_frame": "too_short"}  # fmt: skip
CLIP_KINDS = ["h264", "vfr_mkv", "edit_list", "open_gop", "truncated", "rotated"]


@pytest.fixture(scope="module")
def clips(corpus, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("clips")
    for kind in [*CLIP_KINDS, *BAD]:
        source = corpus[kind].path
        shutil.copy(source, folder / (kind + (".mkv" if source.suffix == ".mkv" else ".mp4")))
    return folder


def read_rows(folder: Path) -> list[dict]:
    return [r for p in sorted(folder.glob("part-*.parquet")) for r in pq.read_table(p).to_pylist()]


def test_command_over_a_folder(corpus, clips, tmp_path):
    out = tmp_path / "frames"
    result = runner.invoke(
        app,
        ["sample-frames", str(clips), "--preset", "qwen2-vl", "-o", str(out), "--json", "-w", "2"],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    counts = doc["counts"]
    assert counts["videos_in"] == len(CLIP_KINDS) + len(BAD)
    assert counts["videos_kept"] + counts["videos_rejected"] == counts["videos_in"]
    assert counts["rejected_by_reason"] == {
        "empty_file": 1, "no_video_stream": 1, "not_video": 1, "too_short": 1, "truncated": 1,
    }  # fmt: skip
    manifest = json.loads((out / "__mmtok__" / "manifest.json").read_text())
    assert manifest["counts"]["in_kept"] == len(CLIP_KINDS)
    rejects = pq.read_table(out / "__mmtok__" / "rejects.parquet").to_pylist()
    assert {Path(r["image"]["path"]).stem: r["reason"] for r in rejects} == BAD
    rows = read_rows(out)
    assert len(rows) == counts["frames_out"] == manifest["counts"]["out"]
    videos = pq.read_table(out / "__mmtok__" / "videos.parquet").to_pylist()
    assert sorted(Path(v["video_path"]).stem for v in videos) == sorted(CLIP_KINDS)
    by_kind = {Path(v["video_path"]).stem: v for v in videos}
    assert by_kind["h264"]["decoder"] == "decord" and by_kind["open_gop"]["decoder"] == "pyav"
    assert "open GOP" in by_kind["open_gop"]["decoder_why"]
    assert by_kind["truncated"]["warnings"]
    # every kept video: its frames, exact, and its tokens
    for kind in CLIP_KINDS:
        video = corpus[kind]
        frames = [r for r in rows if Path(r["video_path"]).stem == kind]
        want = sample_frames(np.asarray(video.pts), preset_spec("qwen2-vl")).indices
        if kind != "truncated":
            assert [r["frame_index"] for r in frames] == list(want)
        for r in frames:
            assert number_of(r["image"]["bytes"], video.rotation) == number_at(video, r["pts_s"])
        w, h = by_kind[kind]["width"], by_kind[kind]["height"]
        tokens = video_tokens("qwen2-vl", by_kind[kind]["frames_sampled"], w, h).vision_tokens
        assert by_kind[kind]["vision_tokens"] == tokens
    assert len({r["id"] for r in rows}) == len(rows)  # every frame row has its own id

    # the frames are image rows every command reads
    tiled = tmp_path / "tiled"
    result = runner.invoke(app, ["tile", str(out), "-p", "qwen2-vl", "-o", str(tiled), "--json"])
    assert result.exit_code == 0, result.output
    tile_doc = json.loads(result.output)
    assert tile_doc["counts"]["in"] == tile_doc["counts"]["out"] == len(rows)
    assert {r["video_id"] for r in read_rows(tiled)} == {r["video_id"] for r in rows}
    result = runner.invoke(app, ["estimate-budget", str(out), "-p", "internvl", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["presets"]["internvl"]["images"] == len(rows)
    result = runner.invoke(app, ["filter", str(out), "--min-side", "8", "-o", str(tmp_path / "f")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["dedup", str(out), "-o", str(tmp_path / "d"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["counts"]["in"] == len(rows)


def test_stdout_jsonl_and_sources(corpus, tmp_path):
    """JSON Lines on stdout; a JSONL list with --video-col; a tar shard with .mp4 members."""
    h264 = corpus["h264"].path
    listing = tmp_path / "videos.jsonl"
    listing.write_text(
        json.dumps({"id": "a", "clip": str(h264), "caption": "a clip"}) + "\n"
        + json.dumps({"id": "b", "clip": str(tmp_path / "nope.mp4")}) + "\n"
    )  # fmt: skip
    result = runner.invoke(
        app,
        ["sample-frames", str(listing), "--video-col", "clip", "--num-frames", "3", "-o", "-",
         "--rejects", str(tmp_path / "rejects.jsonl")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    frames = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [(f["id"], f["frame_index"], f["caption"]) for f in frames] == [
        ("a#0", 0, "a clip"), ("a#1", 44, "a clip"), ("a#2", 89, "a clip"),  # 44.5: half to even
    ]  # fmt: skip
    rejected = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert [(r["id"], r["reason"]) for r in rejected] == [("b", "missing_file")]

    shard = tmp_path / "shard.tar"
    with tarfile.open(shard, "w") as tar:
        for key, kind in (("k1", "h264"), ("k2", "garbage")):
            tar.add(corpus[kind].path, arcname=f"{key}.mp4")
    out = tmp_path / "from_tar"
    result = runner.invoke(
        app, ["sample-frames", str(shard), "--segments", "2", "-o", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["counts"]["frames_out"] == 2 and doc["counts"]["rejected_by_reason"] == {
        "not_video": 1
    }
    assert [r["frame_index"] for r in read_rows(out)] == [22, 67]  # InternVL middles of 90


@pytest.mark.parametrize("recycle_after", [None, 3])  # 3: workers retire between slices
def test_hung_and_crashing_decoders_are_rejects_and_the_run_goes_on(
    corpus, tmp_path, recycle_after
):
    folder = tmp_path / "poison"
    folder.mkdir()
    names = ["a_ok", "crash", "b_ok", "hang_decord", "c_ok", "hang", "d_ok", "e_ok"]
    for name in names:
        shutil.copy(corpus["h264"].path, folder / f"{name}.mp4")
    attempts = tmp_path / "attempts"
    attempts.mkdir()
    out = tmp_path / "out"
    manifest = run_pipeline(
        Inputs([str(folder)], ReadOptions(batch_rows=3, videos=True)),
        [
            PoisonDecoders(
                SamplingSpec(num_frames=2), attempts_dir=str(attempts), recycle_after=recycle_after
            )
        ],
        OutputOptions(str(out)),
        workers=2,
        row_timeout=2.0,
    )
    counts = manifest["counts"]
    assert counts["in"] == len(names)
    rejects = pq.read_table(out / "__mmtok__" / "rejects.parquet").to_pylist()
    assert counts["rejected_by_reason"] == {"decoder_crash": 1, "timeout": 1}, rejects
    assert counts["in_kept"] == len(names) - 2 and counts["out"] == 2 * (len(names) - 2)
    rows = read_rows(out)
    kept = sorted({Path(r["video_path"]).stem for r in rows})
    assert kept == sorted(n for n in names if n not in ("crash", "hang"))
    # decord hung on this one: the retry alone used PyAV, and says so
    retried = [r for r in rows if Path(r["video_path"]).stem == "hang_decord"]
    assert {r["decoder"] for r in retried} == {"pyav"}
    assert "retried with PyAV" in json.loads(retried[0]["video_info"])["decoder_why"]
    assert {r["decoder"] for r in rows if "ok" in r["video_path"]} == {"decord"}
    by_name = {Path(r["image"]["path"]).stem: r for r in rejects}
    assert (
        by_name["crash"]["reason"] == "decoder_crash" and "SIGSEGV" in by_name["crash"]["message"]
    )
    assert by_name["hang"]["reason"] == "timeout"
    for r in rows:  # the frames of every video that went through are right
        assert number_of(r["image"]["bytes"], 0) == corpus["h264"].numbers[r["frame_index"]]


def test_workers_are_recycled_after_n_videos(corpus, tmp_path):
    from tests.video.poison_decoders import PidStage

    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(6):
        shutil.copy(corpus["h264"].path, folder / f"v{i}.mp4")
    out = tmp_path / "out"
    manifest = run_pipeline(
        Inputs([str(folder)], ReadOptions(batch_rows=1, videos=True)),
        [PidStage(SamplingSpec(num_frames=1), recycle_after=2)],
        OutputOptions(str(out)),
        workers=1,
    )
    assert manifest["counts"]["out"] == 6 and manifest["counts"]["rejected"] == 0
    pids = [r["decoder"].split("@")[1] for r in read_rows(out)]
    assert len(set(pids)) == 3  # 2 videos per worker process
    assert pids == sorted(pids, key=pids.index)  # each process's videos in a row, in order


def test_resume_after_an_interrupt_loses_and_repeats_nothing(corpus, tmp_path):
    from mmtok.engine.pipeline import Interrupted
    from tests.video.poison_decoders import InterruptAt

    folder = tmp_path / "videos"
    folder.mkdir()
    names = [f"v{i}" for i in range(5)] + ["v35_stop", "w0", "w1"]  # read in name order
    for name in names:
        shutil.copy(corpus["h264"].path, folder / f"{name}.mp4")
    shutil.copy(corpus["garbage"].path, folder / "v2_garbage.mp4")
    out = tmp_path / "out"
    spec = SamplingSpec(num_frames=3)

    def run(stage, resume: bool) -> dict:
        return run_pipeline(
            Inputs([str(folder)], ReadOptions(batch_rows=2, videos=True)),
            [stage],
            OutputOptions(str(out), resume=resume, shard_rows=4),
            workers=1,
        )

    with pytest.raises(Interrupted):
        run(InterruptAt(spec), resume=False)
    state = json.loads(next((tmp_path).glob(".*out*/state.json")).read_text())
    assert state["batches_done"] >= 2  # v0-v3 (and the garbage file) were written before
    manifest = run(SampleFramesStage(spec), resume=True)
    counts = manifest["counts"]
    assert counts["in"] == len(names) + 1 and counts["rejected_by_reason"] == {"not_video": 1}
    assert counts["in_kept"] == len(names) and counts["out"] == 3 * len(names)
    assert manifest["resumed"] >= 1
    rows = read_rows(out)
    assert len({r["id"] for r in rows}) == len(rows) == 3 * len(names)
    assert sorted({Path(r["video_path"]).stem for r in rows}) == sorted(names)
