"""Shared by the VQ command tests: real image files of several modes and sizes with bad files
among them (the tiny tokenizer and the bad files: tests/tiny_models.py), and the oracle: the
model run directly on each file's preprocessed pixels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import tiny_models
from conftest import encode, photo, write_jsonl
from PIL import Image
from typer.testing import CliRunner

from mmtok.cli.app import app

runner = CliRunner()


def rgba_photo(width: int, height: int, seed: int) -> Image.Image:
    im = photo(width, height, seed).convert("RGBA")
    alpha = np.tile(np.linspace(0, 255, width, dtype=np.uint8), (height, 1))
    im.putalpha(Image.fromarray(alpha, "L"))
    return im


def sixteen_bit(width: int, height: int) -> Image.Image:
    values = (np.mgrid[0:height, 0:width].sum(0) * 997 % 65536).astype(np.uint16)
    im = Image.fromarray(values)
    assert im.mode == "I;16"
    return im


def image_folder(folder: Path) -> tuple[list[str], list[str]]:
    """Write the files (images of several modes and sizes, and the bad ones); returns (row
    order with bad entries in the middle, good names)."""
    good = {
        "photo_640x480.jpg": encode(photo(640, 480, seed=1), "JPEG", quality=90),
        "rgba_300x500.png": encode(rgba_photo(300, 500, seed=2), "PNG"),
        "palette_90x70.png": encode(photo(90, 70, seed=3).convert("P"), "PNG"),
        "gray_120x90.png": encode(photo(120, 90, seed=4).convert("L"), "PNG"),
        "gray16_70x50.png": encode(sixteen_bit(70, 50), "PNG"),
        "strip_1000x200.webp": encode(photo(1000, 200, seed=5), "WEBP"),
        "photo_33x17.jpg": encode(photo(33, 17, seed=6), "JPEG"),
    }
    return tiny_models.image_folder(folder, good)


def dataset(folder: Path, order: list[str], path: Path) -> Path:
    rows = [{"id": f"r{i}", "image": str(folder / n), "caption": n} for i, n in enumerate(order)]
    return write_jsonl(path, rows)


def mmtok(*args: str, code: int = 0):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result


def run_json(*args: str) -> dict:
    return json.loads(mmtok(*args, "--json").stdout)


def read_rows(out: Path) -> pa.Table:
    return pa.concat_tables(pq.read_table(p) for p in sorted(out.glob("part-*.parquet")))


def direct_ids(config_path: Path, checkpoint: Path, paths: list[Path]) -> np.ndarray:
    """The oracle: the tokenizer run directly, one image at a time, on each file's preprocessed
    pixels (Pillow opens the file; the family's preprocessing; the model in fp32)."""
    import torch

    from mmtok.models.vq import (
        build_model,
        load_checkpoint,
        load_config,
        preprocess,
        to_model_input,
    )

    config = load_config(str(config_path))
    model = build_model(config)
    load_checkpoint(model, str(checkpoint))
    model.eval()
    out = []
    with torch.inference_mode():
        for path in paths:
            pixels = torch.from_numpy(np.array(preprocess(Image.open(path), config)))[None]
            out.append(model.encode_ids(to_model_input(pixels)).reshape(-1).numpy())
    return np.stack(out)
