"""Dedup's candidate searches across a Ray cluster: the same pairs as `mmtok.dedup` finds in
one process, so the clusters are exactly the local engine's.

Clustering keeps its shape (`mmtok.dedup.find_clusters`): exact collapses (same file, same
hash, same band keys) by sorting in the driver, then the two searches that grow with the data,
here as Ray Data group-bys, then checks and connected components on the compact pair list in
the driver.

- Near images, by the pigeonhole blocks of `mmtok.hamming`: the 64-bit hash is cut into m
  >= d + 1 blocks with radius 0, so two hashes within d bits agree exactly on at least one
  block. Each row is sent to one group per block (block j, its value there); in each group the
  exact local search (`mmtok.hamming.near_pairs`) finds the pairs within d, and a pair is kept
  only in the first block where the two agree, so it comes out once, as locally.
- Caption bands: each row goes to one group per band (band, key mod P); in each group rows
  with equal keys are paired (`mmtok.dedup.band_candidates`), as locally.

Groups are coarse on purpose (a few thousand per search at most): Ray calls the group function
once per group, and a call per distinct 64-bit key would cost more than the search.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa

from mmtok.dedup import Clusters, Pairs, Search, Settings, Signatures, find_clusters
from mmtok.dedup import band_candidates as local_band_candidates
from mmtok.engine.ray_engine import connect
from mmtok.hamming import HASH_BITS, Block, near_pairs, split

MAX_GROUP_BITS = 11  # blocks of at most 11 bits: at most 2,048 groups per block
BAND_GROUPS = 256  # groups per caption band (key mod 256)


def ray_search(address: str | None = None, partitions: int | None = None) -> Search:
    """Both candidate searches on the Ray cluster at `address` (a local Ray when None).
    `partitions`: shuffle partitions per group-by (default: the cluster's CPUs)."""
    ray = connect(address)
    partitions = partitions or max(2, int(ray.cluster_resources().get("CPU", 2)))
    return Search(
        hamming_pairs=partial(hamming_pairs, partitions=partitions),
        band_candidates=partial(band_candidates, partitions=partitions),
    )


def find_clusters_on_ray(
    sig: Signatures, settings: Settings, address: str | None = None
) -> Clusters:
    return find_clusters(sig, settings, ray_search(address))


def search_blocks(max_distance: int) -> list[Block]:
    """Blocks of radius 0 (blocks of radius -1 are not searched), enough of them that a pair
    within `max_distance` agrees exactly on one, and narrow enough that the groups are few."""
    m = max(max_distance + 1, -(-HASH_BITS // MAX_GROUP_BITS))
    return [b for b in split(m, max_distance) if b.radius >= 0]


def _dataset(columns: dict[str, np.ndarray], partitions: int) -> Any:
    import ray.data

    table = pa.table(columns)
    step = max(1, -(-table.num_rows // partitions))
    return ray.data.from_arrow([table.slice(i, step) for i in range(0, table.num_rows, step)])


def _collect(dataset: Any) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        if len(batch["a"]):
            yield batch["a"].astype(np.int64), batch["b"].astype(np.int64)


# --- near images ------------------------------------------------------------------------------


def hamming_pairs(
    table: np.ndarray, queries: np.ndarray, max_distance: int, same: bool, *, partitions: int
) -> Pairs:
    """As `mmtok.dedup.hamming_pairs`, with the search spread over the cluster by block."""
    if len(table) == 0 or len(queries) == 0:
        return Pairs.empty()
    blocks = search_blocks(max_distance)
    index = np.arange(len(table), dtype=np.int64)
    columns = {"i": index, "h": table, "role": np.zeros(len(table), np.int8)}
    if not same:  # role 1: the queries (mirror hashes), searched against the table's rows
        columns = {
            "i": np.concatenate([index, np.arange(len(queries), dtype=np.int64)]),
            "h": np.concatenate([table, queries]),
            "role": np.concatenate([columns["role"], np.ones(len(queries), np.int8)]),
        }
    grouped = (
        _dataset(columns, partitions)
        .map_batches(_by_block, fn_kwargs={"blocks": blocks}, batch_format="pyarrow")
        .groupby(["block", "value"], num_partitions=partitions)
        .map_groups(
            _block_pairs,
            fn_kwargs={"blocks": blocks, "max_distance": max_distance, "same": same},
            batch_format="numpy",
        )
    )
    found = list(_collect(grouped))
    a = np.concatenate([p[0] for p in found]) if found else np.empty(0, np.int64)
    b = np.concatenate([p[1] for p in found]) if found else np.empty(0, np.int64)
    return Pairs(a, b, np.bitwise_count(queries[a] ^ table[b]).astype(np.int64))


def _by_block(rows: pa.Table, *, blocks: list[Block]) -> pa.Table:
    """Each row once per block, keyed by (block, the row's value in it)."""
    h = rows.column("h").to_numpy()
    parts = [
        rows.append_column("block", pa.array(np.full(len(h), j, np.int16))).append_column(
            "value", pa.array(block.of(h))
        )
        for j, block in enumerate(blocks)
    ]
    return pa.concat_tables(parts)


def _block_pairs(
    group: dict[str, np.ndarray], *, blocks: list[Block], max_distance: int, same: bool
) -> dict[str, np.ndarray]:
    """The pairs within `max_distance` among one group's rows (all equal in block j), each
    kept only when j is the first block the two agree on."""
    j = int(group["block"][0])
    role, index, h = group["role"], group["i"], group["h"].astype(np.uint64)
    t, q = (role == 0, role == 0) if same else (role == 0, role == 1)
    table_rows, query_rows = index[t], index[q]
    table_h, query_h = h[t], h[q]
    if len(table_h) == 0 or len(query_h) == 0 or (same and len(table_h) < 2):
        return {"a": np.empty(0, np.int64), "b": np.empty(0, np.int64)}
    a, b = near_pairs(table_h, query_h, max_distance, same)
    x = query_h[a] ^ table_h[b]
    first = np.ones(len(a), bool)
    for block in blocks[:j]:
        first &= block.of(x) != 0
    a, b = query_rows[a[first]], table_rows[b[first]]
    if same:
        a, b = np.minimum(a, b), np.maximum(a, b)
    return {"a": a, "b": b}


# --- caption bands ----------------------------------------------------------------------------


def band_candidates(
    bands: np.ndarray, rows: np.ndarray, *, partitions: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """As `mmtok.dedup.band_candidates`: row pairs sharing a band key, once per band."""
    if len(rows) == 0:
        return
    columns = {"row": rows.astype(np.int64)}
    columns.update({f"band{k}": bands[:, k] for k in range(bands.shape[1])})
    grouped = (
        _dataset(columns, partitions)
        .map_batches(_by_band, batch_format="pyarrow")
        .groupby(["band", "group"], num_partitions=partitions)
        .map_groups(_band_pairs, batch_format="numpy")
    )
    yield from _collect(grouped)


def _by_band(rows: pa.Table) -> pa.Table:
    """Each row once per band, keyed by (band, key mod BAND_GROUPS)."""
    row = rows.column("row")
    parts = []
    for k, name in enumerate(n for n in rows.column_names if n.startswith("band")):
        key = rows.column(name).to_numpy()
        parts.append(
            pa.table(
                {
                    "row": row,
                    "band": np.full(len(key), k, np.int16),
                    "group": (key % np.uint64(BAND_GROUPS)).astype(np.int16),
                    "key": key,
                }
            )
        )
    return pa.concat_tables(parts)


def _band_pairs(group: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    keys = group["key"].astype(np.uint64)[:, None]
    found = list(local_band_candidates(keys, group["row"].astype(np.int64)))
    if not found:
        return {"a": np.empty(0, np.int64), "b": np.empty(0, np.int64)}
    return {"a": np.concatenate([a for a, _ in found]), "b": np.concatenate([b for _, b in found])}
