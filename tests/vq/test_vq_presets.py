"""The VQ presets of `estimate-budget` and `layout` count what `tokenize-images` writes.

A preset's `image_tokens` must be the tokenizer's grid (1024 for Chameleon at 512 px, 576 for
Janus' LlamaGen VQ-16 at 384 px) and its `prompt_tokens` the grid plus the begin/end markers;
`estimate-budget`'s `vq_ids` storage form (2 bytes per id) must be the size of the stream that
`tokenize-images --emit bin` writes, and with `--boi/--eoi` the stream holds `prompt_tokens`.
The end-to-end runs use each built-in tokenizer's geometry (resolution, downsampling) with slim
channels and a small codebook: the token count depends on nothing else.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
from conftest import encode, photo
from vq_fixtures import dataset, read_rows, run_json

from mmtok.io.layout import SIDE_DIR
from mmtok.models.vq import load_config
from mmtok.models.vq.tiny import tiny_checkpoint
from mmtok.presets import get_preset
from mmtok.vq_stream import write_stream

PAIRS = {"chameleon": "chameleon", "janus": "llamagen-vq16"}  # preset -> built-in tokenizer
SIZES = [(640, 480), (300, 500), (33, 17), (1000, 200), (512, 512)]


@pytest.mark.parametrize("preset", PAIRS)
def test_each_vq_preset_counts_its_tokenizers_grid(preset):
    config = load_config(PAIRS[preset])
    for width, height in SIZES:
        layout = get_preset(preset).layout(width, height)
        assert layout.image_tokens == config.tokens == config.grid**2
        assert layout.prompt_tokens == config.tokens + 2  # [boi] ids [eoi]


@pytest.mark.parametrize("preset", PAIRS)
def test_tokenize_images_writes_what_estimate_budget_counts(preset, tmp_path):
    geometry = dataclasses.replace(
        load_config(PAIRS[preset]),
        name=f"{preset}-geometry",
        ch=32,
        ch_mult=(1,) * len(load_config(PAIRS[preset]).ch_mult),
        num_res_blocks=1,
        z_channels=32,
        embed_dim=8,
        codebook_size=64,
    )
    config = tmp_path / "geometry.json"
    config.write_text(json.dumps(geometry.to_dict()))
    checkpoint = tiny_checkpoint(tmp_path / "geometry.pt", 0, geometry)
    names = ["a_640x480.jpg", "b_300x500.png"]
    for (w, h), name in zip(SIZES, names, strict=False):
        (tmp_path / name).write_bytes(encode(photo(w, h, seed=w), name[-3:].replace("jpg", "jpeg")))
    source = dataset(tmp_path, names, tmp_path / "in.jsonl")
    common = ["--config", config, "--checkpoint", checkpoint, "-w", "1", "--emit", "bin"]
    plain = run_json("tokenize-images", source, "-o", tmp_path / "plain", *common)
    marked = tmp_path / "marked"  # the same shards, streamed with markers
    marked.mkdir()
    for part in (tmp_path / "plain").glob("part-*.parquet"):
        shutil.copy(part, marked / part.name)
    with_markers = write_stream(marked, codebook_size=64, boi=64, eoi=65)
    budget = run_json("estimate-budget", source, "-p", preset, "-w", "1")
    figures = budget["presets"][preset]
    rows = read_rows(tmp_path / "plain")
    assert [len(ids) for ids in rows.column("vq_ids").to_pylist()] == [geometry.tokens] * 2
    assert (
        figures["total_image_tokens"]
        == plain["tokens"]
        == 2 * get_preset(preset).layout(640, 480).image_tokens
    )
    stream = SIDE_DIR + "/vq_stream/tokens.bin"
    assert figures["storage_bytes"]["vq_ids"] == (tmp_path / "plain" / stream).stat().st_size
    assert figures["total_prompt_tokens"] == with_markers["tokens"]
    assert 2 * figures["total_prompt_tokens"] == (marked / stream).stat().st_size
