"""The uint8 image mmtok's workers make equals open_clip's own eval transform, pixel for pixel.

Oracle: `open_clip.image_transform(..., is_train=False)` (open_clip 3.3.0 `transform.py`) without
its last two steps (`MaybeToTensor`, `Normalize`), which mmtok runs on the device."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import encode, photo
from PIL import Image

from mmtok.errors import MmtokError
from mmtok.images import decode_image
from mmtok.models.preprocess import Preprocess, model_input

SIZES = [(640, 480), (300, 500), (64, 64), (1000, 200), (33, 17), (7, 90), (224, 224)]
MODES = [
    dict(resize_mode="shortest"),
    dict(resize_mode="squash"),
    dict(resize_mode="longest", fill_color=0),
    dict(resize_mode="longest", fill_color=255),
    dict(resize_mode="shortest", interpolation="bilinear"),
]


def open_clip_pixels(im: Image.Image, size, **kw) -> np.ndarray:
    import open_clip
    from torchvision.transforms import Compose

    transform = open_clip.image_transform(size, is_train=False, **kw)
    assert type(transform.transforms[-1]).__name__ == "Normalize"
    return np.asarray(Compose(transform.transforms[:-2])(im))


@pytest.mark.parametrize("kw", MODES, ids=lambda kw: "-".join(map(str, kw.values())))
@pytest.mark.parametrize("size", [64, (64, 96), (96, 64)], ids=str)
def test_model_input_equals_open_clip_eval_transform(tmp_path, kw, size):
    for i, (w, h) in enumerate(SIZES):
        path = tmp_path / f"photo_{w}x{h}.jpg"
        path.write_bytes(encode(photo(w, h, seed=i), "JPEG", quality=90))
        pair = (size, size) if isinstance(size, int) else size
        ours = model_input(
            decode_image(str(path), exif_transpose=False), Preprocess(size=pair, **kw)
        )
        theirs = open_clip_pixels(Image.open(path), size, **kw)
        assert ours.shape == (*pair, 3) and ours.dtype == np.uint8
        assert np.array_equal(ours, theirs), (w, h)


def test_grayscale_is_the_same_converted_before_or_after_the_resize(tmp_path):
    path = tmp_path / "gray_300x200.png"
    path.write_bytes(encode(photo(300, 200).convert("L"), "PNG"))
    ours = model_input(decode_image(str(path)), Preprocess(size=(64, 64)))
    assert np.array_equal(ours, open_clip_pixels(Image.open(path), 64))


def test_bad_settings_are_a_clear_error():
    with pytest.raises(MmtokError, match="resize_mode"):
        Preprocess(resize_mode="crop")
    with pytest.raises(MmtokError, match="interpolation"):
        Preprocess(interpolation="lanczos")


def test_from_open_clip_config_fills_defaults_and_scalars():
    p = Preprocess.from_open_clip({"size": 96, "mean": 0.5, "std": [0.5, 0.5, 0.5]})
    assert p.size == (96, 96) and p.mean == (0.5, 0.5, 0.5) and p.resize_mode == "shortest"
    assert Preprocess.from_open_clip({"interpolation": "random"}).interpolation == "bicubic"
