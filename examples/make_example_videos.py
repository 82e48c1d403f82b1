"""Write the small example videos of examples/video_demo.sh with PyAV's encoders (no download).

Each frame shows its number as a bar chart and a moving pattern, so a sampled frame says where it
came from. Files: a 10 s 640x360 H.264 clip at 30 fps, a phone clip recorded sideways (display
matrix: rotate 90 degrees), a variable-frame-rate MKV (30 fps, then 10 fps), an open-GOP HEVC
clip (decord returns neighbouring frames for it, so mmtok routes it to PyAV), and a broken file.

  python examples/make_example_videos.py OUT_DIR
"""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import numpy as np


def frame(n: int, width: int, height: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([(x + 4 * n) % 256, (y + 2 * n) % 256, (x + y + 6 * n) % 256], axis=2)
    bar = (n * width) // 300 + 1  # a progress bar along the top: the frame's place in time
    rgb[: height // 10, :bar] = (255, 255, 255)
    return rgb.astype(np.uint8)


def write(path: Path, times: list[Fraction], size: tuple[int, int], codec: str = "libx264",
          options: dict[str, str] | None = None, rotate: int = 0) -> None:  # fmt: skip
    import av

    width, height = size
    container = "matroska" if path.suffix == ".mkv" else "mp4"
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=30, options=options or {})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = Fraction(1, 90000)
        if rotate:
            stream.set_display_rotation(-rotate)  # PyAV takes counter-clockwise degrees
        for n, t in enumerate(times):
            video_frame = av.VideoFrame.from_ndarray(frame(n, width, height), format="rgb24")
            video_frame.pts, video_frame.time_base = int(t * 90000), Fraction(1, 90000)
            for packet in stream.encode(video_frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    cfr = [Fraction(i, 30) for i in range(300)]
    write(out / "street_10s.mp4", cfr, (640, 360))
    write(out / "phone_portrait.mp4", cfr[:150], (640, 360), rotate=90)
    vfr = [Fraction(i, 30) for i in range(90)] + [Fraction(3) + Fraction(i, 10) for i in range(40)]
    write(out / "screen_vfr.mkv", vfr, (480, 270))
    write(out / "drone_hevc.mp4", cfr[:120], (480, 270), codec="libx265",
          options={"x265-params": "keyint=60:log-level=error"})  # fmt: skip
    data = (out / "street_10s.mp4").read_bytes()
    (out / "download_cut.mp4").write_bytes(data[: len(data) // 3])  # an interrupted download
    (out / "not_a_video.mp4").write_bytes(b"<html>404 Not Found</html>\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
