"""The pixels each preset hands its vision encoder: tiles, global tile, thumbnail, crops.

One function per family, replaying the reference processor's resize filter, rounding, padding,
crop and order on an RGB Pillow image, up to (not including) rescale and normalisation. The
transformers PIL backends resize with `PIL.Image.resize` on uint8 RGB (`image_transforms.resize`,
no `reducing_gap`), so the same call here gives the same bytes.

Sources (transformers v5.23 unless noted), per family:
- fit_to_canvas: `mllama/image_processing_pil_mllama.py` (`resize`, `pad`, `split_to_tiles_np`);
  `llama4/image_processing_llama4.py` (`pad_to_best_fit`, `split_to_tiles`, global tile = the
  whole image squashed to one tile, appended when there is more than one tile).
- smart_resize: `qwen2_vl/image_processing_pil_qwen2_vl.py`, `emu3/image_processing_emu3.py`.
- anyres: `llava_next/image_processing_pil_llava_next.py` (`get_image_patches`,
  `_get_padding_size`: centred, the odd pixel bottom/right; base image squashed first).
- idefics3: `idefics3/image_processing_pil_idefics3.py` (`resize` to the longest edge,
  `resize_for_vision_encoder`, `split_images`: global image resized from the snapped image).
- internvl: `got_ocr2/image_processing_pil_got_ocr2.py` (`crop_image_to_patches`).
- pixtral: the patch-grid size of mistral-common with the HF PIL processor's bicubic filter
  (mistral-common itself resizes float32 with OpenCV's INTER_CUBIC; uint8 cannot carry that).
- fixed: `llava/image_processing_pil_llava.py`, `chameleon/` (shortest edge, centre crop).
- letterbox: `janus/image_processing_pil_janus.py` (`resize`, `pad_to_square`, centred).
- gemma3: `gemma3/image_processing_pil_gemma3.py` (`pan_and_scan` crops, squash each).
- moonvit: Kimi-VL `image_processing_kimi_vl.py` (bicubic, zero pad right/bottom to 28).
"""

from __future__ import annotations

import io
import math
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mmtok.presets.idefics3 import rescale_to_max_len
from mmtok.presets.layout import Layout

if TYPE_CHECKING:
    from PIL import Image

# The filter names a preset may give, as Pillow's `Image.Resampling` members. Pillow is imported
# only where pixels are made: `mmtok layout` and the registry never need it.
RESAMPLE = {
    "nearest": "NEAREST",
    "bilinear": "BILINEAR",
    "bicubic": "BICUBIC",
    "lanczos": "LANCZOS",
}

# Pixel settings of each family's reference processor; a preset may override them.
PIXEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "fit_to_canvas": {"resample": "bilinear"},
    "smart_resize": {"resample": "bicubic"},
    "anyres": {"resample": "bicubic"},
    "idefics3": {"resample": "lanczos"},
    "internvl": {"resample": "bicubic"},
    "pixtral": {"resample": "bicubic"},
    "fixed": {"resample": "bicubic"},
    "letterbox": {"resample": "bicubic", "pad_value": 127},
    "gemma3": {"resample": "bilinear"},
    "moonvit": {"resample": "bicubic"},
    "openai_tiles": {},  # an API: its resampling is not published, so no pixels
}


@dataclass(frozen=True, slots=True)
class Tile:
    """One image the vision encoder receives. `kind`: tile, global, thumbnail, base, image, crop;
    `row`/`col` place a tile in its grid (0, 0 for the others). Its pixels are `box` (left,
    top, right, bottom) of `source`, or all of it: a grid tile is not cropped until its `image`
    is asked for, so raw tiles are packed straight from the canvas (`pack_rgb`)."""

    kind: str
    row: int
    col: int
    source: Image.Image
    box: tuple[int, int, int, int] | None = None

    @property
    def size(self) -> tuple[int, int]:
        if self.box is None:
            return self.source.size
        left, top, right, bottom = self.box
        return right - left, bottom - top

    @property
    def image(self) -> Image.Image:
        return self.source if self.box is None else self.source.crop(self.box)


class NoPixels(ValueError):
    """The preset has no published pixel pipeline (e.g. an API model)."""


def has_pixels(family: str) -> bool:
    return family in _RENDER


