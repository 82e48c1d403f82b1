"""VQ image tokens: `mmtok tokenize-images` and `mmtok detokenize`.

Each command is two stages on the shared model runtime (`mmtok.models.runtime`): a row stage in
the CPU workers that decodes each image and applies the tokenizer family's exact preprocessing
to uint8 (`VQInputStage`, `DetokenizeInputStage`), and a device stage in the main process that
runs the model (`VQTokenizeStage`: encoder + quantizer; `DetokenizeStage`: decoder).

Ids are stored flattened row-major over the latent grid (index = h * grid_w + w, as taming's
`VectorQuantizer2` returns them) as `list<uint16>` (uint32 when the codebook needs it), with
the grid's height and width and the codebook size beside them. The tokenizer's config and the
checkpoint's sha256 are in the stage config (manifest, `mmtok_stages` metadata) and in the
`vq_ids` field's own Parquet metadata.
"""

from __future__ import annotations

import io
import json
import os
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyarrow as pa
from PIL import Image, ImageOps

from mmtok.engine.stage import RowStage
from mmtok.errors import MmtokError
from mmtok.images import DEFAULT_MAX_PIXELS, BadImage, image_input
from mmtok.images.decode import pixel_errors
from mmtok.images.probe import open_image, open_source
from mmtok.io.schema import IMAGE_TYPE
from mmtok.models.inputs import PIXELS
from mmtok.models.runtime import DeviceStage, pixels_array
from mmtok.models.vq import PRECISIONS  # the package imports torch only when a model is built
from mmtok.reasons import Reason, RowRejected
from mmtok.vq_stream import IDS_COLUMN, id_type

if TYPE_CHECKING:
    import torch

    from mmtok.models.vq import VQConfig

GRID_H = "vq_grid_h"
GRID_W = "vq_grid_w"
CODEBOOK_SIZE = "vq_codebook_size"
PSNR = "psnr"
SOURCE_IMAGE = "source_image"
HAS_SOURCE = "has_source"  # detokenize: whether `pixels` holds the preprocessed source image
CODES = "vq_codes"  # detokenize: the checked ids as int32 bytes, for the device (never written)
CPU_BATCH = 16  # a 512 px VQ encoder is ~550 GFLOPs per image: small batches stream better
CUDA_BATCH = 64  # the start on CUDA; halved on out-of-memory (~0.3 GB of activations per image)


def check_checkpoint_file(path: str) -> None:
    """A missing or unreadable checkpoint is a one-line error before anything else."""
    if not os.path.exists(path):
        raise MmtokError(f"--checkpoint {path}: no such file")
    if not os.path.isfile(path):
        raise MmtokError(f"--checkpoint {path}: not a file")
    if not os.access(path, os.R_OK):
        raise MmtokError(f"--checkpoint {path}: cannot read it (permissions)")


def load_vq(config: VQConfig, checkpoint: str, device: str, *, decoder: bool) -> tuple[Any, str]:
    """The model with the checkpoint's weights, on `device`, in eval mode; and its sha256."""
    from mmtok.models.vq import build_model, load_checkpoint

    check_checkpoint_file(checkpoint)
    model = build_model(config, decoder=decoder)
    sha = load_checkpoint(model, checkpoint, decoder=decoder)
    return model.to(device).eval(), sha


def load_source(value: dict | None, config: VQConfig, *, exif: bool, max_pixels: int) -> np.ndarray:
    """The row's image as the tokenizer's uint8 input (H, W, 3); raises `BadImage`.

    The file is decoded as stored (first frame, its own mode, no EXIF rotation unless `exif`):
    the family's preprocessing owns the conversion to RGB (Chameleon blends alpha on white)."""
    from mmtok.models.vq import preprocess

    src = image_input(value)
    with open_source(src) as (fp, _), pixel_errors(fp):
        im = open_image(fp, max_pixels)
        im.load()
        if exif:
            im = ImageOps.exif_transpose(im)
    try:
        return preprocess(im, config)
    except ValueError as e:  # Pillow: no conversion from this mode
        raise BadImage(Reason.UNSUPPORTED_MODE, f"mode {im.mode}: {e}") from None


