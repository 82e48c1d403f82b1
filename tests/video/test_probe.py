"""probe_video: container facts from a PyAV demux, checked against what the fixtures wrote and
against FFmpeg's own decoded frames (PyAV) as the oracle."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from mmtok.video.probe import VideoError, probe_video
from tests.video.fixtures import GOOD_KINDS, VideoCorpus, session_corpus

DELAYED = {"fragmented": 2 / 30, "avi": 1 / 30}  # presented later than encoded (B-frame delay)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> VideoCorpus:
    return session_corpus(tmp_path_factory)


def decoded_pts_and_rotation(path) -> tuple[list[float], int]:
    """Oracle: the pts of every frame FFmpeg outputs, and the rotation its frames carry."""
    import av

    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
        return [float(f.pts * f.time_base) for f in frames], (-frames[0].rotation) % 360


@pytest.mark.parametrize("kind", [k for k in GOOD_KINDS if k != "truncated"])
def test_pts_match_the_frames_ffmpeg_presents(corpus, kind):
    vf = corpus[kind]
    meta = probe_video(vf.path)
    oracle_pts, oracle_rotation = decoded_pts_and_rotation(vf.path)
    assert meta.frame_count == len(vf.numbers) == len(oracle_pts)
    np.testing.assert_allclose(meta.pts, oracle_pts, atol=1e-9)
    # what the fixture encoded, up to a constant: without an edit list (fragmented MP4, AVI)
    # every frame is presented later by the B-frame delay
    shift = 0.0 if kind not in DELAYED else meta.start_time - vf.pts[0]
    assert shift == pytest.approx(DELAYED.get(kind, 0.0), abs=1e-3)
    np.testing.assert_allclose(meta.pts, np.array(vf.pts) + shift, atol=1e-3)
    assert meta.start_time == pytest.approx(vf.pts[0] + shift, abs=1e-3)
    assert meta.rotation == vf.rotation == oracle_rotation
    assert meta.coded_size == vf.size
    w, h = vf.size
    assert meta.display_size == ((h, w) if vf.rotation in (90, 270) else (w, h))
    assert meta.codec == vf.codec
    assert np.all(np.diff(meta.pts) > 0)
    if kind != "edit_list":
        assert meta.warnings == []


def test_cfr_file_facts(corpus):
    meta = probe_video(corpus["h264"].path)
    assert (meta.header_fps, meta.vfr, meta.open_gop, meta.edit_list) == (30.0, False, False, False)
    assert meta.measured_fps == pytest.approx(30.0)
    assert meta.duration == pytest.approx(90 / 30)
    assert meta.header_frames == meta.packets == 90 and not meta.count_mismatch
    assert meta.keyframes == 3
    assert meta.file_size == corpus["h264"].path.stat().st_size
    assert meta.warnings == []


def test_start_time_is_the_first_presented_pts(corpus):
    meta = probe_video(corpus["start_2s"].path)
    assert meta.start_time == pytest.approx(2.0)
    assert meta.duration == pytest.approx(60 / 30)


@pytest.mark.parametrize("kind", ["vfr_mp4", "vfr_mkv"])
def test_vfr_measured_from_pts_not_the_header(corpus, kind):
    meta = probe_video(corpus[kind].path)
    true_fps = 79 / corpus[kind].pts[-1]
    assert meta.vfr
    assert meta.measured_fps == pytest.approx(true_fps, rel=1e-3)
    if kind == "vfr_mkv":  # Matroska's header states 30 fps for these 16.9 fps (video.md 3.2)
        assert meta.header_fps == 30.0


@pytest.mark.parametrize("kind", ["open_gop", "hevc_open_gop", "mpeg4"])
def test_open_gop_found(corpus, kind):
    assert probe_video(corpus[kind].path).open_gop


@pytest.mark.parametrize("kind", ["h264", "h264_long_gop", "hevc", "vp9", "av1", "mkv"])
def test_closed_gop_not_flagged(corpus, kind):
    assert not probe_video(corpus[kind].path).open_gop


def test_edit_list_hides_the_leading_frames(corpus):
    vf = corpus["edit_list"]
    meta = probe_video(vf.path)
    assert meta.edit_list and meta.discarded > 0
    assert meta.frame_count == 90 and meta.header_frames == 135  # the header counts hidden ones
    assert meta.count_mismatch
    assert meta.start_time == pytest.approx(0.0)
    # FFmpeg drops the 30 hidden packets no shown frame needs: not a truncated file
    assert meta.warnings == ["the header counts 135 frames, the file has 105"]


def test_truncated_file_lists_the_packets_present(corpus):
    meta = probe_video(corpus["truncated"].path)
    assert meta.header_frames == 120 and 0 < meta.packets < 120
    assert meta.count_mismatch
    assert any(w.startswith("truncated") for w in meta.warnings)


def test_audio_next_to_video_is_ignored(corpus):
    assert probe_video(corpus["with_audio"].path).frame_count == 90


@pytest.mark.parametrize("kind", ["empty", "garbage", "audio_only", "truncated_no_moov"])
def test_bad_files_raise_their_reason(corpus, kind):
    vf = corpus[kind]
    with pytest.raises(VideoError) as err:
        probe_video(vf.path)
    assert err.value.reason == vf.reason
    with pytest.raises(VideoError) as err:  # the same from bytes
        probe_video(vf.path.read_bytes())
    assert err.value.reason == vf.reason


def test_an_image_is_not_a_video(tmp_path):
    from PIL import Image

    path = tmp_path / "still.png"
    Image.new("RGB", (32, 32), "red").save(path)
    with pytest.raises(VideoError) as err:
        probe_video(path)
    assert err.value.reason == "not_video"


def test_bytes_and_path_agree(corpus):
    vf = corpus["rotated"]
    a, b = probe_video(vf.path), probe_video(vf.path.read_bytes())
    assert a.to_row() == b.to_row()
    np.testing.assert_array_equal(a.pts, b.pts)


def test_meta_and_errors_cross_process_boundaries(corpus):
    meta = probe_video(corpus["vfr_mkv"].path)
    back = pickle.loads(pickle.dumps(meta))
    np.testing.assert_array_equal(back.pts, meta.pts)
    err = pickle.loads(pickle.dumps(VideoError("truncated", "cut")))
    assert (err.reason, err.message) == ("truncated", "cut")


def test_to_row_is_plain_values(corpus):
    row = probe_video(corpus["rotated"].path).to_row()
    assert row["rotation"] == 90 and (row["width"], row["height"]) == (96, 128)
    assert all(isinstance(v, (str, int, float, bool, list)) for v in row.values())


def test_rotation_180(tmp_path):
    """Not in the shared corpus: a 180-degree display matrix read from tkhd as FFmpeg does."""
    import av

    from tests.video import fixtures

    path = tmp_path / "r180.mp4"
    fixtures._encode(str(path), fixtures._cfr_times(3, 30), width=64, height=48, rotation_cw=180)
    with av.open(str(path)) as c:
        assert (-next(c.decode(video=0)).rotation) % 360 == 180
    meta = probe_video(path)
    assert meta.rotation == 180 and meta.display_size == (64, 48)


def test_text_and_html_are_not_videos(tmp_path):
    for name, body in [("notes.txt", b"hello\nworld\n"), ("page.mp4", b"<html>hi</html>")]:
        (tmp_path / name).write_bytes(body)
        with pytest.raises(VideoError) as err:
            probe_video(tmp_path / name)
        assert err.value.reason == "not_video"


def test_unknown_codec_is_unsupported(corpus, tmp_path):
    """An MP4 whose sample entry names a codec no FFmpeg decoder knows (fourcc `zzzz`)."""
    data = corpus["h264"].path.read_bytes()
    at = data.index(b"avc1", data.index(b"stsd"))
    path = tmp_path / "zzzz.mp4"
    path.write_bytes(data[:at] + b"zzzz" + data[at + 4 :])
    with pytest.raises(VideoError) as err:
        probe_video(path)
    assert err.value.reason == "unsupported_codec"


def test_missing_and_unreadable_paths_are_rejects(tmp_path):
    with pytest.raises(VideoError) as err:
        probe_video(tmp_path / "nope.mp4")
    assert err.value.reason == "missing_file"
    with pytest.raises(VideoError) as err:
        probe_video(tmp_path)  # a directory
    assert err.value.reason == "read_error"


@pytest.mark.parametrize("kind", ["mkv", "vp9"])
def test_cut_matroska_is_flagged_by_its_header_duration(corpus, kind, tmp_path):
    """Matroska has no frame count: a cut file demuxes cleanly, but its header duration is
    longer than its frames. (Its frames still decode exactly: decode tests cover that.)"""
    data = corpus[kind].path.read_bytes()
    path = tmp_path / f"cut{corpus[kind].path.suffix}"
    path.write_bytes(data[: len(data) // 2])
    meta = probe_video(path)
    assert 0 < meta.frame_count < len(corpus[kind].numbers)
    assert any(w.startswith("shorter than its header") for w in meta.warnings)
    assert probe_video(corpus[kind].path).warnings == []
