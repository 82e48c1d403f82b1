"""A tiny VQ tokenizer with seeded random weights, for tests and the CPU benchmark.

Random weights alone prove little: with taming's uniform(+-1/n) codebook init, or any codebook
far from the latents, almost every position picks the same few codes. `random_state_dict`
therefore draws the codebook from the model's own latents on synthetic images (each entry a
latent vector plus a little noise), so that ids spread over the codebook as with trained
weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mmtok.models.vq.config import VQConfig

if TYPE_CHECKING:
    import torch


def tiny_config(family: str = "taming", **changes) -> VQConfig:
    """32 channels, three levels (f = 4), one res block per level with attention at the last
    level, a 64-entry codebook of 32-dim vectors, 64 px: 16 x 16 = 256 ids per image."""
    base = {
        "name": f"tiny-{family}",
        "family": family,
        "resolution": 64,
        "codebook_size": 64,
        "embed_dim": 32,
        "z_channels": 32,
        "ch": 32,
        "ch_mult": (1, 1, 2),
        "num_res_blocks": 1,
        "attn_resolutions": (16,) if family == "taming" else (),
        "l2_norm": family == "llamagen",
        "preprocess": "chameleon" if family == "taming" else "llamagen",
        "source": "mmtok test config",
    }
    base.update(changes)
    return VQConfig(**base)


def synthetic_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """(n, size, size, 3) uint8 photo-like pictures: gradients, blobs and noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        img = np.zeros((size, size, 3))
        for c in range(3):
            a, b, p = rng.uniform(-1, 1, 3)
            img[..., c] = 0.5 + 0.35 * np.sin(6 * (a * xx + b * yy) + 6 * p)
        for _ in range(4):  # soft blobs of colour
            cy, cx, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.3)
            mask = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
            img += mask[..., None] * rng.uniform(-0.5, 0.5, 3)
        img += rng.normal(0, 0.04, img.shape)
        out[i] = np.clip(img * 255, 0, 255).astype(np.uint8)
    return out


def random_state_dict(
    config: VQConfig, seed: int = 0, *, decoder: bool = True, pool_size: int | None = None
) -> dict[str, torch.Tensor]:
    """Seeded random weights with the codebook drawn from the latents (module docstring).
    `pool_size`: side of the synthetic images the latents come from (default: resolution)."""
    import torch

    from mmtok.models.vq.model import VQModel
    from mmtok.models.vq.preprocess import to_model_input

    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = VQModel(config, decoder=decoder)
    finally:
        torch.random.set_rng_state(generator_state)
    side = pool_size or config.resolution
    per_image = (side // config.downsample) ** 2
    count = min(max(2, -(-config.codebook_size // per_image)), 4)  # at most 4 forward passes
    images = synthetic_images(count, side, seed)
    with torch.inference_mode():
        z = model.latents(to_model_input(torch.from_numpy(images)))
    pool = z.permute(0, 2, 3, 1).reshape(-1, config.embed_dim)
    rng = torch.Generator().manual_seed(seed)
    pick = torch.randperm(pool.shape[0], generator=rng)[: config.codebook_size]
    if pick.numel() < config.codebook_size:  # fewer latents than codes: repeat some
        extra = torch.randint(pool.shape[0], (config.codebook_size - pick.numel(),), generator=rng)
        pick = torch.cat([pick, extra])
    codes = pool[pick]
    codes = codes + 0.1 * codes.std() * torch.randn(codes.shape, generator=rng)
    state = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
    state["quantize.embedding.weight"] = codes.contiguous()
    return state


def tiny_checkpoint(
    path: str | Path, seed: int = 0, config: VQConfig | None = None, *, decoder: bool = True
) -> Path:
    """Save `random_state_dict(config or tiny_config(), seed)` to `path`: safetensors for a
    `.safetensors` name, else a plain `torch.save` state dict."""
    import torch

    path = Path(path)
    state = random_state_dict(config or tiny_config(), seed, decoder=decoder)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path
