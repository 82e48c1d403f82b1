"""`--gpu-decode`'s tensor path, run on CPU: the same decode + resize rules as the Pillow path,
within 1-2 levels per pixel, and in a real pipeline a decoder failure is a reject while the
other rows keep their embeddings. (nvJPEG itself needs a GPU: not measured here.)"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import encode, photo, write_jsonl
from PIL import Image

from mmtok.engine.pipeline import OutputOptions, run_pipeline
from mmtok.images import decode_image
from mmtok.io.sources import Inputs, ReadOptions
from mmtok.models.clip import resolve_model
from mmtok.models.device_decode import decode_jpegs, device_decodable, tensor_model_input
from mmtok.models.inputs import ModelInputStage
from mmtok.models.preprocess import Preprocess, model_input
from mmtok.models.tiny import write_local_dir
from mmtok.stages.embed import EmbedStage

MODES = [
    dict(resize_mode="shortest"),
    dict(resize_mode="squash"),
    dict(resize_mode="longest", fill_color=255),
    dict(resize_mode="shortest", interpolation="bilinear"),
]


def test_only_plain_baseline_jpegs_go_to_the_device():
    baseline = encode(photo(64, 48), "JPEG")
    assert device_decodable(baseline, 10**6)
    assert device_decodable(encode(photo(64, 48).convert("L"), "JPEG"), 10**6)
    assert not device_decodable(baseline, 64 * 48 - 1)  # over the pixel limit: CPU says `bomb`
    assert not device_decodable(encode(photo(64, 48), "JPEG", progressive=True), 10**6)
    assert not device_decodable(encode(Image.new("CMYK", (8, 8)), "JPEG"), 10**6)
    assert not device_decodable(baseline[: len(baseline) // 2], 10**6)  # a cut download
    assert not device_decodable(encode(photo(64, 48), "PNG"), 10**6)
    assert not device_decodable(b"", 10**6)


@pytest.mark.parametrize("kw", MODES, ids=lambda kw: "-".join(map(str, kw.values())))
def test_tensor_resize_is_within_two_levels_of_the_pillow_path(kw):
    import torch

    for i, (w, h) in enumerate([(640, 480), (300, 500), (1000, 200), (33, 17)]):
        data = encode(photo(w, h, seed=i), "JPEG", quality=90)
        p = Preprocess(size=(64, 64), **kw)
        (image,) = decode_jpegs([torch.frombuffer(bytearray(data), dtype=torch.uint8)], "cpu")
        ours = tensor_model_input(image, p).numpy().astype(int)
        pillow = model_input(decode_image(data, exif_transpose=False), p).astype(int)
        difference = np.abs(ours - pillow)
        assert ours.shape == pillow.shape
        assert difference.max() <= 2 and difference.mean() < 0.05, (w, h, difference.max())


def test_device_decode_in_a_pipeline(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    good = encode(photo(400, 300, seed=1), "JPEG", quality=90)
    sos = good.index(b"\xff\xda")
    files = {
        "baseline_400x300.jpg": good,
        "photo_300x200.png": encode(photo(300, 200, seed=2), "PNG"),
        "no_scan_400x300.jpg": good[:sos] + bytes(range(256)) * 4 + b"\xff\xd9",
        "progressive_200x300.jpg": encode(photo(200, 300, seed=3), "JPEG", progressive=True),
        "baseline_120x90.jpg": encode(photo(120, 90, seed=4), "JPEG"),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    source = write_jsonl(
        tmp_path / "in.jsonl", [{"id": n, "image": str(folder / n)} for n in files]
    )
    resolved = resolve_model(f"local-dir:{write_local_dir(tmp_path / 'tiny', seed=4)}")

    def run(device_decode: bool, out: str) -> dict:
        stages = [
            ModelInputStage(resolved.preprocess, device_decode=device_decode),
            EmbedStage(resolved, device="cpu", device_decode=device_decode),
        ]
        inputs = Inputs([str(source)], ReadOptions(batch_rows=8))
        return run_pipeline(inputs, stages, OutputOptions(str(tmp_path / out)), workers=1)

    run(False, "pillow")
    manifest = run(True, "device")
    pillow = pq.read_table(tmp_path / "pillow" / "part-00000.parquet")
    device = pq.read_table(tmp_path / "device" / "part-00000.parquet")
    assert device.column("id").to_pylist() == [
        "baseline_400x300.jpg",
        "photo_300x200.png",
        "progressive_200x300.jpg",
        "baseline_120x90.jpg",
    ]
    assert device.column("decode_path").to_pylist() == ["device", "pillow", "pillow", "device"]
    assert manifest["counts"]["rejected_by_reason"] == {"decode_error": 1}
    by_id = {r["id"]: r for r in pillow.to_pylist()}
    for row in device.to_pylist():
        ours = np.array(row["image_embedding"], np.float32)
        theirs = np.array(by_id[row["id"]]["image_embedding"], np.float32)
        exact = row["decode_path"] == "pillow"
        np.testing.assert_allclose(ours, theirs, atol=1e-6 if exact else 2e-2)
    assert pa.types.is_string(device.schema.field("decode_path").type)
