"""The quantizers against independent nearest-code computations in numpy (float64).

LlamaGen / Janus (`FoundationVision/LlamaGen:tokenizer/tokenizer_image/vq_model.py`
`VectorQuantizer.forward`): l2-normalise latents and codebook, then the nearest code, i.e. the
largest cosine similarity. taming (`taming/modules/vqvae/quantize.py` `VectorQuantizer2`): the
nearest code in plain L2. Positions whose best two codes are closer than float32 can resolve
are left out (there are none or almost none)."""

from __future__ import annotations

import numpy as np
import torch

from mmtok.models.vq import build_model, to_model_input
from mmtok.models.vq.tiny import random_state_dict, synthetic_images, tiny_config


def latents_and_ids(config, state):
    model = build_model(config)
    model.load_state_dict({k: v for k, v in state.items() if k in model.state_dict()})
    x = to_model_input(torch.from_numpy(synthetic_images(3, config.resolution, seed=11)))
    with torch.inference_mode():
        z = model.latents(x)
        ids = model.quantize.ids(z)
    flat = z.permute(0, 2, 3, 1).reshape(-1, config.embed_dim).double().numpy()
    return flat, ids.reshape(-1).numpy()


def nearest(scores: np.ndarray, ids: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """(best code by `scores`, higher is better; positions decided by more than `margin`)."""
    best = np.argmax(scores, axis=1)
    top2 = np.sort(scores, axis=1)[:, -2:]
    return best, (top2[:, 1] - top2[:, 0]) > margin


def test_llamagen_ids_are_the_cosine_nearest_code():
    config = tiny_config("llamagen")
    state = random_state_dict(config, 4)
    # Rescale each code by a random factor: cosine-nearest ids cannot change, plain-L2 ones do
    # (the transformers Janus port's argmin, design note A.3), so the check below has teeth.
    scale = torch.from_numpy(np.random.default_rng(0).uniform(0.2, 5.0, (config.codebook_size, 1)))
    state["quantize.embedding.weight"] = state["quantize.embedding.weight"] * scale.float()
    z, ids = latents_and_ids(config, state)
    codes = state["quantize.embedding.weight"].double().numpy()
    zn = z / np.linalg.norm(z, axis=1, keepdims=True)
    en = codes / np.linalg.norm(codes, axis=1, keepdims=True)
    best, clear = nearest(zn @ en.T, ids, 1e-6)
    assert clear.mean() > 0.99
    np.testing.assert_array_equal(ids[clear], best[clear])
    assert len(np.unique(ids)) >= 40
    plain_l2 = np.argmin(((z[:, None, :] - codes[None]) ** 2).sum(-1), axis=1)
    assert (plain_l2 == ids).mean() < 0.5


def test_taming_ids_are_the_l2_nearest_code():
    config = tiny_config()
    state = random_state_dict(config, 5)
    z, ids = latents_and_ids(config, state)
    codes = state["quantize.embedding.weight"].double().numpy()
    distance = ((z[:, None, :] - codes[None]) ** 2).sum(-1)
    best, clear = nearest(-distance, ids, 1e-4 * np.abs(distance).max())
    assert clear.mean() > 0.99
    np.testing.assert_array_equal(ids[clear], best[clear])
    assert len(np.unique(ids)) >= 40


def test_ids_of_an_image_do_not_depend_on_its_batch():
    config = tiny_config()
    model = build_model(config)
    model.load_state_dict(
        {k: v for k, v in random_state_dict(config, 6).items() if k in model.state_dict()}
    )
    x = to_model_input(torch.from_numpy(synthetic_images(4, 64, seed=12)))
    with torch.inference_mode():
        together = model.encode_ids(x)
        alone = torch.cat([model.encode_ids(x[i : i + 1]) for i in range(4)])
    assert torch.equal(together, alone)
