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
