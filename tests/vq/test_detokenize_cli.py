"""`mmtok detokenize` through the real CLI: ids from `tokenize-images` back to images.

Oracle: the tiny tokenizer's decoder run directly on the stored ids (`decode_ids`, fp32), mapped
to 8 bits the same documented way (clamp to [-1, 1], (x + 1) * 127.5, rounded), and PSNR
computed here with numpy from the family's own preprocessing of the source file.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import write_jsonl
from PIL import Image
from tiny_models import tiny_tokenizer
from vq_fixtures import dataset, image_folder, mmtok, read_rows, run_json

from mmtok.io.layout import SIDE_DIR


@pytest.fixture(scope="module")
def tokenized(tmp_path_factory):
    folder = tmp_path_factory.mktemp("detok")
    config, checkpoint = tiny_tokenizer(folder, seed=3)
    images = folder / "images"
    images.mkdir()
    order, _ = image_folder(images)
    source = dataset(images, order, folder / "in.jsonl")
    out = folder / "tok"
    run_json("tokenize-images", source, "-o", out, "--config", config,
             "--checkpoint", checkpoint, "-w", "1")  # fmt: skip
    return {"config": config, "checkpoint": checkpoint, "out": out, "folder": folder}


def detokenize(t, source, out, *args):
    return run_json("detokenize", source, "-o", out, "--config", t["config"],
                    "--checkpoint", t["checkpoint"], "-w", "1", *args)  # fmt: skip


def direct_decode(t, ids: np.ndarray, batch: int) -> np.ndarray:
    """In batches of `batch` as the command ran: on the CPU a convolution's float sums depend on
    the batch shape, and a last-bit difference can move a rounded pixel by one level."""
    import torch

    from mmtok.models.vq import build_model, load_checkpoint, load_config

    config = load_config(str(t["config"]))
    model = build_model(config, decoder=True)
    load_checkpoint(model, str(t["checkpoint"]), decoder=True)
    g = config.grid
    out = []
    with torch.inference_mode():
        for start in range(0, len(ids), batch):
            chunk = torch.from_numpy(ids[start : start + batch]).reshape(-1, g, g)
            x = model.eval().decode_ids(chunk).float()
            out.append(((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1))
    return torch.cat(out).numpy()


def source_pixels(t, path: str) -> np.ndarray:
    from mmtok.models.vq import load_config, preprocess

    return preprocess(Image.open(path), load_config(str(t["config"])))


def png(value: dict) -> np.ndarray:
    im = Image.open(io.BytesIO(value["bytes"]))
    assert im.format == "PNG" and im.mode == "RGB"
    return np.asarray(im)


def test_detokenize_round_trips_a_tokenized_folder(tokenized, tmp_path, monkeypatch):
    t = tokenized
    doc = detokenize(t, t["out"], tmp_path / "seen", "--batch-size", "3")
    before, after = read_rows(t["out"]), read_rows(tmp_path / "seen")
    assert (doc["counts"]["in"], doc["counts"]["out"], doc["counts"]["rejected"]) == (7, 7, 0)
    assert after.column("id").equals(before.column("id"))
    assert after.column("vq_ids").equals(before.column("vq_ids"))
    assert after.column("source_image").to_pylist() == before.column("image").to_pylist()
    ids = np.array(before.column("vq_ids").to_pylist(), np.int64)
    expected = direct_decode(t, ids, 3)
    decoded = np.stack([png(v) for v in after.column("image").to_pylist()])
    assert decoded.shape == (7, 64, 64, 3)
    np.testing.assert_array_equal(decoded, expected)
    psnr = np.array(after.column("psnr").to_pylist(), np.float64)
    assert np.isfinite(psnr).all()
    for i, value in enumerate(before.column("image").to_pylist()):
        source = source_pixels(t, value["path"]).astype(np.float64)
        mse = np.mean((expected[i].astype(np.float64) - source) ** 2)
        assert psnr[i] == pytest.approx(10 * np.log10(255**2 / mse), abs=1e-3)
    assert doc["psnr"]["rows"] == 7
    assert doc["psnr"]["mean_db"] == pytest.approx(psnr.mean(), abs=1e-3)
    # the decoded images are image rows every reader opens: mmtok's own commands ...
    mmtok("probe", tmp_path / "seen", "-o", tmp_path / "probed", "-w", "1", "-q")
    probed = read_rows(tmp_path / "probed")
    sizes = zip(probed["width"].to_pylist(), probed["height"].to_pylist(), strict=True)
    assert set(sizes) == {(64, 64)} and probed.num_rows == 7
    assert set(probed["format"].to_pylist()) == {"png"}
    # ... and Hugging Face datasets
    import datasets

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    hf = datasets.load_dataset(str(tmp_path / "seen"), split="train")
    assert hf[0]["image"].size == (64, 64)
    assert np.array_equal(np.asarray(hf[0]["image"]), expected[0])


def test_rows_without_a_source_keep_their_ids_and_bad_ids_are_rejects(tokenized, tmp_path):
    t = tokenized
    good = read_rows(t["out"]).to_pylist()[:2]
    ids = good[0]["vq_ids"]
    rows = [
        {"id": "source", "image": good[0]["image"]["path"], "vq_ids": ids},
        {"id": "gone", "image": str(tmp_path / "deleted.jpg"), "vq_ids": good[1]["vq_ids"]},
        {"id": "no_image", "vq_ids": ids},
        {"id": "short", "image": good[0]["image"]["path"], "vq_ids": ids[:3]},
        {"id": "too_big", "vq_ids": [64, *ids[1:]]},
        {"id": "none", "image": good[0]["image"]["path"]},
        {"id": "grid", "vq_ids": ids, "vq_grid_h": 8, "vq_grid_w": 32},
    ]
    source = write_jsonl(tmp_path / "ids.jsonl", rows)
    doc = detokenize(t, source, tmp_path / "seen")
    kept = read_rows(tmp_path / "seen")
    assert kept.column("id").to_pylist() == ["source", "gone", "no_image"]
    psnr = kept.column("psnr").to_pylist()
    assert psnr[0] is not None and np.isfinite(psnr[0]) and psnr[1:] == [None, None]
    decoded = [png(v) for v in kept.column("image").to_pylist()]
    np.testing.assert_array_equal(decoded[0], decoded[2])  # same ids, same picture
    assert doc["psnr"]["rows"] == 1
    rejects = pq.read_table(tmp_path / "seen" / SIDE_DIR / "rejects.parquet").to_pylist()
    assert {r["id"]: r["reason"] for r in rejects} == dict.fromkeys(
        ["short", "too_big", "none", "grid"], "bad_tokens"
    )
    messages = {r["id"]: r["message"] for r in rejects}
    assert messages["too_big"] == "id=64 outside the codebook (codebook_size=64)"
    assert messages["grid"].startswith("grid=8x32")
    manifest = json.loads((tmp_path / "seen" / SIDE_DIR / "manifest.json").read_text())
    info = next(s for s in manifest["stages"] if s["stage"] == "detokenize")
    assert info["tokenizer"]["name"] == "tiny-taming" and len(info["checkpoint_sha256"]) == 64


def test_a_checkpoint_without_the_decoder_is_one_line_before_any_data(tokenized, tmp_path):
    from vq_fixtures import runner

    from mmtok.cli.app import app
    from mmtok.models.vq.tiny import tiny_checkpoint

    encoder_only = tiny_checkpoint(tmp_path / "encoder-only.pt", 3, decoder=False)
    result = runner.invoke(app, ["detokenize", str(tmp_path / "nowhere"), "-o", str(tmp_path / "o"),
                                 "--config", str(tokenized["config"]),
                                 "--checkpoint", str(encoder_only)])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "decoder." in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_ids_without_grid_columns_are_decoded(tokenized, tmp_path):
    """The grid columns are optional: ids alone say the picture (this raised a KeyError)."""
    t = tokenized
    good = read_rows(t["out"]).to_pylist()[:2]
    rows = [{"id": r["id"], "image": r["image"]["path"], "vq_ids": r["vq_ids"]} for r in good]
    source = write_jsonl(tmp_path / "ids.jsonl", rows)
    doc = detokenize(t, source, tmp_path / "seen")
    assert (doc["counts"]["out"], doc["counts"]["rejected"]) == (2, 0)
    kept = read_rows(tmp_path / "seen")
    expected = direct_decode(t, np.array([r["vq_ids"] for r in good], np.int64), 2)
    np.testing.assert_array_equal(
        np.stack([png(v) for v in kept.column("image").to_pylist()]), expected
    )
