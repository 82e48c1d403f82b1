"""ModelInputStage: the workers' half; good images become the model's uint8 input, bad ones
rejects with their reason, in one batch."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from mmtok.images import decode_image
from mmtok.io.schema import IMAGE_TYPE
from mmtok.models.inputs import PIXELS, ModelInputStage
from mmtok.models.preprocess import Preprocess, model_input
from mmtok.models.runtime import pixels_array

P = Preprocess(size=(32, 32))


def rows(paths):
    images = [{"path": str(p), "bytes": None} for p in paths]
    return pa.table(
        {"id": [f"r{i}" for i in range(len(paths))], "image": pa.array(images, IMAGE_TYPE)}
    )


def test_good_images_become_pixels_and_bad_ones_rejects(image_files):
    names = [
        "baseline_640x480.jpg",
        "truncated_640x480.jpg",
        "cmyk_64x48.jpg",
        "random_bytes.jpg",
        "gray16_50x40.png",
        "bomb_40000x40000.png",
        "animated_3frames_40x30.gif",
        "empty.jpg",
    ]
    result = ModelInputStage(P).process(rows([image_files[n] for n in names]))
    assert result.kept.column("id").to_pylist() == ["r0", "r2", "r4", "r6"]
    assert result.kept.schema.field(PIXELS).type == pa.binary(32 * 32 * 3)
    got = pixels_array(result.kept.column(PIXELS), 32, 32)
    for k, i in enumerate([0, 2, 4, 6]):
        want = model_input(decode_image(str(image_files[names[i]]), exif_transpose=False), P)
        assert np.array_equal(got[k], want)
    rejected = result.rejected.select(["id", "reason"]).to_pylist()
    reasons = {r["id"]: r["reason"] for r in rejected}
    assert reasons == {"r1": "truncated", "r3": "not_image", "r5": "bomb", "r7": "empty_file"}


def test_exif_rotation_only_when_asked(image_files):
    table = rows([image_files["exif6_640x480.jpg"]])
    plain = ModelInputStage(Preprocess(size=(48, 64)), exif=False).process(table).kept
    turned = ModelInputStage(Preprocess(size=(48, 64)), exif=True).process(table).kept
    im = decode_image(str(image_files["exif6_640x480.jpg"]), exif_transpose=True)
    assert im.size == (480, 640)
    want = model_input(im, Preprocess(size=(48, 64)))
    assert np.array_equal(pixels_array(turned.column(PIXELS), 48, 64)[0], want)
    assert not np.array_equal(pixels_array(plain.column(PIXELS), 48, 64)[0], want)
