"""Loading a user's VQ checkpoint as it was published, without running code from it.

Accepted forms (all read with `torch.load(weights_only=True)` or safetensors):
- a bare state dict (`.pt`, `.pth`, `.bin`, `.ckpt`) or a `.safetensors` file;
- wrapped: a Lightning `.ckpt` (`{"state_dict": ...}`, taming's and Chameleon's `vqgan.ckpt`),
  LlamaGen's `{"ema": ...}` / `{"model": ...}` (`vq_demo.py` takes `ema`, then `model`, then
  `state_dict`);
- keys under a prefix: `model.vqmodel.` (Hugging Face Chameleon / Anole / Lumina-mGPT),
  `vqmodel.`, `first_stage_model.` (taming transformer checkpoints, `extract_submodel.py`),
  `gen_vision_model.` (Janus), `module.` (DDP); stripped.
Only the keys the model needs are read: `loss.*` (LPIPS, discriminator), LlamaGen's
`quantize.codebook_used` and, unless decoding, `decoder.*` / `post_quant_conv.*` are ignored.
A missing or mis-shaped key is an `MmtokError` naming it.
"""

from __future__ import annotations

import hashlib
import pickle
import re
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmtok.errors import MmtokError

if TYPE_CHECKING:
    import torch

    from mmtok.models.vq.model import VQModel

WRAPPERS = ("ema", "model", "state_dict")  # LlamaGen's order (vq_demo.py), then Lightning's
PREFIXES = ("model.vqmodel.", "vqmodel.", "first_stage_model.", "gen_vision_model.", "module.")
TOP_LEVEL = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.", "quantize.")


def sha256_of(path: str | Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """The file's tensors by key, unwrapped (`WRAPPERS`), without running pickled code."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise MmtokError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:  # only the tokenizer's tensors: a full model's shard holds gigabytes of others
            with safe_open(str(path), framework="pt") as f:
                keys = [k for k in f.keys() if _model_key(k)]  # noqa: SIM118 - not a dict
                return {k: f.get_tensor(k) for k in keys}
        except (SafetensorError, OSError) as e:
            raise MmtokError(f"cannot read checkpoint {path}: {e}") from None
    try:
        data: Any = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found is None:  # not a pickle of tensors at all
            detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(e))
            reason = detail.group(1).strip() if detail else "not a PyTorch checkpoint"
            raise MmtokError(f"cannot read checkpoint {path}: {reason[:200]}") from None
        what = found.group(1)
        raise MmtokError(
            f"checkpoint {path} holds Python objects besides tensors ({what}); mmtok reads "
            "checkpoints with torch.load(weights_only=True), which never runs code from a file",
            hint="save just the weights once, from a file you trust: torch.save(torch.load(f, "
            "weights_only=False)['state_dict'], 'vq.pt')",
        ) from None
    except (RuntimeError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise MmtokError(f"cannot read checkpoint {path}: {str(e)[:300]}") from None
    while isinstance(data, dict) and not any(torch.is_tensor(v) for v in data.values()):
        inner = next((data[k] for k in WRAPPERS if isinstance(data.get(k), dict)), None)
        if inner is None:
            break
        data = inner
    if not isinstance(data, dict):
        raise MmtokError(f"checkpoint {path}: expected a dict of tensors, found {type(data)}")
    return {k: v for k, v in data.items() if isinstance(k, str) and torch.is_tensor(v)}


def _model_key(key: str) -> bool:
    """A key the tokenizer may need, bare or under a known prefix."""
    return key.startswith(TOP_LEVEL) or any(
        key.startswith(p) and key[len(p) :].startswith(TOP_LEVEL) for p in PREFIXES
    )


def strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys under a known prefix lose it; other keys stay as they are."""
    out = {}
    for key, value in state.items():
        for prefix in PREFIXES:
            rest = key[len(prefix) :]
            if key.startswith(prefix) and rest.startswith(TOP_LEVEL):
                key = rest
                break
        out.setdefault(key, value)
    return out


def _listing(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _part(missing: list[str]) -> str:
    decoding = all(k.startswith(("decoder.", "post_quant_conv.")) for k in missing)
    return "decoder " if decoding else ""


def _what_it_has(state: dict[str, torch.Tensor], family: str) -> str:
    """A hint from the file's own keys: the family its key names belong to, or examples."""
    model_keys = sorted(k for k in state if k.startswith(TOP_LEVEL))
    if not model_keys:
        return f"none of its {len(state)} tensors is under encoder., quantize. or quant_conv."
    shapes = {"llamagen": "encoder.conv_blocks.", "taming": "encoder.down."}
    for other, marker in shapes.items():
        if other != family and any(k.startswith(marker) for k in model_keys):
            return (
                f"its keys ({marker}*) are those of the {other} family: choose a {other} "
                "tokenizer config"
            )
    encoder = [k for k in model_keys if k.startswith("encoder.")] or model_keys
    return (
        f"it has {len(model_keys)} model key(s) such as {_listing(encoder, 3)}; check that "
        "the tokenizer config matches the checkpoint"
    )


def load_checkpoint(model: VQModel, path: str | Path, *, decoder: bool = False) -> str:
    """Load `path` into `model` (built by `build_model`); returns the file's sha256.

    Every key the model needs must be in the file with its shape (`decoder=True` also needs
    the decoder's), else an `MmtokError` names the missing or mis-shaped keys."""
    import torch

    config = model.config
    state = strip_prefixes(read_tensors(path))
    wanted = model.state_dict()
    if not decoder:
        wanted = {
            k: v for k, v in wanted.items() if not k.startswith(("decoder.", "post_quant_conv."))
        }
    missing = [k for k in wanted if k not in state]
    if missing:
        raise MmtokError(
            f"checkpoint {path} lacks {len(missing)} {_part(missing)}key(s) of the "
            f"{config.family} VQ tokenizer {config.name!r}: {_listing(missing)}",
            hint=_what_it_has(state, config.family),
        )
    wrong = [
        f"{k} {tuple(state[k].shape)} in the file, {tuple(v.shape)} in the config"
        for k, v in wanted.items()
        if tuple(state[k].shape) != tuple(v.shape)
    ]
    if wrong:
        raise MmtokError(
            f"checkpoint {path} does not fit the VQ tokenizer {config.name!r}: "
            f"{_listing(wrong, 3)}",
            hint="the config's channels, levels, codebook size or embed_dim differ from the file's",
        )
    with torch.no_grad():
        # every wanted key is there with its shape (checked above); the rest stays as built
        model.load_state_dict({k: state[k] for k in wanted}, strict=False)
    return sha256_of(path)
