"""clip-retrieval's embedding layout, written from an `mmtok embed` output folder.

`img_emb/img_emb_NNNNN.npy` (float16, one row per kept row), `text_emb/text_emb_NNNNN.npy` and
`metadata/metadata_NNNNN.parquet` (`image_path`, `caption`, then mmtok's `id` and `clip_score`),
one of each per output shard, in the shards' row order
(`rom1504/clip-retrieval:clip_retrieval/clip_inference/writer.py`). autofaiss and clip-retrieval's
own tools read these folders as they are. Rows without a caption get a zero text vector.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mmtok.io.layout import SIDE_DIR

EXPORT_DIR = "clip_retrieval"


def vectors(column: pa.ChunkedArray | pa.Array, dim: int) -> np.ndarray:
    """A `fixed_size_list<float16>[dim]` column as an (N, dim) float16 array (nulls -> zeros)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if column.null_count:  # flatten() skips null rows; give them zeros instead
        column = pc.fill_null(column, pa.scalar([0.0] * dim, column.type))
    return column.flatten().to_numpy(zero_copy_only=False).astype(np.float16).reshape(-1, dim)


def export_clip_retrieval(out_dir: str | Path) -> Path:
    """Write the layout under `OUT/__mmtok__/clip_retrieval/`; returns that folder."""
    out_dir = Path(out_dir)
    target = out_dir / SIDE_DIR / EXPORT_DIR
    parts = sorted(out_dir.glob("part-*.parquet"))
    for i, part in enumerate(parts):
        table = pq.read_table(part)
        name = f"{i:05d}"
        for column, folder in (("image_embedding", "img_emb"), ("text_embedding", "text_emb")):
            if column in table.column_names:
                dim = table.schema.field(column).type.list_size
                (target / folder).mkdir(parents=True, exist_ok=True)
                np.save(target / folder / f"{folder}_{name}.npy", vectors(table[column], dim))
        image = table.column("image").combine_chunks()
        metadata = {"image_path": image.field("path"), "caption": table.column("caption")}
        metadata["id"] = table.column("id")
        if "clip_score" in table.column_names:
            metadata["clip_score"] = table.column("clip_score")
        (target / "metadata").mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(metadata), target / "metadata" / f"metadata_{name}.parquet")
    return target
