"""ModelInputStage: the CPU-worker half of a model stage. Each image is decoded safely and
resized to the model's input as uint8; a bad image becomes a reject here, so the device half only
ever sees good pixels and one bad file never spoils a batch."""

from __future__ import annotations

from typing import Any, ClassVar

import pyarrow as pa
from PIL import Image

from mmtok.engine.stage import RowStage
from mmtok.images import DEFAULT_MAX_PIXELS, AlphaPolicy, decode_image, image_input
from mmtok.images.probe import open_source
from mmtok.models.device_decode import device_decodable
from mmtok.models.preprocess import Preprocess, model_input

PIXELS = "pixels"  # the column the workers hand to the device stage; never written out
JPEG = "jpeg"  # with device decode: the encoded file for the device to decode (else null)


def pixels_field(p: Preprocess) -> pa.Field:
    """Row-major (height, width, 3) uint8, one fixed-size value per row."""
    return pa.field(PIXELS, pa.binary(p.pixel_bytes))


class ModelInputStage(RowStage):
    """Decodes each image (first frame, RGB, alpha dropped as open_clip's `convert("RGB")` does,
    no EXIF rotation unless `exif`, as open_clip) and makes the model's uint8 input."""

    name: ClassVar[str] = "model_input"
    input_columns: ClassVar[tuple[str, ...]] = ("image",)

    def __init__(
        self,
        preprocess: Preprocess,
        *,
        exif: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        device_decode: bool = False,
    ):
        self.preprocess = preprocess
        self.exif = exif
        self.max_pixels = max_pixels
        # Baseline JPEGs are only read here and decoded on the device (`--gpu-decode`).
        self.device_decode = device_decode and not exif

    def output_fields(self) -> list[pa.Field]:
        fields = [pixels_field(self.preprocess)]
        return [*fields, pa.field(JPEG, pa.large_binary())] if self.device_decode else fields

    def config(self) -> dict[str, Any]:
        return {
            "preprocess": self.preprocess.to_dict(),
            "exif": self.exif,
            "alpha": AlphaPolicy.DROP.value,
            "decoder": "pillow" + (", baseline JPEG on the device" if self.device_decode else ""),
        }

    def setup(self) -> None:
        if self.max_pixels > DEFAULT_MAX_PIXELS:
            Image.MAX_IMAGE_PIXELS = None

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        src = image_input(row["image"])
        if self.device_decode:
            with open_source(src) as (fp, _):
                data = fp.read()
            if device_decodable(data, self.max_pixels):
                return {PIXELS: bytes(self.preprocess.pixel_bytes), JPEG: data}
            src = data
        image = decode_image(
            src,
            exif_transpose=self.exif,
            alpha=AlphaPolicy.DROP,
            max_pixels=self.max_pixels,
        )
        return {PIXELS: model_input(image, self.preprocess).tobytes(), JPEG: None}

    def build_column(self, field: pa.Field, values: list) -> pa.Array:
        if field.name == JPEG:
            return pa.array(values, field.type)
        # One copy of the pixel bytes instead of a per-value builder.
        return pa.FixedSizeBinaryArray.from_buffers(
            field.type, len(values), [None, pa.py_buffer(b"".join(values))]
        )
