"""EmbedStage: CLIP image (and caption) embeddings, l2-normalised, stored as float16 vectors.

The device half of `mmtok embed`; `ModelInputStage` makes its uint8 input on the CPU workers.
Embeddings are normalised in float32 and only then cast to float16 (as clip-retrieval does);
`clip_score` is the cosine of the float32 embeddings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyarrow as pa

from mmtok.models.clip import ClipModel, ResolvedModel, load_clip
from mmtok.models.inputs import PIXELS
from mmtok.models.runtime import DeviceStage, fp16_vectors, pixels_array

if TYPE_CHECKING:
    import torch

IMAGE_EMBEDDING = "image_embedding"
TEXT_EMBEDDING = "text_embedding"
CLIP_SCORE = "clip_score"


def embedding_type(dim: int) -> pa.DataType:
    return pa.list_(pa.float16(), dim)


class EmbedStage(DeviceStage):
    """Adds `image_embedding`; with `text`, also `text_embedding` and `clip_score` (null where
    the caption is null)."""

    name: ClassVar[str] = "embed"

    def __init__(
        self,
        resolved: ResolvedModel,
        *,
        text: bool = False,
        device: str = "cpu",
        batch_size: int | None = None,
        precision: str = "auto",
        caption_column: str = "caption",
    ):
        super().__init__(device=device, batch_size=batch_size, precision=precision)
        self.resolved = resolved
        self.text = text
        self.caption_column = caption_column
        self.clip: ClipModel | None = None

    @property
    def dim(self) -> int:
        return int(self.resolved.model_cfg["embed_dim"])

    def output_fields(self) -> list[pa.Field]:
        fields = [pa.field(IMAGE_EMBEDDING, embedding_type(self.dim))]
        if self.text:
            fields += [
                pa.field(TEXT_EMBEDDING, embedding_type(self.dim)),
                pa.field(CLIP_SCORE, pa.float32()),
            ]
        return fields

    def config(self) -> dict[str, Any]:
        return {
            **self.resolved.info(),
            "text": self.text,
            "precision": self.precision_name,
            "embedding": f"l2-normalised float32, stored as float16[{self.dim}]",
        }

    def setup(self) -> None:
        if self.clip is None:
            self.clip = load_clip(self.resolved, self.device, text=self.text)

    def host_inputs(self, kept: pa.Table) -> dict[str, torch.Tensor]:
        self.setup()
        height, width = self.resolved.preprocess.size
        inputs = {"pixels": self.host_tensor(pixels_array(kept.column(PIXELS), height, width))}
        if self.text:
            captions = [c or "" for c in kept.column(self.caption_column).to_pylist()]
            inputs["tokens"] = self.host_tensor(self.clip.tokenize(captions).numpy())
        return inputs

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {"image": self.clip.encode_images(inputs["pixels"])}
        if self.text:
            out["text"] = self.clip.encode_texts(inputs["tokens"])
        return out

    def columns(self, outputs: dict[str, np.ndarray], kept: pa.Table) -> dict[str, pa.Array]:
        n = kept.num_rows
        image = outputs.get("image", np.zeros((n, self.dim), np.float32))
        columns = {IMAGE_EMBEDDING: fp16_vectors(image)}
        if self.text:
            text = outputs.get("text", np.zeros((n, self.dim), np.float32))
            missing = kept.column(self.caption_column).is_null().to_numpy(zero_copy_only=False)
            mask = pa.array(missing, pa.bool_())
            vectors = fp16_vectors(text)
            columns[TEXT_EMBEDDING] = pa.FixedSizeListArray.from_arrays(
                vectors.values, self.dim, mask=mask
            )
            score = np.einsum("nd,nd->n", image, text).astype(np.float32)
            columns[CLIP_SCORE] = pa.array(score, pa.float32(), mask=missing)
        return columns
