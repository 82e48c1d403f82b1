"""The CLIP wrapper: which weights, which preprocessing, and the loaded open_clip model.

Weights come only from local files, never a download:
- `local-dir:DIR`: open_clip's folder form, `open_clip_config.json` (`model_cfg`, optional
  `preprocess_cfg`) plus the weights file open_clip would pick;
- an architecture name with `--checkpoint FILE`, and `--pretrained-tag TAG` (or `--preprocess`)
  for its preprocessing, which open_clip does not apply to a bare file;
- an architecture name with `--pretrained-tag TAG` whose weights the local Hugging Face cache
  already holds.

`resolve_model` checks all of this before any data is read and needs no torch;
`load_clip` builds the model (torch and open_clip imported there).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmtok.errors import MmtokError
from mmtok.models.preprocess import Preprocess
from mmtok.models.pretrained import form, tag_config

if TYPE_CHECKING:
    import torch

LOCAL_DIR = "local-dir:"
CONFIG_FILE = "open_clip_config.json"
# open_clip's preference among the weights in a folder (factory.py `_find_checkpoint_in_dir`).
WEIGHT_FILES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.safetensors",
    "pytorch_model.bin",
    "pytorch_model.pth",
    "model.pth",
)
HUB_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


@dataclass(frozen=True)
class ResolvedModel:
    """Everything that decides the embeddings, known before the model is built."""

    model: str  # as given: an open_clip architecture or local-dir:DIR
    arch: str | None  # the open_clip architecture name (None for local-dir)
    tag: str | None
    checkpoint: str
    checkpoint_sha256: str
    preprocess: Preprocess
    preprocess_source: str  # where the preprocessing came from, in words
    quick_gelu: bool
    model_cfg: dict[str, Any]

    def info(self) -> dict[str, Any]:
        """What goes into the manifest and the shards' metadata."""
        return {
            "model": self.model,
            "arch": self.arch,
            "pretrained_tag": self.tag,
            "checkpoint": self.checkpoint,
            "checkpoint_sha256": self.checkpoint_sha256,
            "quick_gelu": self.quick_gelu,
            "preprocess": self.preprocess.to_dict(),
            "preprocess_source": self.preprocess_source,
        }


