"""Sampling rules and video token counts against the reference code (pure: pts arrays)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mmtok.video.sampling import (
    VIDEO_PRESETS,
    Mode,
    Pick,
    Rounding,
    SamplingSpec,
    TooShort,
    preset_spec,
    sample_frames,
    smart_nframes,
)
from mmtok.video.tokens import TOKEN_RULES, qwen_frame_pixels, video_tokens


def cfr(frames: int, fps: float = 30.0, start: float = 0.0) -> np.ndarray:
    """pts of a constant-rate file, as integer ticks of a 1/90000 time base."""
    step = round(90000 / fps)
    return start + np.arange(frames) * step / 90000


def internvl_indices(num_frames: int, vlen: int) -> list[int]:
    """OpenGVLab/InternVL@2410d1db internvl_chat/internvl/train/dataset.py get_frame_indices
    (sample="middle"), re-typed as the oracle."""
    acc_samples = min(num_frames, vlen)
    intervals = np.linspace(start=0, stop=vlen, num=acc_samples + 1).astype(int)
    ranges = [(interv, intervals[i + 1] - 1) for i, interv in enumerate(intervals[:-1])]
    frame_indices = [(x[0] + x[1]) // 2 for x in ranges]
    if len(frame_indices) < num_frames:
        padded = [frame_indices[-1]] * num_frames
        padded[: len(frame_indices)] = frame_indices
        frame_indices = padded
    return frame_indices


FRAME_COUNTS = [1, 2, 3, 5, 16, 17, 31, 100, 255, 300, 301, 1799]
SAMPLE_COUNTS = [1, 2, 3, 4, 7, 8, 16, 20, 32, 64]


@pytest.mark.parametrize("fps", [30.0, 25.0, 24.0, 60.0])
def test_uniform_round_is_qwen_linspace_round(fps):
    torch = pytest.importorskip("torch")
    for total in FRAME_COUNTS:
        for n in SAMPLE_COUNTS:
            got = sample_frames(cfr(total, fps), SamplingSpec(num_frames=n)).indices
            # qwen-vl-utils _read_video_decord: torch.linspace(start, end, nframes).round()
            want = torch.linspace(0, total - 1, n).round().long().tolist()
            assert list(got) == want, (total, n)


def test_uniform_floor_is_llava_linspace_int():
    for total in FRAME_COUNTS:
        for n in SAMPLE_COUNTS:
            spec = SamplingSpec(num_frames=n, rounding=Rounding.FLOOR)
            got = sample_frames(cfr(total), spec).indices
            # LLaVA-NeXT llava/utils.py process_video_with_decord (force_sample)
            assert list(got) == np.linspace(0, total - 1, n, dtype=int).tolist(), (total, n)


def test_segments_middle_is_internvl():
    for total in FRAME_COUNTS:
        for k in [1, 4, 8, 16, 32]:
            spec = SamplingSpec(mode=Mode.SEGMENTS, segments=k)
            assert list(sample_frames(cfr(total), spec).indices) == internvl_indices(k, total)


def test_segments_first_and_random():
    pts = cfr(100)
    first = sample_frames(pts, SamplingSpec(mode=Mode.SEGMENTS, segments=4, pick=Pick.FIRST))
    assert first.indices == (0, 25, 50, 75)
    spec = SamplingSpec(mode=Mode.SEGMENTS, segments=4, pick=Pick.RANDOM, seed=7)
    a, b = sample_frames(pts, spec, key="v1"), sample_frames(pts, spec, key="v1")
    assert a == b  # same seed and video: same frames, whatever the order of the run
    for index, low in zip(a.indices, (0, 25, 50, 75), strict=True):
        assert low <= index < low + 25
    draws = {sample_frames(pts, spec, key=f"v{i}").indices for i in range(20)}
    assert len(draws) > 1  # the video id is part of the seed


def test_fps_count_is_qwen_smart_nframes():
    vp = pytest.importorskip("qwen_vl_utils.vision_process")
    for fps_src in (30.0, 25.0, 24.0, 60.0, 10.0):
        for total in [4, 5, 9, 16, 30, 31, 59, 60, 61, 300, 301, 1799, 20000, 40000]:
            pts = cfr(total, fps_src)
            torch = pytest.importorskip("torch")
            spec = VIDEO_PRESETS["qwen2-vl"]
            got = len(sample_frames(pts, spec).indices)
            want = vp.smart_nframes({"fps": 2.0}, total_frames=total, video_fps=fps_src)
            assert got == want, (fps_src, total)
            if total > 10_000:
                continue  # torch's float32 linspace moves exact halves there (see below)
            # and the frames are its torch.linspace(0, total - 1, n).round()
            want_idx = torch.linspace(0, total - 1, want).round().long().tolist()
            assert list(sample_frames(pts, spec).indices) == want_idx


def test_long_clip_index_is_exact_where_torch_float32_is_not():
    """40,000 frames, 768 samples: sample 737 is at 737 x 39999 / 767 = 38434.502 exactly, so
    the nearest frame is 38435; qwen-vl-utils' float32 torch.linspace gives 38434. mmtok keeps
    the exact value (a documented difference of one frame, on clips over ~10,000 frames)."""
    torch = pytest.importorskip("torch")
    got = sample_frames(cfr(40000), VIDEO_PRESETS["qwen2-vl"]).indices
    assert got[737] == 38435
    assert torch.linspace(0, 39999, 768).round().long().tolist()[737] == 38434


@pytest.mark.parametrize("total", [1, 3])
def test_qwen_too_short(total):
    """qwen-vl-utils raises for 1 frame (no even count fits) and gives 2 frames of 3."""
    vp = pytest.importorskip("qwen_vl_utils.vision_process")
    pts = cfr(total)
    if total == 1:
        with pytest.raises(ValueError):
            vp.smart_nframes({"fps": 2.0}, total_frames=1, video_fps=30.0)
        with pytest.raises(TooShort):
            sample_frames(pts, VIDEO_PRESETS["qwen2-vl"])
    else:
        want = vp.smart_nframes({"fps": 2.0}, total_frames=3, video_fps=30.0)
        assert len(sample_frames(pts, VIDEO_PRESETS["qwen2-vl"]).indices) == want == 2


def test_fps_mode_limits():
    pts = cfr(300)  # 10 s
    assert len(sample_frames(pts, SamplingSpec(mode=Mode.FPS, fps=1.0)).indices) == 10
    spec = SamplingSpec(mode=Mode.FPS, fps=1.0, max_frames=4)
    assert len(sample_frames(pts, spec).indices) == 4
    spec = SamplingSpec(mode=Mode.FPS, fps=0.1, min_frames=5)
    assert len(sample_frames(pts, spec).indices) == 5
    spec = SamplingSpec(mode=Mode.FPS, fps=0.7, frame_multiple=4)
    assert len(sample_frames(pts, spec).indices) == 4  # 7 floored to a multiple of 4
    assert smart_nframes(10.0, 300, 1.0, 1, None, 1) == 10


def test_vfr_fps_samples_by_time_not_by_average_rate():
    """60 frames at 30 fps, then 60 at 10 fps: 8 s (the average rate is 15 fps). At 1 fps: 8
    frames spread evenly in time, each within half a frame of its target; spread by index
    (what the average rate gives) they would crowd into the first 2 s."""
    pts = np.concatenate([np.arange(60) / 30, 2 + np.arange(60) / 10])
    sample = sample_frames(pts, SamplingSpec(mode=Mode.FPS, fps=1.0))
    assert len(sample.indices) == 8  # 8 s at 1 fps (duration from pts: 2 + 5.9 + 0.1)
    times = pts[list(sample.indices)]
    np.testing.assert_allclose(times, sample.requested, atol=0.05 + 1e-9)
    by_index = np.linspace(0, 119, 8).round().astype(int)
    assert max(abs(pts[by_index] - np.array(sample.requested))) > 1.0


def test_timestamps_and_window():
    pts = cfr(90, 30.0, start=2.0)  # first frame shown at 2 s: times count from it
    spec = SamplingSpec(mode=Mode.TIMESTAMPS, timestamps=(0.0, 0.5, 1.0, 2.98))
    assert sample_frames(pts, spec).indices == (0, 15, 30, 89)
    floor = SamplingSpec(mode=Mode.TIMESTAMPS, timestamps=(0.06,), rounding=Rounding.FLOOR)
    assert sample_frames(pts, floor).indices == (1,)  # frame 1 shows from 0.0333 to 0.0667 s
    nearest = SamplingSpec(mode=Mode.TIMESTAMPS, timestamps=(0.06,))
    assert sample_frames(pts, nearest).indices == (2,)  # frame 2 (0.0667 s) is nearer
    with pytest.raises(TooShort):
        sample_frames(pts, SamplingSpec(mode=Mode.TIMESTAMPS, timestamps=(3.0,)))
    windowed = SamplingSpec(num_frames=3, start=1.0, end=2.0)
    assert sample_frames(pts, windowed).indices == (30, 45, 60)
    assert sample_frames(pts, SamplingSpec(num_frames=2, start=1.0)).indices == (30, 89)
    with pytest.raises(TooShort):
        sample_frames(pts, SamplingSpec(num_frames=2, start=5.0))


def test_qwen_window_matches_calculate_video_frame_range():
    vp = pytest.importorskip("qwen_vl_utils.vision_process")
    for start, end in [(1.0, 4.0), (0.5, 9.99), (2.0, None), (None, 3.3)]:
        ele = {k: v for k, v in (("video_start", start), ("video_end", end)) if v is not None}
        first, last, count = vp.calculate_video_frame_range(ele, 300, 30.0)
        spec = preset_spec("qwen2.5-vl", start=start, end=end)
        got = sample_frames(cfr(300), spec).indices
        assert got[0] == first and got[-1] == last
        n = vp.smart_nframes({"fps": 2.0}, total_frames=count, video_fps=30.0)
        assert len(got) == n


def test_uniform_repeats_frames_of_a_short_video():
    assert sample_frames(cfr(3), preset_spec("llama3-336")).indices == (
        0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2,
    )  # fmt: skip
    assert sample_frames(cfr(1), SamplingSpec(num_frames=4)).indices == (0, 0, 0, 0)


def test_spec_checks():
    with pytest.raises(ValueError):
        SamplingSpec(num_frames=0)
    with pytest.raises(ValueError):
        SamplingSpec(start=3.0, end=1.0)
    with pytest.raises(ValueError):
        SamplingSpec(mode=Mode.TIMESTAMPS)


# -- tokens ------------------------------------------------------------------------------------

QWEN = [("qwen2-vl", 14, 24576 * 28 * 28), ("qwen2.5-vl", 14, 90316800), ("qwen3-vl", 16, None)]


@pytest.mark.parametrize(("preset", "patch", "total_pixels"), QWEN)
def test_qwen_frame_size_is_qwen_vl_utils(preset, patch, total_pixels):
    """Per-frame size and tokens from qwen-vl-utils' own fetch_video arithmetic (0.0.14)."""
    vp = pytest.importorskip("qwen_vl_utils.vision_process")
    factor = patch * 2
    total = total_pixels or vp.MODEL_SEQ_LEN * factor * factor * 0.9
    for width, height in [(640, 480), (1280, 720), (1920, 1080), (320, 240), (321, 241),
                          (3840, 2160), (720, 1280), (64, 64)]:  # fmt: skip
        for frames in [2, 4, 20, 120, 768]:
            min_pixels = vp.VIDEO_MIN_TOKEN_NUM * factor * factor
            max_pixels = max(
                min(vp.VIDEO_MAX_TOKEN_NUM * factor * factor, total / frames * vp.FRAME_FACTOR),
                int(min_pixels * 1.05),
            )
            assert qwen_frame_pixels(frames, factor, total) == (min_pixels, max_pixels)
            h, w = vp.smart_resize(height, width, factor, min_pixels, max_pixels)
            got = video_tokens(preset, frames, width, height)
            assert got.frame_size == (w, h), (preset, width, height, frames)
            assert got.vision_tokens == math.ceil(frames / 2) * (h // factor) * (w // factor)


def test_qwen2_vl_10s_clip_table():
    """presets.md §2b: a 10 s 30 fps clip at 2 fps = 20 frames."""
    for (w, h), tokens in {(640, 480): 3910, (1280, 720): 7200, (4032, 3024): 7680}.items():
        assert video_tokens("qwen2-vl", 20, w, h).vision_tokens == tokens


def test_fixed_rules():
    assert video_tokens("internvl", 8, 640, 480).vision_tokens == 8 * 256
    assert video_tokens("llava-video", 64, 640, 480).vision_tokens == 64 * 210
    assert video_tokens("llava-onevision", 32, 640, 480).vision_tokens == 32 * 196 + 1
    # Llama 3: 16 frames, each a 640x480 image under llama3-336 (4 tiles x 577)
    assert video_tokens("llama3-336", 16, 640, 480).vision_tokens == 16 * 2308


def test_every_preset_has_both_rules():
    assert set(VIDEO_PRESETS) == set(TOKEN_RULES)
