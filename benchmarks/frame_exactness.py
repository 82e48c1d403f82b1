"""The frame-exactness table of `mmtok sample-frames`: file kind x backend x mode, right frames
out of requested, on the number-painted fixtures of tests/video/fixtures.py.

Backends: raw decord (`VideoReader(path).get_batch(indices)`, what most loaders do), mmtok's
PyAV path, and mmtok auto (decord where the probe says it is exact, PyAV elsewhere). A frame is
right when the number painted in its pixels is the number of the frame the fixture presents at
that index. Run: PYTHONPATH=. python benchmarks/frame_exactness.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1]))

from mmtok.video.decode import decode_frames  # noqa: E402
from mmtok.video.probe import VideoError, probe_video  # noqa: E402
from mmtok.video.sampling import Mode, SamplingSpec, preset_spec, sample_frames  # noqa: E402
from tests.video.fixtures import GOOD_KINDS, VideoCorpus, read_frame_number  # noqa: E402

MODES = {
    "uniform-16": SamplingSpec(num_frames=16),
    "qwen2-vl 2 fps": preset_spec("qwen2-vl"),
    "segments-8": SamplingSpec(mode=Mode.SEGMENTS, segments=8),
    "1 fps": SamplingSpec(mode=Mode.FPS, fps=1.0),
}


def numbers(frames, rotation: int) -> list[int]:
    return [read_frame_number(np.rot90(f, k=rotation // 90)) for f in frames]


def raw_decord(path: Path, indices: list[int]) -> list[np.ndarray] | str:
    import decord

    try:
        reader = decord.VideoReader(str(path))
        usable = [i for i in indices if i < len(reader)]
        return list(reader.get_batch(usable).asnumpy())
    except Exception as e:  # noqa: BLE001 - a backend's failure is a table cell
        return type(e).__name__


def main() -> None:
    corpus = VideoCorpus(Path(tempfile.mkdtemp(prefix="mmtok-exactness-")))
    totals: dict[str, dict[str, list]] = {}  # kind -> backend -> [right, requested, note]
    print("| file | mode | raw decord | mmtok pyav | mmtok auto (backend) |")
    print("|---|---|---|---|---|")
    for kind in GOOD_KINDS:
        video = corpus[kind]
        truth = np.asarray(video.pts)
        meta = probe_video(video.path)
        for mode, spec in MODES.items():
            try:
                indices = list(sample_frames(meta.pts, spec).indices)
            except Exception as e:  # noqa: BLE001
                print(f"| {kind} | {mode} | too short ({type(e).__name__}) | | |")
                continue
            # the number the fixture shows at each index's time
            # (times from the first frame: a container's clock may start later, e.g. AVI)
            rel = truth - truth[0]
            want = {
                i: video.numbers[int(np.argmin(np.abs(rel - (meta.pts[i] - meta.pts[0]))))]
                for i in indices
            }

            cells = []
            for backend in ("raw", "pyav", "auto"):
                total = totals.setdefault(kind, {}).setdefault(backend, [0, 0, ""])
                total[1] += len(indices)
                if backend == "raw":
                    got = raw_decord(video.path, indices)
                    if isinstance(got, str):
                        cells.append(got)
                        total[2] = got
                        continue
                    done = indices[: len(got)]
                    used = ""
                else:
                    try:
                        out = decode_frames(video.path, meta, indices, backend, threads=1)
                    except VideoError as e:
                        cells.append(e.reason)
                        total[2] = e.reason
                        continue
                    got, done, used = out.frames, out.indices, f" ({out.decoder})"
                right = sum(
                    n == want[i] for n, i in zip(numbers(got, video.rotation), done, strict=True)
                )
                cells.append(f"{right}/{len(indices)}{used if backend == 'auto' else ''}")
                total[0] += right
                total[2] = total[2] or used.strip(" ()")
            print(f"| {kind} | {mode} | " + " | ".join(cells) + " |")
    print(f"\nAll modes ({', '.join(MODES)}) together:\n")
    print("| file | raw decord | mmtok pyav | mmtok auto |")
    print("|---|---|---|---|")
    for kind, by in totals.items():
        cells = []
        for backend in ("raw", "pyav", "auto"):
            right, asked, note = by[backend]
            if backend == "raw" and note:
                cells.append(note)
            else:
                cells.append(f"{right}/{asked}" + (f" ({note})" if backend == "auto" else ""))
        print(f"| {kind} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