def sha256_of(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _image_size(model_cfg: dict[str, Any]) -> tuple[int, int]:
    size = model_cfg.get("vision_cfg", {}).get("image_size", 224)
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _weights_in(folder: Path) -> Path | None:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    return None


def _from_local_dir(model: str, tag: str | None, checkpoint: str | None, preprocess: str | None):
    folder = Path(model[len(LOCAL_DIR) :]).expanduser()
    if tag or checkpoint:
        raise MmtokError(
            "--pretrained-tag and --checkpoint do not apply to a local-dir: model",
            hint=f"the folder's {CONFIG_FILE} and weights say everything",
        )
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise MmtokError(
            f"{config_path} not found",
            hint=f"a local-dir: model is a folder with {CONFIG_FILE} and its weights "
            "(the files of the model's Hugging Face repository)",
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        model_cfg = config["model_cfg"]
    except (ValueError, KeyError, TypeError) as e:
        raise MmtokError(f"{config_path}: not an open_clip config ({e})") from None
    weights = _weights_in(folder)
    if weights is None:
        raise MmtokError(
            f"no weights in {folder}",
            hint=f"put one of {', '.join(WEIGHT_FILES[:3])} next to {CONFIG_FILE}",
        )
    size = _image_size(model_cfg)
    if preprocess:
        chosen, source = replace(form(preprocess), size=size), f"--preprocess {preprocess}"
    else:
        cfg = {**config.get("preprocess_cfg", {}), "size": size}
        chosen, source = Preprocess.from_open_clip(cfg), f"{CONFIG_FILE}"
    return None, str(weights), chosen, source, bool(model_cfg.get("quick_gelu")), model_cfg


def _hub_cache_file(arch: str, tag: str) -> str | None:
    """The tag's weights in the local Hugging Face cache, or None; never a network call."""
    import open_clip
    from huggingface_hub import try_to_load_from_cache

    cfg = open_clip.get_pretrained_cfg(arch, tag)
    hub = (cfg or {}).get("hf_hub")
    if not hub:
        return None
    repo, filename = os.path.split(hub)  # "org/repo/" or "org/repo/file" (pretrained.py)
    filenames = (filename,) if filename else HUB_WEIGHT_FILES
    # Read the cache location now (huggingface_hub fixes it at import): HF_HUB_CACHE, HF_HOME.
    cache = os.environ.get("HF_HUB_CACHE") or (
        os.path.join(os.environ["HF_HOME"], "hub") if os.environ.get("HF_HOME") else None
    )
    for name in filenames:
        found = try_to_load_from_cache(repo, name, cache_dir=cache)
        if isinstance(found, str):
            return found
    return None


def _from_arch(arch: str, tag: str | None, checkpoint: str | None, preprocess: str | None):
    import open_clip

    model_cfg = open_clip.get_model_config(arch)
    if model_cfg is None:
        raise MmtokError(
            f"unknown open_clip architecture {arch!r}",
            hint="see open_clip.list_models(), or give --model local-dir:DIR",
        )
    if checkpoint:
        if not os.path.isfile(checkpoint):
            raise MmtokError(f"checkpoint {checkpoint} not found")
    elif tag:
        checkpoint = _hub_cache_file(arch, tag)
        if checkpoint is None:
            raise MmtokError(
                f"the weights of {arch} / {tag} are not in the local Hugging Face cache, "
                "and mmtok never downloads",
                hint="give --checkpoint FILE (with --pretrained-tag for its preprocessing), "
                "or --model local-dir:DIR",
            )
    else:
        raise MmtokError(
            f"{arch}: which weights?",
            hint="give --checkpoint FILE with --pretrained-tag TAG (or --preprocess), "
            "or --model local-dir:DIR",
        )
    size = _image_size(model_cfg)
    known = tag_config(arch, tag) if tag else None
    if tag and known is None and not preprocess:
        raise MmtokError(
            f"mmtok does not know the preprocessing of {arch} / {tag}",
            hint="name it with --preprocess (clip, siglip, inception, mobileclip, ...)",
        )
    if preprocess:
        chosen, source = replace(form(preprocess), size=size), f"--preprocess {preprocess}"
    elif known is not None:
        chosen, source = replace(known.preprocess, size=size), f"pretrained tag {tag}"
    else:
        raise MmtokError(
            f"a bare checkpoint of {arch} does not say how its images were preprocessed",
            hint="give --pretrained-tag TAG (e.g. laion2b_s34b_b79k, openai, webli) "
            "or --preprocess FORM",
        )
    quick_gelu = bool(model_cfg.get("quick_gelu")) or bool(known and known.quick_gelu)
    return arch, checkpoint, chosen, source, quick_gelu, model_cfg


def resolve_model(
    model: str,
    *,
    checkpoint: str | None = None,
    pretrained_tag: str | None = None,
    preprocess: str | None = None,
) -> ResolvedModel:
    """Which weights and preprocessing `model` means; a clear error for anything missing."""
    if model.startswith(LOCAL_DIR):
        parts = _from_local_dir(model, pretrained_tag, checkpoint, preprocess)
    else:
        parts = _from_arch(model, pretrained_tag, checkpoint, preprocess)
    arch, weights, chosen, source, quick_gelu, model_cfg = parts
    return ResolvedModel(
        model=model,
        arch=arch,
        tag=pretrained_tag,
        checkpoint=weights,
        checkpoint_sha256=sha256_of(weights),
        preprocess=chosen,
        preprocess_source=source,
        quick_gelu=quick_gelu,
        model_cfg=model_cfg,
    )


def _mismatch(model: torch.nn.Module, path: str) -> str:
    """The first keys where a checkpoint and the architecture disagree, in words."""
    from open_clip.factory import load_state_dict

    theirs = load_state_dict(path)
    ours = model.state_dict()
    problems = [f"missing {k}" for k in ours if k not in theirs]
    problems += [f"unexpected {k}" for k in theirs if k not in ours]
    problems += [
        f"{k} {tuple(theirs[k].shape)} vs {tuple(v.shape)}"
        for k, v in ours.items()
        if k in theirs and tuple(theirs[k].shape) != tuple(v.shape)
    ]
    return "; ".join(problems[:3]) or "the weights do not load"


@dataclass
class ClipModel:
    """A loaded open_clip model with its preprocessing; encodes uint8 images on the device."""

    resolved: ResolvedModel
    model: Any  # open_clip CLIP / CustomTextCLIP
    device: str
    tokenizer: Any = None
    _mean_std: tuple | None = None

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, H, W, 3) uint8 on the device -> (N, D) l2-normalised float32.

        The same arithmetic as torchvision's `ToTensor` (`/255`) and `Normalize` (`sub(mean)`,
        `div(std)`), on the device."""
        import torch

        if self._mean_std is None:  # once: a small copy to the device would sync each batch
            p = self.resolved.preprocess
            self._mean_std = tuple(
                torch.tensor(v, device=pixels.device).view(-1, 1, 1) for v in (p.mean, p.std)
            )
        mean, std = self._mean_std
        x = pixels.permute(0, 3, 1, 2).float().div(255).sub(mean).div(std)
        return torch.nn.functional.normalize(self.model.encode_image(x).float(), dim=-1)

    def tokenize(self, captions: list[str]) -> torch.Tensor:
        return self.tokenizer(captions)

    def encode_texts(self, tokens: torch.Tensor) -> torch.Tensor:
        import torch

        return torch.nn.functional.normalize(self.model.encode_text(tokens).float(), dim=-1)

    @property
    def embed_dim(self) -> int:
        return int(self.resolved.model_cfg["embed_dim"])


def load_clip(resolved: ResolvedModel, device: str, *, text: bool = False) -> ClipModel:
    """Build the architecture, load the checkpoint (a clear error naming the first mismatched
    keys), move it to `device` in eval mode; with `text`, also its tokenizer (offline)."""
    import open_clip
    import torch

    name = resolved.model if resolved.arch is None else resolved.arch
    logging.disable(logging.WARNING)  # open_clip warns "initialized randomly": we load next
    try:
        model = open_clip.create_model(
            name,
            pretrained=None,
            load_weights=False,
            force_quick_gelu=resolved.quick_gelu,
            precision="fp32",
            device="cpu",
        )
    finally:
        logging.disable(logging.NOTSET)
    try:
        open_clip.load_checkpoint(model, resolved.checkpoint, strict=True)
    except (RuntimeError, KeyError, ValueError) as e:
        detail = _mismatch(model, resolved.checkpoint) if isinstance(e, RuntimeError) else str(e)
        raise MmtokError(
            f"{resolved.checkpoint} does not fit {name}: {detail}",
            hint="check --model (the architecture) against the checkpoint",
        ) from None
    model = model.to(device).eval()
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 (design note 0.8)
        torch.backends.cudnn.allow_tf32 = False
    tokenizer = None
    if text:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a tokenizer must not download either
        try:
            tokenizer = open_clip.get_tokenizer(name)
        except (OSError, ValueError, RuntimeError) as e:
            raise MmtokError(
                f"the tokenizer of {name} is not available offline: {e}",
                hint="use a local-dir: model whose folder holds the tokenizer files",
            ) from None
    return ClipModel(resolved, model, device, tokenizer)
