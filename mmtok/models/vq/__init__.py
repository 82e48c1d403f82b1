"""VQ image tokenizers (Chameleon / taming VQGAN, LlamaGen VQ-16): config, model, checkpoint
loading, exact preprocessing and precision modes.

Importing this package does not import torch: the model, checkpoint and precision functions
import it when called.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmtok.models.vq.config import BUILTIN, VQConfig, load_config
from mmtok.models.vq.precision import PRECISIONS, set_precision
from mmtok.models.vq.preprocess import preprocess, to_model_input

if TYPE_CHECKING:
    from mmtok.models.vq.model import VQModel

__all__ = [
    "BUILTIN",
    "PRECISIONS",
    "VQConfig",
    "build_model",
    "load_checkpoint",
    "load_config",
    "preprocess",
    "set_precision",
    "to_model_input",
]


def build_model(config: VQConfig, *, decoder: bool = False) -> VQModel:
    """The tokenizer with randomly initialised weights, in eval mode, on the CPU."""
    from mmtok.models.vq.model import VQModel

    return VQModel(config, decoder=decoder)


def load_checkpoint(model: VQModel, path: str | Path, *, decoder: bool = False) -> str:
    """Load a checkpoint file into `model`; returns its sha256 (see `checkpoint.py`)."""
    from mmtok.models.vq.checkpoint import load_checkpoint as load

    return load(model, path, decoder=decoder)


def describe(config: VQConfig) -> dict[str, Any]:
    """The config as metadata (same as `config.to_dict()`)."""
    return config.to_dict()
