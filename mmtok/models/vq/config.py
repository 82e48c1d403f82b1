"""VQ image tokenizer configurations: the architecture numbers as data, built-ins and JSON files.

One `VQConfig` describes a VQGAN encoder + quantizer (+ decoder) of one of two families that
share their blocks but not their state-dict key names:

- `taming`: CompVis taming-transformers' `VQModel` (`taming/models/vqgan.py`,
  `taming/modules/diffusionmodules/model.py` `Encoder`/`Decoder`, `taming/modules/vqvae/
  quantize.py` `VectorQuantizer2`), which Chameleon, Anole and Lumina-mGPT use unchanged (keys
  `encoder.down.{i}.block.{j}`, `encoder.mid.block_1`, ...). Attention follows
  `attn_resolutions`: after each res block of a level whose side (counted from `resolution`) is
  listed. The mid block always has one.
- `llamagen`: FoundationVision/LlamaGen `tokenizer/tokenizer_image/vq_model.py` (also Janus'
  `janus/models/vq_model.py`): keys `encoder.conv_blocks.{i}.res.{j}`, `encoder.mid.{0,1,2}`;
  attention in the last level always (the reference has no setting), and the quantizer
  l2-normalises latents and codebook (`l2_norm`).

Built-ins (the sources of each number are cited in `BUILTIN`); `load_config(path.json)` reads
any other: a JSON object with the field names below (lists for the tuples), `name` and `family`
required, the rest defaulting to Chameleon's values.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmtok.errors import MmtokError

FAMILIES = ("taming", "llamagen")
PREPROCESS_RULES = ("chameleon", "llamagen")


@dataclass(frozen=True)
class VQConfig:
    """A VQ tokenizer's architecture and its preprocessing rule (see the module docstring)."""

    name: str
    family: str = "taming"
    resolution: int = 512  # input side in pixels (square, after the preprocessing crop)
    codebook_size: int = 8192  # taming `n_embed`
    embed_dim: int = 256  # codebook vector size
    z_channels: int = 256
    ch: int = 128  # base channels
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = ()  # taming only (llamagen: last level)
    l2_norm: bool = False  # cosine-nearest code (LlamaGen) instead of plain L2
    in_channels: int = 3
    out_ch: int = 3
    preprocess: str = "chameleon"
    source: str = ""  # where the numbers come from, in words

    def __post_init__(self):
        problem = self._problem()
        if problem is not None:
            raise MmtokError(f"VQ config {self.name!r}: {problem}")

    def _problem(self) -> str | None:
        """The first thing wrong with the fields, or None."""
        widths = [self.ch * m for m in self.ch_mult]
        if self.family not in FAMILIES:
            return f"family must be one of {FAMILIES}"
        if self.preprocess not in PREPROCESS_RULES:
            return f"preprocess must be one of {PREPROCESS_RULES}"
        if not self.ch_mult or any(w % 32 for w in widths) or self.z_channels <= 0:
            return (
                f"every level width (ch x ch_mult = {widths}) must be a multiple of 32 "
                "(GroupNorm with 32 groups)"
            )
        if self.resolution % self.downsample:
            return (
                f"resolution {self.resolution} is not a multiple of the downsampling factor "
                f"{self.downsample}"
            )
        if self.family == "llamagen" and self.attn_resolutions:
            return (
                "the llamagen family has attention in its last level (vq_model.py has no "
                "setting); leave attn_resolutions empty"
            )
        if self.codebook_size < 2 or self.embed_dim < 1 or self.num_res_blocks < 1:
            return "codebook, embed_dim and blocks must be > 0"
        return None

    @property
    def downsample(self) -> int:
        """Pixels per token side: one stride-2 downsample between levels."""
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def grid(self) -> int:
        """Tokens per side for a `resolution` x `resolution` input."""
        return self.resolution // self.downsample

    @property
    def tokens(self) -> int:
        return self.grid * self.grid

    @property
    def id_dtype(self) -> str:
        """The smallest unsigned integer type that holds every id."""
        return "uint16" if self.codebook_size <= 1 << 16 else "uint32"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the fields (lists for tuples) plus the derived numbers; `load_config`
        reads it back (the derived numbers are ignored)."""
        d = dataclasses.asdict(self)
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
        d.update(downsample=self.downsample, grid=self.grid, tokens=self.tokens)
        return d


_CHAMELEON_SRC = (
    "Chameleon vqgan.yaml as converted in leloy/Anole-7b-v0.1-vqvae-hf config.json and the "
    "defaults of transformers ChameleonVQVAEConfig (configuration_chameleon.py)"
)


def _taming_f16(codebook_size: int) -> VQConfig:
    """A taming ImageNet f16 VQGAN: attention at 16x16 (the last level at 256 px); the two
    differ only in their codebook."""
    return VQConfig(
        name=f"taming-f16-{codebook_size}",
        resolution=256,
        codebook_size=codebook_size,
        attn_resolutions=(16,),
        source="CompVis/taming-transformers configs/imagenet_vqgan.yaml and README (f16 models)",
    )


BUILTIN: dict[str, VQConfig] = {
    c.name: c
    for c in (
        # Chameleon / Anole / Lumina-mGPT: taming VQGAN, 8192 codes, no down-path attention.
        VQConfig(name="chameleon", source=_CHAMELEON_SRC),
        _taming_f16(1024),
        _taming_f16(16384),
        # LlamaGen VQ-16 (`ModelArgs`, `VQ_16`), the Janus / Janus-Pro generation tokenizer at
        # Janus' 384 px (`generation_inference.py`: img_size 384, 576 tokens).
        VQConfig(
            name="llamagen-vq16",
            family="llamagen",
            resolution=384,
            codebook_size=16384,
            embed_dim=8,
            l2_norm=True,
            preprocess="llamagen",
            source="FoundationVision/LlamaGen tokenizer/tokenizer_image/vq_model.py VQ_16; "
            "deepseek-ai/Janus janus/models/vq_model.py",
        ),
    )
}
_FIELDS = {f.name for f in dataclasses.fields(VQConfig)}
_DERIVED = {"downsample", "grid", "tokens"}


def config_from_dict(d: dict[str, Any], where: str = "VQ config") -> VQConfig:
    unknown = sorted(set(d) - _FIELDS - _DERIVED)
    if unknown:
        raise MmtokError(
            f"{where}: unknown field(s) {', '.join(unknown)}",
            hint=f"known fields: {', '.join(sorted(_FIELDS))}",
        )
    if "name" not in d:
        raise MmtokError(f"{where}: a 'name' is required")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in _FIELDS}
    try:
        return VQConfig(**kwargs)
    except TypeError as e:
        raise MmtokError(f"{where}: {e}") from None


def load_config(name_or_json_path: str) -> VQConfig:
    """A built-in config by name, or a JSON file with `VQConfig`'s fields."""
    if name_or_json_path in BUILTIN:
        return BUILTIN[name_or_json_path]
    path = Path(name_or_json_path)
    if path.suffix.lower() != ".json" or not path.is_file():
        raise MmtokError(
            f"unknown VQ tokenizer {name_or_json_path!r}",
            hint=f"use one of {', '.join(BUILTIN)}, or a JSON config file",
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise MmtokError(f"cannot read VQ config {path}: {e}") from None
    if not isinstance(data, dict):
        raise MmtokError(f"VQ config {path}: expected a JSON object")
    return config_from_dict(data, f"VQ config {path}")
