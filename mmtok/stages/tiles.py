"""TileStage: the pixels a preset's processor hands its vision encoder, per row (after LayoutStage).

Each row gets a `tiles` list in the reference processor's order (e.g. LLaVA's base image first,
InternVL's thumbnail last), each entry with its kind, grid position, size and bytes: PNG, or raw
row-major RGB uint8 (`height * width * 3` bytes, `numpy.frombuffer(data, "uint8").reshape(h, w,
3)`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
from PIL import Image

from mmtok.engine.stage import RowStage
from mmtok.images import DEFAULT_MAX_PIXELS, AlphaPolicy, decode_image, image_input
from mmtok.io.shard_writer import CODEC_KEY
from mmtok.presets import Preset, Refused
from mmtok.presets.pixels import Tile, encode_tile, pack_rgb, render_tiles
from mmtok.reasons import Reason, RowRejected

TILE_FORMATS = ("png", "raw")
TILE_TYPE = pa.struct(
    [
        pa.field("kind", pa.string()),
        pa.field("row", pa.int16()),
        pa.field("col", pa.int16()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("data", pa.large_binary()),
    ]
)
TILES_TYPE = pa.list_(TILE_TYPE)
# The Parquet codec of the tiles column, per format (zstd costs ~2 ms per MB of raw pixels for
# ~1.4x on photos, lz4 about a third of that for ~1.3x; PNG is deflated already).
TILE_CODECS = {"raw": "lz4", "png": "none"}


def tiles_array(rows: list[list[dict[str, Any]]]) -> pa.Array:
    """`pa.array(rows, list<TILE_TYPE>)` built from buffers: one copy of the pixel bytes
    instead of a per-value builder, which ran at about 200 MB/s. The copy goes into a buffer of
    Arrow's memory pool, which keeps its pages from batch to batch: `b"".join` got fresh pages
    from the kernel for every batch (tens of MB) and ran at ~1 GB/s, page faults included.
    A `data` that is a `Tile` (raw tiles) is packed straight into that buffer (`pack_rgb`):
    its bytes are never a Python object of their own."""
    flat = [t for tiles in rows for t in tiles]
    data = [t["data"] for t in flat]
    sizes = [_raw_size(d) if isinstance(d, Tile) else len(d) for d in data]
    offsets = np.zeros(len(data) + 1, np.int64)
    np.cumsum(sizes, out=offsets[1:])
    joined = pa.allocate_buffer(int(offsets[-1]))
    view = np.frombuffer(joined, np.uint8)
    for value, start, end in zip(data, offsets[:-1].tolist(), offsets[1:].tolist(), strict=True):
        if isinstance(value, Tile):
            pack_rgb(value, view[start:end])
        else:
            view[start:end] = np.frombuffer(value, np.uint8)
    blobs = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), len(data), [None, pa.py_buffer(offsets), joined]
    )
    columns = [pa.array([t[f.name] for t in flat], f.type) for f in TILE_TYPE if f.name != "data"]
    tiles = pa.StructArray.from_arrays([*columns, blobs], fields=list(TILE_TYPE))
    list_offsets = np.zeros(len(rows) + 1, np.int32)
    np.cumsum([len(r) for r in rows], out=list_offsets[1:])
    return pa.ListArray.from_arrays(pa.array(list_offsets), tiles, type=TILES_TYPE)


def _raw_size(tile: Tile) -> int:
    width, height = tile.size
    return width * height * 3


class TileStage(RowStage):
    """Decodes each image (EXIF-rotated when `apply_exif`, transparency over white as
    transformers' `convert_to_rgb` does) and renders its tiles under `preset`."""

    name: ClassVar[str] = "tiles"
    input_columns: ClassVar[tuple[str, ...]] = ("image", "num_tiles")

    def __init__(
        self,
        preset: Preset,
        *,
        tile_format: str = "png",
        apply_exif: bool = True,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ):
        if tile_format not in TILE_FORMATS:
            raise ValueError(f"tile_format must be one of {TILE_FORMATS}")
        self.preset = preset
        self.tile_format = tile_format
        self.apply_exif = apply_exif
        self.max_pixels = max_pixels

    def output_fields(self) -> list[pa.Field]:
        codec = TILE_CODECS[self.tile_format]
        return [pa.field("tiles", TILES_TYPE, metadata={CODEC_KEY: codec})]

    def config(self) -> dict[str, Any]:
        return {
            "preset": self.preset.spec(),
            "tile_format": self.tile_format,
            "apply_exif": self.apply_exif,
            "pixels": self.preset.pixel_settings(),
            "alpha": AlphaPolicy.WHITE.value,
        }

    def build_column(self, field: pa.Field, values: list) -> pa.Array:
        return tiles_array(values)

    def setup(self) -> None:
        if self.max_pixels > DEFAULT_MAX_PIXELS:
            Image.MAX_IMAGE_PIXELS = None

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        image = decode_image(
            image_input(row["image"]),
            exif_transpose=self.apply_exif,
            alpha=AlphaPolicy.WHITE,
            max_pixels=self.max_pixels,
        )
        layout = self.preset.layout(*image.size)
        if isinstance(layout, Refused):
            raise RowRejected(Reason.MODEL_REFUSES, f"{self.preset.name}: {layout.error}")
        if layout.num_tiles != row["num_tiles"]:
            raise RowRejected(
                Reason.DECODE_ERROR,
                f"decoded size {image.width}x{image.height} disagrees with the header",
            )
        tiles = render_tiles(
            image, layout, self.preset.family, self.preset.params, self.preset.pixels
        )
        # raw: the Tile itself, packed into the batch's buffer by `tiles_array` (its source is
        # held until then: a batch of TILE_BATCH_ROWS rows)
        raw = self.tile_format == "raw"
        return {
            "tiles": [
                {
                    "kind": t.kind,
                    "row": t.row,
                    "col": t.col,
                    "width": t.size[0],
                    "height": t.size[1],
                    "data": t if raw else encode_tile(t.image, self.tile_format),
                }
                for t in tiles
            ]
        }
