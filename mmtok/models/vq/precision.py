"""Numeric precision of the VQ encoder: one exact mode and two faster ones.

- `fp32`: the reference mode. TF32 off for convolutions and matmuls (PyTorch turns it on for
  cuDNN convolutions by default, so "fp32" on an A100/H100 is otherwise not fp32), no autocast.
- `tf32`: TF32 convolutions and matmuls (CUDA only; on CPU the same as fp32).
- `bf16`: bf16 autocast around the encoder (GroupNorm and softmax stay fp32 under autocast).

In every mode the codebook distances and the argmin run in true fp32 (`VectorQuantizer.ids`).
The faster modes change some ids; `benchmarks/vq.py` measures their agreement with fp32.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

PRECISIONS = ("fp32", "tf32", "bf16")


@contextmanager
def set_precision(mode: str, device_type: str = "cuda") -> Iterator[None]:
    """Run the block in `mode`; the backend flags are restored afterwards."""
    import torch

    if mode not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {mode!r}")
    # The legacy flags, as mmtok.models.clip: torch 2.15 still honours them without a warning,
    # and once the new per-backend `fp32_precision` API sets cuDNN's conv flag apart from its
    # RNN flag, any later read of `torch.backends.cudnn.allow_tf32` raises.
    backends = torch.backends
    saved = (backends.cudnn.allow_tf32, backends.cuda.matmul.allow_tf32)
    backends.cudnn.allow_tf32 = backends.cuda.matmul.allow_tf32 = mode == "tf32"
    try:
        if mode == "bf16":
            with torch.autocast(device_type, dtype=torch.bfloat16):
                yield
        else:
            yield
    finally:
        backends.cudnn.allow_tf32, backends.cuda.matmul.allow_tf32 = saved
