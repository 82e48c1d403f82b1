"""EmbeddingSignatureStage: the signature pass of `mmtok dedup --by embedding`.

The signature of a row is its stored image embedding (the `image_embedding` column of an
`mmtok embed` output), handed on as float16; no pixel is decoded. With `--keep largest` the
image header gives the pixel count; a row whose image cannot be read then has no pixel count
(it ranks last) but keeps its place: its embedding, not its file, is what is compared. A row
without an embedding is nobody's duplicate, like a caption with no words.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pyarrow as pa

from mmtok.duplicates import Settings
from mmtok.engine.stage import RowStage, StageResult
from mmtok.errors import MmtokError
from mmtok.images import DEFAULT_MAX_PIXELS, image_input
from mmtok.images.probe import BadImage, probe_image
from mmtok.io.sources import Inputs
from mmtok.stages.signature import SIGNATURE_FIELDS

IMAGE_EMBEDDING = "image_embedding"  # what `mmtok embed` writes (mmtok.stages.embed)
EMBEDDING = "sig_embedding"


def embedding_signatures(settings: Settings, inputs: list[Inputs]) -> EmbeddingSignatureStage:
    """The signature stage of `--by embedding`, once every input (and reference) is known to
    hold embeddings: before any pass, which can take hours at scale."""
    for each in inputs:
        require_embeddings(each)
    return EmbeddingSignatureStage(pixels=settings.keep == "largest")


def require_embeddings(inputs: Inputs, column: str = IMAGE_EMBEDDING) -> None:
    """Stop before any pass when the inputs have no embedding column to compare."""
    if column not in inputs.schema.names:
        raise MmtokError(
            f"--by embedding compares the {column!r} column, which {', '.join(inputs.paths)} "
            "does not have",
            hint="embed the images first: mmtok embed INPUT -o DIR --model ...; then dedup DIR",
        )
    kind = inputs.schema.field(column).type
    if not (pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind)) or not (
        pa.types.is_floating(kind.value_type)
    ):
        raise MmtokError(f"column {column!r} is {kind}, not a list of floats (an embedding)")


class EmbeddingSignatureStage(RowStage):
    name: ClassVar[str] = "embedding_signature"
    input_columns: ClassVar[tuple[str, ...]] = ("image",)
    captions = None  # read like SignatureStage's by the dedup command

    def __init__(self, *, pixels: bool, max_pixels: int = DEFAULT_MAX_PIXELS):
        self.pixels = pixels  # read the header for --keep largest
        self.max_pixels = max_pixels
        self._embeddings: pa.Array | None = None

    def output_fields(self) -> list[pa.Field]:
        return SIGNATURE_FIELDS

    def config(self) -> dict[str, Any]:
        return {"embedding_column": IMAGE_EMBEDDING, "pixels_from_header": self.pixels}

    def process(self, rows: pa.Table) -> StageResult:
        column = rows.column(IMAGE_EMBEDDING).combine_chunks()
        self._embeddings = column.cast(pa.list_(pa.float16()))  # one column op, not per row
        return super().process(rows)

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {f.name: None for f in SIGNATURE_FIELDS}
        if self.pixels:
            try:
                info = probe_image(image_input(row["image"]), self.max_pixels)
                out["pixels"] = info.width * info.height
            except BadImage:
                pass  # the embedding is the signature; the file is not needed
        return out

    def build_column(self, field: pa.Field, values: list) -> pa.Array:
        if field.name == EMBEDDING:  # no row is rejected here, so every row is kept
            return self._embeddings
        return super().build_column(field, values)
