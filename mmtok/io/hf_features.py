"""Hugging Face `datasets` feature metadata, so `load_dataset(OUT)` shows images, not dicts.

`datasets` keeps its features as JSON in the Parquet schema metadata under b"huggingface":
`{"info": {"features": {"image": {"_type": "Image"}, ...}}}` (datasets/arrow_writer.py,
`ArrowWriter._build_metadata`). When it reads a file, `Features.from_arrow_schema` takes a
feature from that metadata only where the column's Arrow type equals the feature's own, so the
image column is written as the `Image` feature's storage type, struct<bytes: binary, path:
string>, in that field order. Columns without an entry get a feature from their Arrow type.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

HF_KEY = b"huggingface"
# datasets.features.Image.pa_type
HF_IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
IMAGE_FEATURE = {"_type": "Image"}


def inherited_features(parquet_paths: list[str]) -> dict[str, Any]:
    """The features of the inputs' own `datasets` metadata (a ClassLabel, a Sequence...)."""
    features: dict[str, Any] = {}
    for path in parquet_paths:
        try:
            meta = pq.read_schema(path).metadata or {}
            found = json.loads(meta[HF_KEY])["info"]["features"] if HF_KEY in meta else None
        except (OSError, ValueError, KeyError, TypeError, pa.ArrowException):
            continue
        if isinstance(found, dict):
            for name, feature in found.items():
                features.setdefault(name, feature)
    return features


def hf_schema(schema: pa.Schema, inherited: dict[str, Any] | None = None) -> pa.Schema:
    """`schema` as written: the image column in the `Image` layout, with the features metadata.

    Inherited features are kept for the columns that passed through; mmtok's own columns get
    theirs from their Arrow type."""
    index = schema.get_field_index("image")
    if index < 0:
        return schema
    schema = schema.set(index, pa.field("image", HF_IMAGE_TYPE))
    mmtok_names = {"id", "source", "caption"}
    features = {
        name: feature
        for name, feature in (inherited or {}).items()
        if name in schema.names and name not in mmtok_names and name != "image"
    }
    features["image"] = IMAGE_FEATURE
    info = {"info": {"features": {n: features[n] for n in schema.names if n in features}}}
    return schema.with_metadata({**(schema.metadata or {}), HF_KEY: json.dumps(info).encode()})


def to_hf_table(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Cast `table` to a schema made by `hf_schema` (the struct cast matches fields by name)."""
    return table.cast(schema)
