"""The VQGAN encoder, quantizer and decoder, written from the architecture description.

Architecture after taming-transformers (MIT; `taming/modules/diffusionmodules/model.py`
`ResnetBlock`, `AttnBlock`, `Downsample`, `Upsample`, `Encoder`, `Decoder` with `temb_ch = 0`;
`taming/modules/vqvae/quantize.py` `VectorQuantizer2`) and transformers' `ChameleonVQVAE`
(Apache-2.0, `models/chameleon/modeling_chameleon.py`), and LlamaGen's `vq_model.py` (MIT) for
its key names and l2-normalised quantizer. The operations run in the references' order (the
residual branch, the attention's bmm/softmax, the distance d = |z|^2 + |e|^2 - 2 z.e with
`einsum`), so that fp32 on CPU gives the references' ids bit for bit.

Module attribute names are the checkpoints' key names, per family (see `config.py`):

    taming    encoder.down.{i}.block.{j} / .attn.{j} / .downsample
              encoder.mid.block_1 / attn_1 / block_2
              decoder.up.{i}.block.{j} / .upsample (level i; run deepest first), decoder.mid.*
    llamagen  encoder.conv_blocks.{i}.res.{j} / .attn.{j} / .downsample, encoder.mid.{0,1,2}
              decoder.conv_blocks.{k}.res.{j} / .upsample (k in run order), decoder.mid.{0,1,2}

plus `quant_conv`, `quantize.embedding.weight` and, for decoding, `post_quant_conv`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmtok.models.vq.config import VQConfig


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


def _swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


class ResnetBlock(nn.Module):
    """GroupNorm, swish, conv3x3, GroupNorm, swish, (dropout: 0, inference), conv3x3, plus the
    input (through a 1x1 `nin_shortcut` when the width changes)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(_swish(self.norm1(x)))
        h = self.conv2(_swish(self.norm2(h)))
        if hasattr(self, "nin_shortcut"):
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the h*w positions; q, k, v, proj_out are 1x1 convs."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        q, k, v = self.q(h), self.k(h), self.v(h)
        b, c, height, width = q.shape
        q = q.reshape(b, c, height * width).permute(0, 2, 1)  # b, hw, c
        k = k.reshape(b, c, height * width)  # b, c, hw
        w = torch.bmm(q, k) * (int(c) ** (-0.5))
        w = F.softmax(w, dim=2).permute(0, 2, 1)
        h = torch.bmm(v.reshape(b, c, height * width), w).reshape(b, c, height, width)
        return x + self.proj_out(h)


