"""GIF: Pillow's header open already counts frames by walking the blocks (sub-block lengths,
no LZW decode) and a GIF has no EXIF to load, so the probe keeps Pillow's path; this pins
that down: many large frames probe in milliseconds, with the facts Pillow gives."""

from __future__ import annotations

import time

from PIL import Image

from mmtok.images import probe_image
from tests.conftest import encode
from tests.images.header_oracle import pillow_only, probed


def test_frames_are_counted_without_decoding(tmp_path):
    frames = [Image.new("P", (1200, 1200), i) for i in range(16)]
    for i, frame in enumerate(frames):
        frame.paste((i + 1) % 256, (i * 50, 0, i * 50 + 40, 1200))  # each frame differs
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    path = tmp_path / "16_frames_1200x1200.gif"
    path.write_bytes(data)
    probe_image(str(path))
    start = time.perf_counter()
    info = probe_image(str(path))
    took = time.perf_counter() - start
    assert (info.width, info.height, info.frames, info.format) == (1200, 1200, 16, "gif")
    assert took < 0.05  # decoding 16 frames of 1.4 megapixels takes far longer
    assert probed(data) == pillow_only(data)
    decode = time.perf_counter()
    with Image.open(path) as im:
        for n in range(im.n_frames):
            im.seek(n)
            im.load()
    assert time.perf_counter() - decode > 4 * took  # what the probe does not pay