def pixel_column(values: list[bytes], size: int) -> pa.Array:
    """One copy of the pixel bytes instead of a per-value builder."""
    return pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(size), len(values), [None, pa.py_buffer(b"".join(values))]
    )


class _TokenizerPixels(RowStage):
    """A CPU stage that makes the tokenizer's uint8 input (resolution² x 3 bytes per row)."""

    def __init__(
        self, config: VQConfig, *, exif: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS
    ):
        self.vq = config
        self.exif = exif
        self.max_pixels = max_pixels

    @property
    def pixel_bytes(self) -> int:
        return self.vq.resolution * self.vq.resolution * 3


class VQInputStage(_TokenizerPixels):
    """CPU workers: decode each image and make the tokenizer's uint8 input; bad images are
    rejects with their reason (`decode_error`, `truncated`, `missing_file`, ...)."""

    name: ClassVar[str] = "vq_input"
    input_columns: ClassVar[tuple[str, ...]] = ("image",)

    def output_fields(self) -> list[pa.Field]:
        return [pa.field(PIXELS, pa.binary(self.pixel_bytes))]

    def config(self) -> dict[str, Any]:
        return {
            "preprocess": self.vq.preprocess,
            "resolution": self.vq.resolution,
            "exif": self.exif,
            "decoder": "pillow",
        }

    def setup(self) -> None:
        if self.max_pixels > DEFAULT_MAX_PIXELS:
            Image.MAX_IMAGE_PIXELS = None

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        pixels = load_source(row["image"], self.vq, exif=self.exif, max_pixels=self.max_pixels)
        return {PIXELS: np.ascontiguousarray(pixels, np.uint8).tobytes()}

    def build_column(self, field: pa.Field, values: list) -> pa.Array:
        return pixel_column(values, self.pixel_bytes)


class VQModelStage(DeviceStage):
    """What the tokenizer and detokenizer device stages share: config, checkpoint, precision."""

    decoder: ClassVar[bool] = False

    def __init__(
        self,
        config: VQConfig,
        checkpoint: str,
        *,
        device: str = "cpu",
        batch_size: int | None = None,
        precision: str = "fp32",
    ):
        if precision not in PRECISIONS:
            raise MmtokError(f"unknown precision {precision!r}", hint="use fp32, tf32 or bf16")
        super().__init__(device=device, batch_size=batch_size, precision=precision)
        if batch_size is None:
            self._batch = CUDA_BATCH if device.startswith("cuda") else CPU_BATCH
        self.vq = config
        self.checkpoint = checkpoint
        self.model: Any = None
        self.checkpoint_sha256: str | None = None

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return None  # `precision` sets autocast (bf16) and TF32 around each forward

    @property
    def precision_name(self) -> str:
        return self.precision

    def numerics(self) -> Any:
        """fp32: TF32 off (PyTorch lets cuDNN convolutions use it by default); tf32; bf16
        autocast. The codebook distances stay fp32 in every mode (`mmtok.models.vq`)."""
        from mmtok.models.vq import set_precision

        return set_precision(self.precision, "cuda" if self.device.startswith("cuda") else "cpu")

    def setup(self) -> None:
        """Load the weights: a missing checkpoint or key fails here, before any data is read."""
        if self.model is None:
            self.model, self.checkpoint_sha256 = load_vq(
                self.vq, self.checkpoint, self.device, decoder=self.decoder
            )

    def config(self) -> dict[str, Any]:
        self.setup()
        return {
            "tokenizer": self.vq.to_dict(),
            "checkpoint": os.path.abspath(self.checkpoint),
            "checkpoint_sha256": self.checkpoint_sha256,
            "precision": self.precision,
        }

    def field_metadata(self) -> dict[str, str]:
        """Parquet field metadata: the tokenizer and weights the ids come from."""
        info = self.config()
        return {
            "tokenizer": json.dumps(info["tokenizer"], sort_keys=True),
            "checkpoint_sha256": info["checkpoint_sha256"],
            "precision": info["precision"],
        }

    def _codes(self, column: pa.ChunkedArray | pa.Array, n: int) -> np.ndarray:
        """The workers' int32 ids of `n` rows as (n, grid, grid) int64."""
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        g = self.vq.grid
        data = np.frombuffer(column.buffers()[1], "<i4")[column.offset * g * g :][: n * g * g]
        return data.astype(np.int64).reshape(n, g, g)


