"""Token ids against transformers' ChameleonVQVAE (the Chameleon / taming architecture) and the
encoder and decoder against transformers' JanusVQVAE (LlamaGen's VQ-16, whose ids it gets wrong:
its quantizer skips the l2 normalisation, so the ids are checked in test_vq_quantizer.py).

Same random weights in both (the codebook drawn from the latents, so that many codes are used),
real image files through the Chameleon preprocessing, fp32 on CPU: 100% identical ids.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from mmtok.models.vq import build_model, load_config, preprocess, to_model_input
from mmtok.models.vq.tiny import random_state_dict, tiny_config
from tests.models.vq.vq_images import write_images

transformers = pytest.importorskip("transformers")

IMAGES = [
    "rgb_97x131.jpg",
    "rgba_131x77.png",
    "p_trns_90x120.png",
    "l_150x64.jpg",
    "rgb_513x37.png",
]


def chameleon_oracle(config, state):
    hf_config = transformers.ChameleonVQVAEConfig(
        embed_dim=config.embed_dim,
        num_embeddings=config.codebook_size,
        latent_channels=config.z_channels,
        resolution=config.resolution,
        base_channels=config.ch,
        channel_multiplier=list(config.ch_mult),
        num_res_blocks=config.num_res_blocks,
        attn_resolutions=list(config.attn_resolutions),
    )
    oracle = transformers.ChameleonVQVAE(hf_config).eval()
    # the converter copies every non-decoder key as is (convert_chameleon_weights_to_hf.py)
    result = oracle.load_state_dict(
        {k: v for k, v in state.items() if not k.startswith("decoder.")}, strict=False
    )
    assert not result.unexpected_keys
    assert set(result.missing_keys) <= {"post_quant_conv.weight", "post_quant_conv.bias"}
    return oracle


def ids_both_ways(config, state, pixels):
    model = build_model(config)
    model.load_state_dict({k: v for k, v in state.items() if k in model.state_dict()})
    oracle = chameleon_oracle(config, state)
    x = to_model_input(torch.from_numpy(pixels))
    with torch.inference_mode():
        ours = model.encode_ids(x)
        out = oracle.encode(x)
        same_latents = torch.equal(model.encoder(x), out.last_hidden_state)
    theirs = out.image_tokens.view(ours.shape)  # flattened b*h*w, row-major
    return ours, theirs, same_latents


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("vq-parity"))


@pytest.mark.parametrize("seed", [0, 1])
def test_tiny_chameleon_ids_equal_transformers(files, seed):
    config = tiny_config()
    pixels = np.stack([preprocess(Image.open(files[n]), config) for n in IMAGES])
    ours, theirs, same_latents = ids_both_ways(config, random_state_dict(config, seed), pixels)
    assert same_latents
    assert ours.dtype == torch.int64 and ours.shape == (len(IMAGES), config.grid, config.grid)
    assert torch.equal(ours, theirs)
    assert len(torch.unique(ours)) >= 40  # of 64: the codebook is really used


@pytest.mark.slow
def test_full_chameleon_ids_equal_transformers_at_512(files):
    """The built-in `chameleon` config at 512 px (29 M parameters, 8192 codes): two images."""
    config = load_config("chameleon")
    state = random_state_dict(config, 3, decoder=False, pool_size=128)
    pixels = np.stack([preprocess(Image.open(files[n]), config) for n in IMAGES[:2]])
    ours, theirs, same_latents = ids_both_ways(config, state, pixels)
    assert same_latents
    assert ours.shape == (2, 32, 32)
    assert torch.equal(ours, theirs)
    assert len(torch.unique(ours)) >= 300


def to_janus_key(key: str) -> str:
    """LlamaGen key -> transformers Janus key, the renames of convert_janus_weights_to_hf.py."""
    key = re.sub(r"^encoder\.conv_blocks\.", "encoder.down.", key)
    key = re.sub(r"^decoder\.conv_blocks\.", "decoder.up.", key)
    key = key.replace(".res.", ".block.")
    for i, name in enumerate(("block_1", "attn_1", "block_2")):
        key = key.replace(f".mid.{i}.", f".mid.{name}.")
    return key


def janus_oracle(config, state):
    hf_config = transformers.JanusVQVAEConfig(
        embed_dim=config.embed_dim,
        num_embeddings=config.codebook_size,
        latent_channels=config.z_channels,
        base_channels=config.ch,
        channel_multiplier=list(config.ch_mult),
        num_res_blocks=config.num_res_blocks,
        num_patches=config.grid,
    )
    oracle = transformers.JanusVQVAE(hf_config).eval()
    if state:
        oracle.load_state_dict({to_janus_key(k): v for k, v in state.items()}, strict=True)
    return oracle


def test_llamagen_keys_latents_and_decoder_equal_transformers_janus(files):
    config = tiny_config("llamagen")
    state = random_state_dict(config, 2)
    model = build_model(config, decoder=True)
    model.load_state_dict(state, strict=True)
    oracle = janus_oracle(config, state)  # strict: every key and shape matches
    pixels = np.stack([preprocess(Image.open(files[n]), config) for n in IMAGES[:3]])
    x = to_model_input(torch.from_numpy(pixels))
    with torch.inference_mode():
        latents = model.latents(x)
        assert torch.equal(latents, oracle.quant_conv(oracle.encoder(x)))
        ids = model.encode_ids(x)
        decoded = model.decode_ids(ids)
        expected = oracle.decode(ids.view(len(ids), -1)).clamp(-1, 1)
    assert torch.equal(decoded, expected)


def test_builtin_chameleon_has_transformers_keys_and_shapes():
    ours = build_model(load_config("chameleon"), decoder=False).state_dict()
    theirs = transformers.ChameleonVQVAE(transformers.ChameleonVQVAEConfig()).state_dict()
    theirs = {k: v for k, v in theirs.items() if not k.startswith("post_quant_conv.")}
    assert {k: tuple(v.shape) for k, v in ours.items()} == {
        k: tuple(v.shape) for k, v in theirs.items()
    }
    assert len(ours) == 127  # the design note's 129 keys less post_quant_conv's two


def test_builtin_llamagen_has_janus_keys_and_shapes():
    config = load_config("llamagen-vq16")
    ours = build_model(config, decoder=True).state_dict()
    hf_config = transformers.JanusVQVAEConfig()
    theirs = transformers.JanusVQVAE(hf_config).state_dict()
    mapped = {to_janus_key(k): tuple(v.shape) for k, v in ours.items()}
    assert mapped == {k: tuple(v.shape) for k, v in theirs.items()}


def test_taming_decoder_equals_the_janus_decoder_with_levels_reversed():
    """transformers has no taming decoder; its Janus decoder has the same blocks, listed in run
    order (deepest level first), where taming indexes `decoder.up` by level
    (`taming/modules/diffusionmodules/model.py` `Decoder`: `self.up.insert(0, up)`). With the
    attention at the deepest level (the tiny config's attn_resolutions) the two coincide once the
    level index is reversed."""
    config = tiny_config()
    state = random_state_dict(config, 5)
    model = build_model(config, decoder=True)
    model.load_state_dict(state, strict=True)
    levels = len(config.ch_mult)

    def to_janus(key: str) -> str:
        found = re.match(r"decoder\.up\.(\d+)\.(.*)", key)
        return f"decoder.up.{levels - 1 - int(found[1])}.{found[2]}" if found else key

    janus = janus_oracle(tiny_config("llamagen", l2_norm=False), {})
    janus.load_state_dict({to_janus(k): v for k, v in state.items()}, strict=True)
    z = torch.randn(
        2, config.embed_dim, config.grid, config.grid, generator=torch.Generator().manual_seed(0)
    )
    with torch.inference_mode():
        ours = model.decoder(model.post_quant_conv(z))
        theirs = janus.decoder(janus.post_quant_conv(z))
    assert torch.equal(ours, theirs)
