"""InlineImageBytes (`--image-bytes`): each kept row carries its image's encoded bytes, so the
output is self-contained: it can be moved, uploaded or read on another machine."""

from __future__ import annotations

from typing import Any, ClassVar

import pyarrow as pa

from mmtok.engine.stage import RowStage
from mmtok.io.schema import IMAGE_TYPE
from mmtok.reasons import Reason, RowRejected


class InlineImageBytes(RowStage):
    name: ClassVar[str] = "image_bytes"
    input_columns: ClassVar[tuple[str, ...]] = ("image",)

    def output_fields(self) -> list[pa.Field]:
        return [pa.field("image", IMAGE_TYPE)]

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        image = row["image"]
        if image is None or image.get("bytes") is not None or not image.get("path"):
            return {"image": image}
        path = image["path"]
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise RowRejected(Reason.MISSING_FILE, f"{path} is gone") from None
        except OSError as e:
            raise RowRejected(Reason.READ_ERROR, f"{path}: {e.strerror or e}") from None
        return {"image": {"path": path, "bytes": data}}