def ids_column(ids: np.ndarray, codebook_size: int) -> pa.Array:
    """(N, h, w) ids -> `list<uint16>` (uint32 for codebooks over 65,536), row-major per image."""
    n = len(ids)
    per = int(np.prod(ids.shape[1:])) if n else 0
    kind = id_type(codebook_size - 1)
    values = pa.array(ids.reshape(-1).astype(kind.to_pandas_dtype()), kind)
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * per, pa.int32())
    return pa.ListArray.from_arrays(offsets, values, type=pa.list_(kind))


class VQTokenizeStage(VQModelStage):
    """Adds `vq_ids`, `vq_grid_h`, `vq_grid_w` and `vq_codebook_size` to each image row."""

    name: ClassVar[str] = "tokenize_images"

    def output_fields(self) -> list[pa.Field]:
        kind = id_type(self.vq.codebook_size - 1)
        return [
            pa.field(IDS_COLUMN, pa.list_(kind), metadata=self.field_metadata()),
            pa.field(GRID_H, pa.int32()),
            pa.field(GRID_W, pa.int32()),
            pa.field(CODEBOOK_SIZE, pa.int32()),
        ]

    def host_inputs(self, kept: pa.Table) -> dict[str, torch.Tensor]:
        r = self.vq.resolution
        return {"pixels": self.host_tensor(pixels_array(kept.column(PIXELS), r, r))}

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        from mmtok.models.vq import to_model_input

        with self.numerics():
            return {"ids": self.model.encode_ids(to_model_input(inputs["pixels"]))}

    def columns(self, outputs: dict[str, np.ndarray], kept: pa.Table) -> dict[str, pa.Array]:
        n, g = kept.num_rows, self.vq.grid
        ids = outputs.get("ids", np.zeros((n, g, g), np.int64))
        grid_h, grid_w = ids.shape[1:]
        return {
            IDS_COLUMN: ids_column(ids, self.vq.codebook_size),
            GRID_H: pa.array(np.full(n, grid_h, np.int32)),
            GRID_W: pa.array(np.full(n, grid_w, np.int32)),
            CODEBOOK_SIZE: pa.array(np.full(n, self.vq.codebook_size, np.int32)),
        }


# --- detokenize ------------------------------------------------------------------------------


def row_ids(row: dict[str, Any], config: VQConfig) -> np.ndarray:
    """The row's ids as int32 (a list, or JSON text as JSON Lines and CSV inputs carry it);
    raises `RowRejected(bad_tokens)` unless they fit the tokenizer."""
    value, g = row.get(IDS_COLUMN), config.grid

    def bad(message: str) -> RowRejected:
        return RowRejected(Reason.BAD_TOKENS.value, message)

    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise bad(f"vq_ids is not a list of ids: {value[:40]!r}") from None
    if value is None:
        raise bad("the row has no vq_ids")
    if not isinstance(value, list) or not all(type(v) is int for v in value):
        raise bad(f"vq_ids is not a list of integer ids: {str(value)[:40]!r}")
    grid = (row.get(GRID_H), row.get(GRID_W))
    if grid != (None, None) and grid != (g, g):
        raise bad(f"grid={grid[0]}x{grid[1]}, the tokenizer {config.name} makes {g}x{g}")
    if len(value) != g * g:
        raise bad(f"ids={len(value)}, the tokenizer {config.name} makes {g * g}")
    ids = np.array(value, np.int64)
    if ids.min() < 0 or ids.max() >= config.codebook_size:
        worst = ids.max() if ids.max() >= config.codebook_size else ids.min()
        raise bad(f"id={worst} outside the codebook (codebook_size={config.codebook_size})")
    return ids.astype(np.int32)


