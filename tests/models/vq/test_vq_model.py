"""Configs, the built-in registry, decoding, precision modes and lazy imports."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from mmtok.errors import MmtokError
from mmtok.models.vq import BUILTIN, build_model, load_config, set_precision, to_model_input
from mmtok.models.vq.tiny import random_state_dict, synthetic_images, tiny_config

# tokens per 512 px (or the config's resolution) image, from the sources cited in config.py
EXPECTED = {
    "chameleon": (512, 32, 8192, 256),  # 1024 tokens (quant_state_dims [32, 32], Anole config)
    "taming-f16-1024": (256, 16, 1024, 256),
    "taming-f16-16384": (256, 16, 16384, 256),
    "llamagen-vq16": (384, 24, 16384, 8),  # Janus: 576 tokens per 384 px image
}


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_builtins(name):
    config = load_config(name)
    resolution, grid, codebook, dim = EXPECTED[name]
    assert (config.resolution, config.grid, config.codebook_size, config.embed_dim) == (
        resolution,
        grid,
        codebook,
        dim,
    )
    assert config.tokens == grid * grid and config.downsample == 16
    assert config.id_dtype == "uint16"
    model = build_model(config)
    assert model.quantize.embedding.weight.shape == (codebook, dim)
    assert not any(k.startswith(("decoder.", "post_quant_conv.")) for k in model.state_dict())


def test_chameleon_key_shapes_are_the_design_table():
    shapes = {
        k: tuple(v.shape) for k, v in build_model(load_config("chameleon")).state_dict().items()
    }
    assert shapes["encoder.conv_in.weight"] == (128, 3, 3, 3)
    assert shapes["encoder.down.2.block.0.nin_shortcut.weight"] == (256, 128, 1, 1)
    assert shapes["encoder.down.4.block.0.nin_shortcut.weight"] == (512, 256, 1, 1)
    assert shapes["encoder.mid.attn_1.q.weight"] == (512, 512, 1, 1)
    assert shapes["encoder.conv_out.weight"] == (256, 512, 3, 3)
    assert shapes["quant_conv.weight"] == (256, 256, 1, 1)
    assert not any(".attn." in k for k in shapes if k.startswith("encoder.down."))


def test_taming_f16_has_attention_in_its_last_level_only():
    keys = build_model(load_config("taming-f16-1024")).state_dict()
    levels = {int(k.split(".")[2]) for k in keys if k.startswith("encoder.down.") and ".attn." in k}
    assert levels == {4}


def test_json_config_round_trip(tmp_path):
    config = tiny_config(codebook_size=70000)
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(config.to_dict()))
    again = load_config(str(path))
    assert again == config and again.id_dtype == "uint32"
    assert config.to_dict()["tokens"] == 256


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"name": "x", "chanels": 3}, "unknown field"),
        ({"family": "taming"}, "'name' is required"),
        ({"name": "x", "family": "magvit"}, "family must be one of"),
        ({"name": "x", "ch": 48}, "multiple of 32"),
        ({"name": "x", "resolution": 500}, "not a multiple"),
        ({"name": "x", "family": "llamagen", "attn_resolutions": [16]}, "leave attn_resolutions"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_bad_json_configs(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(MmtokError, match=message):
        load_config(str(path))


def test_unknown_name():
    with pytest.raises(MmtokError, match="unknown VQ tokenizer") as e:
        load_config("chamelon")
    assert "chameleon" in e.value.hint


@pytest.mark.parametrize("family", ["taming", "llamagen"])
def test_decode_round_trip_shapes(family):
    config = tiny_config(family)
    model = build_model(config, decoder=True)
    model.load_state_dict(random_state_dict(config, 1))
    x = to_model_input(torch.from_numpy(synthetic_images(2, 64, seed=4)))
    with torch.inference_mode():
        ids = model.encode_ids(x)
        pixels = model.decode_ids(ids)
        again = model.encode_ids(pixels)
    assert ids.shape == (2, 16, 16) and pixels.shape == x.shape and pixels.dtype == torch.float32
    assert pixels.min() >= -1 and pixels.max() <= 1
    assert again.shape == ids.shape
    with pytest.raises(RuntimeError, match="decoder=True"):
        build_model(config).decode_ids(ids)


def test_bf16_runs_and_keeps_most_ids():
    config = tiny_config()
    model = build_model(config)
    model.load_state_dict(
        {k: v for k, v in random_state_dict(config, 2).items() if k in model.state_dict()}
    )
    x = to_model_input(torch.from_numpy(synthetic_images(2, 64, seed=8)))
    with torch.inference_mode():
        with set_precision("fp32", "cpu"):
            exact = model.encode_ids(x)
        with set_precision("bf16", "cpu"):
            fast = model.encode_ids(x)
    assert (exact == fast).float().mean() > 0.5


def test_set_precision_restores_the_flags():
    backends = torch.backends
    before = (backends.cudnn.allow_tf32, backends.cuda.matmul.allow_tf32)
    with set_precision("fp32"):
        assert (backends.cudnn.allow_tf32, backends.cuda.matmul.allow_tf32) == (False, False)
    with set_precision("tf32"):
        assert (backends.cudnn.allow_tf32, backends.cuda.matmul.allow_tf32) == (True, True)
    with set_precision("bf16", "cpu"):
        assert torch.is_autocast_enabled("cpu")
        assert (backends.cudnn.allow_tf32, backends.cuda.matmul.allow_tf32) == (False, False)
    assert (backends.cudnn.allow_tf32, backends.cuda.matmul.allow_tf32) == before
    with pytest.raises(ValueError), set_precision("fp16"):
        pass


def test_importing_the_api_does_not_import_torch():
    code = (
        "import sys, mmtok.cli, mmtok.models.vq as vq; vq.load_config('chameleon'); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_taming_decoder_keys_follow_taming():
    """taming `Decoder`: `up` indexed by level, num_res_blocks + 1 blocks per level, an
    `upsample` on every level but 0, attention where the side is in attn_resolutions."""
    keys = build_model(load_config("taming-f16-1024"), decoder=True).state_dict()
    assert "decoder.up.0.block.2.conv2.weight" in keys
    assert "decoder.up.0.upsample.conv.weight" not in keys
    assert "decoder.up.4.upsample.conv.weight" in keys
    assert {k.split(".")[2] for k in keys if k.startswith("decoder.up.") and ".attn." in k} == {"4"}
    assert tuple(keys["decoder.up.1.block.0.conv1.weight"].shape) == (
        128,
        256,
        3,
        3,
    )  # from level 2
    assert "decoder.mid.attn_1.proj_out.weight" in keys and "post_quant_conv.weight" in keys
