"""EmbedStage: CLIP image (and caption) embeddings, l2-normalised, stored as float16 vectors.

The device half of `mmtok embed`; `ModelInputStage` makes its uint8 input on the CPU workers.
Embeddings are normalised in float32 and only then cast to float16 (as clip-retrieval does);
`clip_score` is the cosine of the float32 embeddings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyarrow as pa

from mmtok.engine.stage import RowStage
from mmtok.filters import clip_score_violation as filter_rule
from mmtok.models.clip import ClipModel, ResolvedModel, load_clip
from mmtok.models.device_decode import decode_jpegs, tensor_model_input
from mmtok.models.inputs import JPEG, PIXELS
from mmtok.models.runtime import DeviceStage, RowVerdicts, fp16_vectors, pixels_array
from mmtok.reasons import Reason, RowRejected

if TYPE_CHECKING:
    import torch

IMAGE_EMBEDDING = "image_embedding"
TEXT_EMBEDDING = "text_embedding"
CLIP_SCORE = "clip_score"
DECODE_PATH = "decode_path"  # with device decode: "device" or "pillow", per row


def clip_score_violation(score: float | None, minimum: float) -> tuple[str, str] | None:
    """The rule of `mmtok.filters.clip_score_violation` on a score this stage computed, which is
    null only where the caption is: such a row goes as `no_caption`."""
    violation = filter_rule(minimum, score, None)
    return None if violation is None else (violation[0].value, violation[1])


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
        min_clip_score: float | None = None,
        device_decode: bool = False,
    ):
        super().__init__(device=device, batch_size=batch_size, precision=precision)
        self.device_decode = device_decode
        if min_clip_score is not None and not text:
            raise ValueError("min_clip_score needs text embeddings")
        self.resolved = resolved
        self.text = text
        self.min_clip_score = min_clip_score
        self.caption_column = caption_column
        self.clip: ClipModel | None = None

    @property
    def dim(self) -> int:
        return int(self.resolved.model_cfg["embed_dim"])

    consumes: ClassVar[tuple[str, ...]] = (PIXELS, JPEG)

    def output_fields(self) -> list[pa.Field]:
        fields = [pa.field(IMAGE_EMBEDDING, embedding_type(self.dim))]
        if self.device_decode:
            fields.append(pa.field(DECODE_PATH, pa.string()))
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
            "min_clip_score": self.min_clip_score,
            "device_decode": self.device_decode,
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
        if self.device_decode:
            inputs.update(encoded_jpegs(kept))
        if self.text:
            captions = [c or "" for c in kept.column(self.caption_column).to_pylist()]
            inputs["tokens"] = self.host_tensor(self.clip.tokenize(captions).numpy())
        return inputs

    def on_device(self, tensors: dict[str, Any], kept: pa.Table) -> RowVerdicts | None:
        """Decode this batch's baseline JPEGs on the device, resize them there, and put them in
        their rows of the pixel batch; a file the decoder refuses becomes a `decode_error`."""
        rows, files = tensors.pop("jpeg_rows", None), tensors.pop("jpegs", None)
        if rows is None or len(rows) == 0:
            return None
        decoded = decode_jpegs(files, self.device)
        pixels = tensors["pixels"].clone()  # the staged batch may be a read-only Arrow view
        keep = np.ones(kept.num_rows, bool)
        messages = []
        for row, image in zip(rows.tolist(), decoded, strict=True):
            if isinstance(image, str):
                keep[row] = False
                messages.append(f"device JPEG decoder: {image}")
            else:
                pixels[row] = tensor_model_input(image, self.resolved.preprocess)
        tensors["pixels"] = pixels
        return RowVerdicts(keep, [Reason.DECODE_ERROR.value] * len(messages), messages)

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {"image": self.clip.encode_images(inputs["pixels"])}
        if self.text:
            out["text"] = self.clip.encode_texts(inputs["tokens"])
        return out

    def columns(self, outputs: dict[str, np.ndarray], kept: pa.Table) -> dict[str, pa.Array]:
        n = kept.num_rows
        image = outputs.get("image", np.zeros((n, self.dim), np.float32))
        columns = {IMAGE_EMBEDDING: fp16_vectors(image)}
        if self.device_decode:
            on_device = kept.column(JPEG).is_valid().to_pylist()
            columns[DECODE_PATH] = pa.array(["device" if d else "pillow" for d in on_device])
        if self.text:
            text = outputs.get("text", np.zeros((n, self.dim), np.float32))
            missing = kept.column(self.caption_column).is_null().to_numpy(zero_copy_only=False)
            mask = pa.array(missing, pa.bool_())
            vectors = fp16_vectors(text)
            columns[TEXT_EMBEDDING] = pa.FixedSizeListArray.from_arrays(
                vectors.values, self.dim, mask=mask
            )
            columns[CLIP_SCORE] = self._scores(outputs, kept)
        return columns

    def _scores(self, outputs: dict[str, np.ndarray], kept: pa.Table) -> pa.Array:
        """The cosine of the float32 embeddings; null where the caption is null."""
        n = kept.num_rows
        image = outputs.get("image", np.zeros((n, self.dim), np.float32))
        text = outputs.get("text", np.zeros((n, self.dim), np.float32))
        missing = kept.column(self.caption_column).is_null().to_numpy(zero_copy_only=False)
        score = np.einsum("nd,nd->n", image, text).astype(np.float32)
        return pa.array(score, pa.float32(), mask=missing)

    def rejects(self, outputs: dict[str, np.ndarray], kept: pa.Table) -> RowVerdicts | None:
        if self.min_clip_score is None:
            return None
        return score_verdicts(self._scores(outputs, kept), self.min_clip_score)


def encoded_jpegs(kept: pa.Table) -> dict[str, Any]:
    """The rows whose JPEG the device decodes, and their bytes as CPU uint8 tensors."""
    import torch

    files = kept.column(JPEG).to_pylist()
    rows = np.array([i for i, f in enumerate(files) if f is not None], np.int64)
    datas = [torch.frombuffer(bytearray(files[i]), dtype=torch.uint8) for i in rows]
    return {"jpeg_rows": rows, "jpegs": datas}


def score_verdicts(scores: pa.Array, minimum: float) -> RowVerdicts:
    keep, reasons, messages = [], [], []
    for score in scores.to_pylist():
        violation = clip_score_violation(score, minimum)
        keep.append(violation is None)
        if violation is not None:
            reasons.append(violation[0])
            messages.append(violation[1])
    return RowVerdicts(np.array(keep, bool), reasons, messages)


class ClipScoreStage(EmbedStage):
    """`mmtok filter --min-clip-score --model`: computes each row's CLIP score on the device and
    judges it; adds only the `clip_score` column (the embeddings are `mmtok embed`'s job)."""

    name: ClassVar[str] = "clip_score"

    def __init__(self, resolved: ResolvedModel, min_clip_score: float, **runtime: Any):
        super().__init__(resolved, text=True, min_clip_score=min_clip_score, **runtime)

    def output_fields(self) -> list[pa.Field]:
        return [pa.field(CLIP_SCORE, pa.float32())]

    def config(self) -> dict[str, Any]:
        return {
            **self.resolved.info(),
            "min_clip_score": self.min_clip_score,
            "precision": self.precision_name,
            "clip_score": "cosine of the l2-normalised float32 image and caption embeddings",
        }

    def columns(self, outputs: dict[str, np.ndarray], kept: pa.Table) -> dict[str, pa.Array]:
        return {CLIP_SCORE: self._scores(outputs, kept)}


class ClipScoreFilterStage(RowStage):
    """`--min-clip-score` over rows that already have a `clip_score` column (an `mmtok embed
    --text` output): the same rule as `mmtok embed --min-clip-score`; a row with a caption but
    no score goes as `no_clip_score`."""

    name: ClassVar[str] = "clip_score_filter"
    input_columns: ClassVar[tuple[str, ...]] = (CLIP_SCORE, "caption")

    def __init__(self, min_clip_score: float):
        self.min_clip_score = min_clip_score

    def config(self) -> dict[str, Any]:
        return {"min_clip_score": self.min_clip_score}

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        violation = filter_rule(self.min_clip_score, row[CLIP_SCORE], row["caption"])
        if violation is not None:
            raise RowRejected(*violation)
        return {}