def pixel_settings(family: str, overrides: dict[str, Any]) -> dict[str, Any]:
    return {**PIXEL_DEFAULTS[family], **overrides}


def render_tiles(
    image: Image.Image, layout: Layout, family: str, params: dict[str, Any], pixels: dict[str, Any]
) -> list[Tile]:
    """The tiles of `image` (RGB, already EXIF-rotated) for a preset's `layout` of its size."""
    if image.size != (layout.width, layout.height):
        raise ValueError(f"layout is for {layout.width}x{layout.height}, image is {image.size}")
    if family not in _RENDER:
        raise NoPixels(f"family {family!r} has no published pixel pipeline")
    from PIL import Image

    settings = pixel_settings(family, pixels)
    resample = Image.Resampling[RESAMPLE[settings["resample"]]]
    return _RENDER[family](image, layout, params, resample, settings)


def encode_tile(image: Image.Image, fmt: str) -> bytes:
    """PNG bytes (fast compression: tiles are intermediate data) or raw HWC uint8 bytes.

    PNG: zlib level 1 with the run-length strategy (`compress_type`, passed by Pillow's PNG
    encoder to zlib's `deflateInit2`): on photos 10-25% less CPU than the default strategy
    and 5-12% smaller, since after PNG's row filters the data is mostly small values that
    Huffman codes well and long matches are rare."""
    if fmt == "raw":
        return image.tobytes()
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1, compress_type=zlib.Z_RLE)
    return buf.getvalue()


def pack_rgb(tile: Tile, out: Any) -> None:
    """Write the tile's raw RGB bytes (`encode_tile(tile.image, "raw")`) into `out`, a writable
    uint8 numpy array of exactly width * height * 3: Pillow's raw encoder, as `tobytes` runs
    it, over the tile's box of its source, chunk by chunk (`tobytes` joins its chunks into a
    new object, which here would be copied once more)."""
    import numpy as np
    from PIL import Image, ImageFile

    source = tile.source
    if source.mode != "RGB":
        raise ValueError(f"tiles are RGB, got {source.mode}")
    width, height = tile.size
    if out.size != width * height * 3:
        raise ValueError(f"{out.size} bytes for a {width}x{height} tile")
    if not out.size:
        return
    source.load()
    encoder = Image._getencoder("RGB", "raw", "RGB")
    encoder.setimage(source.im, tile.box or (0, 0, width, height))
    bufsize = max(ImageFile.MAXBLOCK, width * 4)  # as tobytes: at least one line
    filled = 0
    while True:
        _, status, chunk = encoder.encode(bufsize)
        out[filled : filled + len(chunk)] = np.frombuffer(chunk, np.uint8)
        filled += len(chunk)
        if status:
            break
    if status < 0 or filled != out.size:
        raise RuntimeError(f"raw encoder error {status} after {filled} of {out.size} bytes")


# -- helpers ----------------------------------------------------------------------------------


def _pad(image: Image.Image, size: tuple[int, int], offset=(0, 0), fill=0) -> Image.Image:
    from PIL import Image

    if image.size == size and offset == (0, 0):
        return image
    canvas = Image.new("RGB", size, (fill, fill, fill))
    canvas.paste(image, offset)
    return canvas


def _grid(image: Image.Image, rows: int, cols: int, tile_w: int, tile_h: int) -> list[Tile]:
    """Row-major tiles, as every reference splits them."""
    return [
        Tile("tile", r, c, image, (c * tile_w, r * tile_h, (c + 1) * tile_w, (r + 1) * tile_h))
        for r in range(rows)
        for c in range(cols)
    ]


def _resize(image: Image.Image, size: tuple[int, int], resample) -> Image.Image:
    return image.resize(size, resample)  # Pillow returns a copy when the size is unchanged


# -- families ---------------------------------------------------------------------------------


def _fit_to_canvas(image, layout, params, resample, _):
    tile = params["tile_size"]
    rows, cols = layout.grid
    canvas = _pad(_resize(image, layout.resized, resample), layout.canvas)
    tiles = _grid(canvas, rows, cols, tile, tile)
    if params["global_tile"] and rows * cols > 1:
        tiles.append(Tile("global", 0, 0, _resize(image, (tile, tile), resample)))
    return tiles


def _single(image, layout, params, resample, _):
    return [Tile("image", 0, 0, _resize(image, layout.resized, resample))]