class DetokenizeInputStage(_TokenizerPixels):
    """CPU workers: check each row's ids, and make the preprocessed source image (for PSNR)
    where the row still has one; a row whose source cannot be read keeps its ids (no PSNR)."""

    name: ClassVar[str] = "detokenize_input"
    input_columns: ClassVar[tuple[str, ...]] = ("image", IDS_COLUMN, GRID_H, GRID_W)
    optional_columns: ClassVar[tuple[str, ...]] = (GRID_H, GRID_W)  # ids alone are enough

    def output_fields(self) -> list[pa.Field]:
        return [
            pa.field(PIXELS, pa.binary(self.pixel_bytes)),
            pa.field(HAS_SOURCE, pa.bool_()),
            pa.field(CODES, pa.binary(self.vq.tokens * 4)),
        ]

    def config(self) -> dict[str, Any]:
        return {
            "preprocess": self.vq.preprocess,
            "resolution": self.vq.resolution,
            "exif": self.exif,
        }

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        codes = row_ids(row, self.vq).astype("<i4").tobytes()
        try:
            pixels = load_source(row["image"], self.vq, exif=self.exif, max_pixels=self.max_pixels)
        except BadImage:
            return {PIXELS: bytes(self.pixel_bytes), HAS_SOURCE: False, CODES: codes}
        pixels = np.ascontiguousarray(pixels, np.uint8).tobytes()
        return {PIXELS: pixels, HAS_SOURCE: True, CODES: codes}

    def build_column(self, field: pa.Field, values: list) -> pa.Array:
        if field.name in (PIXELS, CODES):
            return pixel_column(values, field.type.byte_width)
        return pa.array(values, field.type)


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, "PNG")
    return buffer.getvalue()


def psnr(reconstruction: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """Per image, in dB over 8-bit pixels: 10·log10(255² / MSE) (inf for identical images)."""
    diff = reconstruction.float() - source.float()
    mse = diff.square().flatten(1).mean(1)
    return 10 * (255.0**2 / mse).log10()


class DetokenizeStage(VQModelStage):
    """Replaces `image` with the decoded picture (PNG bytes) and moves the source to
    `source_image`; adds `psnr` against the preprocessed source (null without one)."""

    name: ClassVar[str] = "detokenize"
    decoder: ClassVar[bool] = True
    consumes: ClassVar[tuple[str, ...]] = (PIXELS, HAS_SOURCE, CODES)

    def output_fields(self) -> list[pa.Field]:
        return [
            pa.field("image", IMAGE_TYPE),
            pa.field(SOURCE_IMAGE, IMAGE_TYPE),
            pa.field(PSNR, pa.float32()),
        ]

    def host_inputs(self, kept: pa.Table) -> dict[str, torch.Tensor]:
        r, n = self.vq.resolution, kept.num_rows
        return {
            "ids": self.host_tensor(self._codes(kept.column(CODES), n)),
            "pixels": self.host_tensor(pixels_array(kept.column(PIXELS), r, r)),
        }

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        import torch

        with self.numerics():
            x = self.model.decode_ids(inputs["ids"]).float()  # (B, 3, H, W) in [-1, 1]
        # [-1, 1] -> 0..255, rounded to nearest (taming's custom_to_pil truncates instead)
        pixels = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)
        return {"pixels": pixels.contiguous(), "psnr": psnr(pixels, inputs["pixels"])}

    def columns(self, outputs: dict[str, np.ndarray], kept: pa.Table) -> dict[str, pa.Array]:
        n = kept.num_rows
        pixels = outputs.get("pixels")
        images = pa.StructArray.from_arrays(
            [
                pa.nulls(n, pa.string()),
                pa.array([png_bytes(pixels[i]) for i in range(n)], pa.large_binary()),
            ],
            fields=list(IMAGE_TYPE),
        )
        has_source = kept.column(HAS_SOURCE).to_numpy(zero_copy_only=False).astype(bool)
        scores = outputs.get("psnr", np.zeros(n, np.float32)).astype(np.float32)
        return {
            "image": images,
            SOURCE_IMAGE: kept.column("image"),
            PSNR: pa.array(scores, pa.float32(), mask=~has_source),
        }
