"""A tiny random open_clip model on disk, for tests and the CPU benchmark (no download).

A 2-layer ViT at 64 px with a 2-layer text tower: it builds in milliseconds and goes through
the same loading paths as a real model (`local-dir:` folder, or a bare checkpoint of a
registered architecture)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def tiny_model_cfg(image_size: int = 64, embed_dim: int = 32) -> dict[str, Any]:
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {"image_size": image_size, "layers": 2, "width": 64, "patch_size": 16},
        "text_cfg": {
            "context_length": 77,
            "vocab_size": 49408,
            "width": 64,
            "heads": 2,
            "layers": 2,
        },
    }


def register_arch(name: str, folder: Path, model_cfg: dict[str, Any] | None = None) -> str:
    """Register `model_cfg` with open_clip as architecture `name` (a JSON file in `folder`)."""
    import open_clip

    path = Path(folder) / f"{name}.json"
    path.write_text(json.dumps(model_cfg or tiny_model_cfg()))
    open_clip.add_model_config(path)
    return name


def random_weights(model_cfg: dict[str, Any], path: Path, *, seed: int = 0, quick_gelu=False):
    """Save a randomly initialised model's weights to `path` (.safetensors or .bin/.pt)."""
    import open_clip
    import torch

    folder = path.parent
    digest = hashlib.sha256(json.dumps(model_cfg, sort_keys=True).encode()).hexdigest()[:8]
    name = register_arch(f"mmtok-tiny-{digest}", folder, model_cfg)
    torch.manual_seed(seed)
    model = open_clip.create_model(name, pretrained=None, force_quick_gelu=quick_gelu)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    (folder / f"{name}.json").unlink()
    return path


def write_local_dir(
    folder: Path,
    *,
    preprocess_cfg: dict[str, Any] | None = None,
    model_cfg: dict[str, Any] | None = None,
    seed: int = 0,
    weights_name: str = "open_clip_model.safetensors",
) -> Path:
    """An open_clip `local-dir:` folder: open_clip_config.json plus random weights."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model_cfg = model_cfg or tiny_model_cfg()
    config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg or {}}
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    random_weights(model_cfg, folder / weights_name, seed=seed)
    return folder
