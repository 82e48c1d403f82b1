"""SignatureStage: the compact per-row signatures the dedup clustering pass works on.

Per row: sha256 of the image file, the 64-bit perceptual hash of the decoded, EXIF-rotated
image and of its mirror, the pixel count (for --keep largest), and the caption's LSH band keys.
It never rejects: a row whose image cannot be read keeps null signatures and its reason in
`sig_reason`/`sig_message`, so every row keeps its position in the stream and the clustering
pass can tell the writing pass which position goes where.

Crawls repeat files (the same logo or placeholder under thousands of URLs): each worker keeps
the image signature of the last `RECENT_FILES` distinct file contents by sha256, so identical
bytes are decoded once per worker, not once per row.
"""

from __future__ import annotations

import hashlib
import io
from collections import OrderedDict
from typing import Any, ClassVar

import pyarrow as pa

from mmtok.engine.stage import RowStage
from mmtok.images import DEFAULT_MAX_PIXELS, image_input
from mmtok.images.decode import pixel_errors
from mmtok.images.phash import decode_for_hash, phash_image
from mmtok.images.probe import BadImage, open_image, open_source, probe_image
from mmtok.text.minhash import CaptionBands

SIGNATURE_FIELDS = [
    pa.field("sha256", pa.binary(32)),
    pa.field("phash", pa.uint64()),
    pa.field("phash_mirror", pa.uint64()),
    pa.field("pixels", pa.int64()),
    pa.field("caption_bands", pa.list_(pa.uint64())),
    pa.field("sig_reason", pa.string()),
    pa.field("sig_message", pa.string()),
    pa.field("sig_embedding", pa.list_(pa.float16())),  # --by embedding only (EmbeddingSignatures)
]
RECENT_FILES = 16_384  # about 200 bytes each: 3 MB per worker


def read_bytes(src: str | bytes) -> bytes:
    if isinstance(src, bytes):
        return src
    with open_source(src) as (fp, _):
        return fp.read()


class SignatureStage(RowStage):
    name: ClassVar[str] = "signature"
    input_columns: ClassVar[tuple[str, ...]] = ("image", "caption")

    def __init__(
        self,
        *,
        images: bool,
        captions: CaptionBands | None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        exif_transpose: bool = True,
    ):
        self.images = images
        self.captions = captions
        self.max_pixels = max_pixels
        self.exif_transpose = exif_transpose

    def output_fields(self) -> list[pa.Field]:
        return SIGNATURE_FIELDS

    def config(self) -> dict[str, Any]:
        caption = self.captions
        return {
            "images": self.images,
            "captions": None
            if caption is None
            else {
                "threshold": caption.threshold,
                "num_perm": caption.num_perm,
                "shingle_size": caption.shingle_size,
                "bands": caption.bands,
                "rows_per_band": caption.rows,
            },
            "exif_transpose": self.exif_transpose,
        }

    def setup(self) -> None:
        if self.captions is not None:
            self.captions.setup()
        # sha256 -> (pixels, phash, mirror) or the BadImage the bytes gave; least recent first
        self.recent: OrderedDict[bytes, tuple[int, int, int] | BadImage] = OrderedDict()

    def image_signature(self, data: bytes, digest: bytes) -> tuple[int, int, int]:
        """(pixels, phash, mirror hash) of encoded image bytes, computed once per distinct
        content among the last RECENT_FILES; raises BadImage (the same one again for a repeat)."""
        known = self.recent.get(digest)
        if known is None:
            try:
                fp = io.BytesIO(data)
                with pixel_errors(fp):
                    im = open_image(fp, self.max_pixels)
                    pixels = im.width * im.height  # open_image refused a bomb already
                    known = (pixels, *phash_image(decode_for_hash(im, self.exif_transpose)))
            except BadImage as e:  # kept without its traceback, whose frames hold the bytes
                known = BadImage(e.reason, e.message)
            self.recent[digest] = known
            if len(self.recent) > RECENT_FILES:
                self.recent.popitem(last=False)
        else:
            self.recent.move_to_end(digest)
        if isinstance(known, BadImage):
            raise BadImage(known.reason, known.message)
        return known

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {f.name: None for f in SIGNATURE_FIELDS}
        if self.captions is not None:
            out["caption_bands"] = self.captions.keys(row["caption"])
        try:
            if not self.images:  # captions only: the header gives the pixels (--keep largest)
                info = probe_image(image_input(row["image"]), self.max_pixels)
                out["pixels"] = info.width * info.height
                return out
            data = read_bytes(image_input(row["image"]))
            out["sha256"] = hashlib.sha256(data).digest()
            out["pixels"], out["phash"], out["phash_mirror"] = self.image_signature(
                data, out["sha256"]
            )
        except BadImage as e:  # the row is rejected in the writing pass, and clusters with none
            out.update(sha256=None, phash=None, phash_mirror=None, pixels=None, caption_bands=None)
            out["sig_reason"], out["sig_message"] = e.reason, e.message
        return out