class Downsample(nn.Module):
    """Zero-pad right and bottom by one, then a 3x3 stride-2 conv without padding."""

    key = "downsample"  # the checkpoints' name for it in an encoder level

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0))


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 conv."""

    key = "upsample"  # the checkpoints' name for it in a decoder level

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _names(config: VQConfig, part: str) -> tuple[str, str]:
    """(levels, res blocks) attribute names of the family in the encoder or the decoder."""
    if config.family == "llamagen":
        return "conv_blocks", "res"
    return ("down" if part == "encoder" else "up"), "block"


def _mid(config: VQConfig, channels: int) -> nn.Module:
    block_1, attn = ResnetBlock(channels, channels), AttnBlock(channels)
    block_2 = ResnetBlock(channels, channels)
    if config.family == "llamagen":
        return nn.ModuleList([block_1, attn, block_2])
    mid = nn.Module()
    mid.block_1, mid.attn_1, mid.block_2 = block_1, attn, block_2
    return mid


def _mid_forward(mid: nn.Module, h: torch.Tensor) -> torch.Tensor:
    if isinstance(mid, nn.ModuleList):
        for block in mid:
            h = block(h)
        return h
    return mid.block_2(mid.attn_1(mid.block_1(h)))


def _has_attention(config: VQConfig, level: int, side: int) -> bool:
    if config.family == "llamagen":
        return level == len(config.ch_mult) - 1
    return side in config.attn_resolutions


# A level as it runs: its res blocks, their attentions (none, or one after each block), and
# its Downsample / Upsample (None at the encoder's deepest level and the decoder's level 0).
_Run = tuple[nn.ModuleList, nn.ModuleList, nn.Module | None]


def _level(config: VQConfig, part: str, i: int) -> tuple[nn.Module, _Run]:
    """Level i of the encoder or the decoder (taming `Encoder` / `Decoder` `__init__`): res
    blocks to ch * ch_mult[i] channels (the decoder's levels have one more), each followed by
    attention where the family has it, then a Downsample (encoder: all levels but the deepest)
    or an Upsample (decoder: all but level 0). Modules are made in the references' order (the
    weights a seeded build draws), under the checkpoints' names (`_names`, `Downsample.key`)."""
    widths = [config.ch * m for m in config.ch_mult]
    deepest = len(widths) - 1
    side = config.resolution // 2**i  # level i works at this side, in either part
    resample: type[Downsample] | type[Upsample] | None
    if part == "encoder":  # from the level above (conv_in: ch), going down
        block_in, count = (widths[i - 1] if i > 0 else config.ch), config.num_res_blocks
        resample = Downsample if i < deepest else None
    else:  # from the level below (conv_in: the deepest width), going up
        block_in, count = widths[min(i + 1, deepest)], config.num_res_blocks + 1
        resample = Upsample if i > 0 else None
    blocks, attns = nn.ModuleList(), nn.ModuleList()
    for _ in range(count):
        blocks.append(ResnetBlock(block_in, widths[i]))
        block_in = widths[i]
        if _has_attention(config, i, side):
            attns.append(AttnBlock(block_in))
    level = nn.Module()
    setattr(level, _names(config, part)[1], blocks)
    level.attn = attns
    resampler = None
    if resample is not None:
        resampler = resample(block_in)
        setattr(level, resample.key, resampler)
    return level, (blocks, attns, resampler)


def _run_levels(levels: list[_Run], h: torch.Tensor) -> torch.Tensor:
    for blocks, attns, resample in levels:
        for j, block in enumerate(blocks):
            h = block(h)
            if len(attns) > 0:
                h = attns[j](h)
        if resample is not None:
            h = resample(h)
    return h


