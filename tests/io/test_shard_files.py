"""The last steps of a shard file: fsync, rename, the sha256 of its bytes (hashed during the
fsync), and the page cache dropped for pixel shards."""

import hashlib
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmtok.io.shard_writer import CODEC_KEY, ShardSpec, SliceFiles, finish_and_hash


@pytest.mark.parametrize("drop_cache", [False, True])
def test_finish_and_hash_renames_and_hashes_the_file(tmp_path, drop_cache):
    data = os.urandom(3 << 20) + b"end"
    tmp, final = tmp_path / "a.parquet.tmp", tmp_path / "a.parquet"
    tmp.write_bytes(data)
    digest = finish_and_hash(tmp, final, drop_cache)
    assert digest == hashlib.sha256(data).hexdigest()
    assert not tmp.exists() and final.read_bytes() == data


def test_pixel_shards_drop_their_cache_and_keep_their_rows(tmp_path):
    pixels = pa.field("tiles", pa.large_binary(), metadata={CODEC_KEY: b"lz4"})
    schema = pa.schema([pa.field("id", pa.int64()), pixels])
    table = pa.table({"id": [1, 2], "tiles": [b"x" * 1000, b"y"]}, schema=schema)
    for schema_, drops in ((schema, True), (pa.schema([schema.field("id")]), False)):
        files = SliceFiles(ShardSpec(str(tmp_path), schema_), index=int(drops))
        assert files._drop_cache is drops
        files.add(table.select(schema_.names), [], 2)
        output = files.close()
        ((name, rows, digest),) = output.parts
        written = (tmp_path / name).read_bytes()
        assert rows == 2 and digest == hashlib.sha256(written).hexdigest()
        assert pq.read_table(tmp_path / name).equals(table.select(schema_.names))


def test_cast_for_write_equals_a_cast_of_every_column():
    """Only the columns whose type differs are cast: the same table (schema and metadata) and
    the same Parquet bytes as `RecordBatch.cast` of every column, with the image column's
    bytes to 32-bit offsets, nested structs, nulls, field and schema metadata, several
    batches and a batch of no rows."""
    import io

    from mmtok.io.hf_features import hf_schema
    from mmtok.io.shard_writer import cast_for_write

    n = 300
    image = pa.StructArray.from_arrays(
        [pa.array([b"\xff\xd8" * (i % 5) if i % 7 else None for i in range(n)], pa.large_binary()),
         pa.array([f"/d/{i}.jpg" if i % 3 else None for i in range(n)])],
        names=["bytes", "path"],
    )  # fmt: skip
    preset = pa.StructArray.from_arrays(
        [pa.array(range(n), pa.int64()), pa.array([None, "refused"] * (n // 2), pa.string())],
        names=["image_tokens", "error"],
    )
    table = pa.table(
        {
            "id": [f"r{i}" for i in range(n)],
            "image": image,
            "width": pa.array([i if i % 11 else None for i in range(n)], pa.int32()),
            "qwen2-vl": preset,
        }
    ).replace_schema_metadata({"k": "v"})
    schema = hf_schema(table.schema)
    schema = schema.set(2, schema.field("width").with_metadata({CODEC_KEY: b"zstd"}))
    assert table.schema.field("image").type != schema.field("image").type
    parts = [table.slice(0, 100), table.slice(100, 0), table.slice(100, 7), table.slice(107)]
    got = cast_for_write(parts, schema)
    want = pa.Table.from_batches([b.cast(schema) for b in pa.concat_tables(parts).to_batches()])
    assert got.equals(want) and got.schema.equals(want.schema, check_metadata=True)
    files = []
    for t in (got, want):
        buffer = io.BytesIO()
        pq.write_table(t, buffer, compression="zstd", row_group_size=64)
        files.append(buffer.getvalue())
    assert files[0] == files[1]
