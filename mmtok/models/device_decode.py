"""`--gpu-decode`: baseline JPEGs decoded in batches on the device and resized there as uint8.

For models whose images are cheap (ViT-B/32), CPU decode is the bottleneck (design note C.2).
Workers then only read the file and check its header (`device_decodable`); the device decodes
with `torchvision.io.decode_jpeg(list, device=...)` (nvJPEG on CUDA, batched) and resizes with
torchvision's antialiased bicubic/bilinear on uint8, by the same size and crop rules as
`mmtok.models.preprocess.model_input`. Everything else (PNG, progressive or CMYK JPEG, EXIF
rotation, files without an end marker) takes the CPU path. The tensor functions run on any
device, so they are tested on CPU; torch and torchvision are imported inside them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmtok.models.preprocess import Preprocess, _keep_ratio_size, _shortest_edge_size

if TYPE_CHECKING:
    import torch

_SOF = frozenset({*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC), *range(0xCD, 0xD0)})
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})  # TEM, RSTn, SOI: no length field


def device_decodable(data: bytes, max_pixels: int) -> bool:
    """A baseline (SOF0) JPEG with 1 or 3 components, within `max_pixels`, that ends with an
    EOI marker (a cut download does not): what the GPU decoder's fast path handles."""
    if data[:2] != b"\xff\xd8" or data[-2:] != b"\xff\xd9":
        return False
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return False
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _STANDALONE:
            i += 2
            continue
        if marker == 0xC0:
            if i + 10 > len(data):
                return False
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            return data[i + 9] in (1, 3) and 0 < width * height <= max_pixels
        if marker in _SOF or marker == 0xDA:  # another coding, or scan data before a frame
            return False
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return False


def _resize(img: torch.Tensor, width: int, height: int, interpolation: str) -> torch.Tensor:
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    if tuple(img.shape[-2:]) == (height, width):
        return img
    mode = InterpolationMode.BILINEAR if interpolation == "bilinear" else InterpolationMode.BICUBIC
    return F.resize(img, [height, width], interpolation=mode, antialias=True)


def _center_crop_or_pad(img: torch.Tensor, size: tuple[int, int], fill: int) -> torch.Tensor:
    import torch

    crop_h, crop_w = size
    height, width = img.shape[-2:]
    if crop_w > width or crop_h > height:
        left = (crop_w - width) // 2 if crop_w > width else 0
        top = (crop_h - height) // 2 if crop_h > height else 0
        right = max(crop_w - width - left, 0)
        bottom = max(crop_h - height - top, 0)
        img = torch.nn.functional.pad(img, (left, right, top, bottom), value=fill)
        height, width = img.shape[-2:]
    top = int(round((height - crop_h) / 2.0))
    left = int(round((width - crop_w) / 2.0))
    return img[..., top : top + crop_h, left : left + crop_w]


def tensor_model_input(img: torch.Tensor, p: Preprocess) -> torch.Tensor:
    """`model_input` on a (3, H, W) uint8 tensor, on its device; returns (H', W', 3) uint8."""
    height, width = img.shape[-2:]
    if p.resize_mode == "squash":
        img = _resize(img, p.size[1], p.size[0], p.interpolation)
    elif p.resize_mode == "longest":
        img = _resize(img, *_keep_ratio_size(width, height, p.size, 1.0), p.interpolation)
        img = _center_crop_or_pad(img, p.size, p.fill_color)
    else:
        if p.size[0] == p.size[1]:
            img = _resize(img, *_shortest_edge_size(width, height, p.size[0]), p.interpolation)
        else:
            img = _resize(img, *_keep_ratio_size(width, height, p.size, 0.0), "bicubic")
        img = _center_crop_or_pad(img, p.size, 0)
    return img.permute(1, 2, 0)


def decode_jpegs(datas: list[torch.Tensor], device: str) -> list[torch.Tensor | str]:
    """Decode encoded JPEG byte tensors to (3, H, W) uint8 on `device`, as one batch; if the
    batch fails, one by one, so a bad file becomes its error message and the rest still decode."""
    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        return list(decode_jpeg(datas, mode=ImageReadMode.RGB, device=device))
    except RuntimeError:
        out: list[torch.Tensor | str] = []
        for data in datas:
            try:
                out.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
            except RuntimeError as e:
                out.append(str(e).strip().splitlines()[-1])
        return out