def _anyres(image, layout, params, resample, _):
    tile = params["tile_size"]
    rows, cols = layout.grid
    content = _resize(image, layout.resized, resample)
    (pin_w, pin_h), (w, h) = layout.canvas, layout.resized
    canvas = _pad(content, (pin_w, pin_h), ((pin_w - w) // 2, (pin_h - h) // 2))
    base = Tile("base", 0, 0, _resize(image, (tile, tile), resample))
    return [base, *_grid(canvas, rows, cols, tile, tile)]


def _idefics3(image, layout, params, resample, _):
    tile = params["max_image_size"]
    scaled = _resize(image, rescale_to_max_len(*image.size, params["longest_edge"]), resample)
    if not params["do_image_splitting"]:
        return [Tile("image", 0, 0, _resize(scaled, (tile, tile), resample))]
    snapped = _resize(scaled, layout.canvas, resample)
    rows, cols = layout.grid
    if rows * cols == 1:
        return [Tile("image", 0, 0, snapped)]
    return [
        *_grid(snapped, rows, cols, tile, tile),
        Tile("global", 0, 0, _resize(snapped, (tile, tile), resample)),
    ]


def _internvl(image, layout, params, resample, _):
    tile = params["tile_size"]
    rows, cols = layout.grid
    tiles = _grid(_resize(image, layout.canvas, resample), rows, cols, tile, tile)
    if params["use_thumbnail"] and rows * cols > 1:
        tiles.append(Tile("thumbnail", 0, 0, _resize(image, (tile, tile), resample)))
    return tiles


def _shortest_edge_crop(image, layout, params, resample, _):
    """Shortest edge to `size` (long side truncated, as get_resize_output_image_size does), then a
    centre crop, without building the whole resized image (a 1x5000 strip would become
    512x2,560,000). Pillow resizes horizontally first and rounds to uint8 between the passes, so
    the same two passes are run here with the crop in between: the horizontal pass, a plain
    crop of the columns kept, then the vertical pass over a box of the rows kept."""
    size = params["size"]
    w, h = image.size
    if w <= h:
        new_w, new_h = size, int(size * h / w)
    else:
        new_w, new_h = int(size * w / h), size
    left, top = (new_w - size) // 2, (new_h - size) // 2
    columns = image.resize((new_w, h), resample).crop((left, 0, left + size, h))
    sy = h / new_h
    box = (0, top * sy, size, (top + size) * sy)
    return [Tile("image", 0, 0, columns.resize((size, size), resample, box=box))]


def _letterbox(image, layout, params, resample, settings):
    content = _resize(image, layout.resized, resample)
    w, h = content.size
    side = max(w, h)
    offset = ((side - w) // 2, (side - h) // 2)
    return [Tile("image", 0, 0, _pad(content, (side, side), offset, settings["pad_value"]))]


def _gemma3(image, layout, params, resample, _):
    size = (params["size"], params["size"])
    tiles = [Tile("image", 0, 0, _resize(image, size, resample))]
    if not params["pan_and_scan"] or layout.num_tiles == 1:
        return tiles
    rows, cols = layout.grid
    w, h = image.size
    crop_w, crop_h = math.ceil(w / cols), math.ceil(h / rows)
    for r in range(rows):
        for c in range(cols):
            box = (c * crop_w, r * crop_h, min((c + 1) * crop_w, w), min((r + 1) * crop_h, h))
            tiles.append(Tile("crop", r, c, _resize(image.crop(box), size, resample)))
    return tiles


def _moonvit(image, layout, params, resample, _):
    return [Tile("image", 0, 0, _pad(_resize(image, layout.resized, resample), layout.canvas))]


_RENDER = {
    "fit_to_canvas": _fit_to_canvas,
    "smart_resize": _single,
    "anyres": _anyres,
    "idefics3": _idefics3,
    "internvl": _internvl,
    "pixtral": _single,
    "fixed": _shortest_edge_crop,
    "letterbox": _letterbox,
    "gemma3": _gemma3,
    "moonvit": _moonvit,
}

__all__ = [
    "PIXEL_DEFAULTS",
    "NoPixels",
    "Tile",
    "encode_tile",
    "has_pixels",
    "pack_rgb",
    "render_tiles",
]