class Encoder(nn.Module):
    def __init__(self, config: VQConfig):
        super().__init__()
        width = config.ch * config.ch_mult[-1]
        self.conv_in = nn.Conv2d(config.in_channels, config.ch, 3, padding=1)
        built = [_level(config, "encoder", i) for i in range(len(config.ch_mult))]
        setattr(self, _names(config, "encoder")[0], nn.ModuleList(lv for lv, _ in built))
        self._plan = [run for _, run in built]
        self.mid = _mid(config, width)
        self.norm_out = _norm(width)
        self.conv_out = nn.Conv2d(width, config.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = _mid_forward(self.mid, _run_levels(self._plan, self.conv_in(x)))
        return self.conv_out(_swish(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, config: VQConfig):
        super().__init__()
        width = config.ch * config.ch_mult[-1]
        self.conv_in = nn.Conv2d(config.z_channels, width, 3, padding=1)
        self.mid = _mid(config, width)
        built = [_level(config, "decoder", i) for i in reversed(range(len(config.ch_mult)))]
        self._plan = [run for _, run in built]  # deepest level first
        # taming indexes `up` by level (`self.up.insert(0, up)`); LlamaGen lists in run order.
        levels = [lv for lv, _ in (built[::-1] if config.family == "taming" else built)]
        setattr(self, _names(config, "decoder")[0], nn.ModuleList(levels))
        self.norm_out = _norm(config.ch * config.ch_mult[0])
        self.conv_out = nn.Conv2d(config.ch * config.ch_mult[0], config.out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = _run_levels(self._plan, _mid_forward(self.mid, self.conv_in(z)))
        return self.conv_out(_swish(self.norm_out(h)))


class VectorQuantizer(nn.Module):
    """Nearest codebook entry per latent vector, in fp32 whatever the autocast around it.

    d = sum(z^2) + sum(e^2) - 2 z.e^T (`einsum`), argmin over the codebook: taming
    `VectorQuantizer2.forward` and LlamaGen `VectorQuantizer.forward`, the latter after
    l2-normalising z and the codebook (`F.normalize`, p=2). One image's rows at a time: the
    reference tokenizes one image per call (Chameleon `image_tokenizer.py`), and the ids of an
    image then do not depend on which others share its batch."""

    def __init__(self, config: VQConfig):
        super().__init__()
        self.l2_norm = config.l2_norm
        self.embedding = nn.Embedding(config.codebook_size, config.embed_dim)

    def codebook(self) -> torch.Tensor:
        e = self.embedding.weight.float()
        return F.normalize(e, p=2, dim=-1) if self.l2_norm else e

    def ids(self, z: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) latents -> (B, h, w) int64 ids."""
        b, d, height, width = z.shape
        with torch.autocast(z.device.type, enabled=False), _ieee_matmul(z.device):
            e = self.codebook()
            e_sq = torch.sum(e**2, dim=1)
            e_t = e.transpose(0, 1)
            flat = z.float().permute(0, 2, 3, 1).contiguous().view(b, height * width, d)
            out = torch.empty(b, height * width, dtype=torch.long, device=z.device)
            for i in range(b):
                zi = F.normalize(flat[i], p=2, dim=-1) if self.l2_norm else flat[i]
                dist = (
                    torch.sum(zi**2, dim=1, keepdim=True)
                    + e_sq
                    - 2 * torch.einsum("bd,dn->bn", zi, e_t)
                )
                out[i] = torch.argmin(dist, dim=1)
        return out.view(b, height, width)

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, h, w) ids -> (B, D, h, w) codebook vectors (normalised for l2 codebooks, as
        LlamaGen's `get_codebook_entry`)."""
        return self.codebook()[ids].permute(0, 3, 1, 2).contiguous()


class _ieee_matmul:
    """fp32 matmuls without TF32 on CUDA for the duration (the codebook distances). The legacy
    flag, as `precision.set_precision` (see there why)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __enter__(self):
        if self.cuda:
            self.saved = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = False
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.backends.cuda.matmul.allow_tf32 = self.saved
        return False


class VQModel(nn.Module):
    """Encoder + quant_conv + quantizer (+ post_quant_conv + decoder when `decoder=True`)."""

    def __init__(self, config: VQConfig, *, decoder: bool = False):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.quant_conv = nn.Conv2d(config.z_channels, config.embed_dim, 1)
        self.quantize = VectorQuantizer(config)
        self.has_decoder = decoder
        if decoder:
            self.post_quant_conv = nn.Conv2d(config.embed_dim, config.z_channels, 1)
            self.decoder = Decoder(config)
        self.eval()

    def latents(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, embed_dim, H/f, W/f), after quant_conv."""
        return self.quant_conv(self.encoder(x))

    def encode_ids(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float in [-1, 1] -> (B, H/f, W/f) int64 codebook ids."""
        return self.quantize.ids(self.latents(x))

    def decode_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, h, w) ids -> (B, 3, h*f, w*f) float32 pixels, clamped to [-1, 1]."""
        if not self.has_decoder:
            raise RuntimeError("build the model with decoder=True to decode")
        z = self.quantize.lookup(ids).to(self.post_quant_conv.weight.dtype)
        return self.decoder(self.post_quant_conv(z)).float().clamp(-1.0, 1.0)

    def encoder_keys(self) -> list[str]:
        """The state-dict keys needed to encode."""
        return [k for k in self.state_dict() if not k.startswith(("decoder.", "post_quant_conv."))]
