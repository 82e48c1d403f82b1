"""Dedup's candidate searches across a Ray cluster: the same pairs as `mmtok.duplicates` finds in
one process, so the clusters are exactly the local engine's.

Clustering keeps its shape (`mmtok.duplicates.find_clusters`): exact collapses (same file, same
hash, same band keys) by sorting in the driver, then the two searches that grow with the data,
here as Ray tasks, then checks and connected components on the compact pair list in the driver.
The hashes (8 bytes a row) or band keys go to the object store once; each node maps them.

- Near images, with numba installed: the local multi-index search itself, cut into tasks.
  `mmtok.hamming.near_pairs` plans blocks for the whole table and runs its kernel block by
  block over ranges of the queries; here one task runs one (block, query range), so the work
  is the local engine's, spread over the cluster (each task builds its block's table once).
- Near images without numba, by pigeonhole blocks: the 64-bit hash is cut into m >= d + 1
  blocks with radius 0, so two hashes within d bits agree exactly on at least one block. One
  task per (block j, range of its values) groups its rows by their value in block j and
  searches each group exactly (`mmtok.hamming.near_pairs`); a pair is kept only in the first
  block where the two agree, so it comes out once, as locally. (At 10M signatures the groups
  hold ~78,000 rows each and this costs several times the numba path.)
- Caption bands: one task per (band, key mod P) pairs the rows with equal keys
  (`mmtok.duplicates.band_candidates`), as locally.

A Ray Data group-by (a hash shuffle of each row once per block, a call per group) found the
same pairs in 205 s against 94 s for this on 1M signatures (2 CPUs): the rows are 8 bytes, so
moving them costs more than searching them.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

import numpy as np

from mmtok.duplicates import Clusters, Pairs, Search, Settings, Signatures, find_clusters
from mmtok.duplicates import band_candidates as local_band_candidates
from mmtok.engine.ray_engine import connect
from mmtok.hamming import (
    CANDIDATE_COST,
    HASH_BITS,
    Block,
    block_plan,
    near_pairs,
    numba_available,
    split,
)

MAX_GROUP_BITS = 11  # blocks of at most 11 bits: at most 2,048 groups per block
BRUTE_FORCE_CELLS = 1 << 18  # a group this small (queries x rows) is compared pair by pair
NUMBA_FROM_ROWS = 5_000  # a group this large is searched with the numba kernel, when installed


def ray_search(address: str | None = None, partitions: int | None = None) -> Search:
    """Both candidate searches on the Ray cluster at `address` (a local Ray when None).
    `partitions`: the CPUs to plan tasks for (default: the cluster's); about two tasks each."""
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


def _run(ray: Any, function: Any, shared: list[Any], jobs: list[tuple]) -> list[tuple]:
    """`function(*shared, *job)` for each job as Ray tasks; the shared arrays go to the object
    store once (each node maps them, no copy per task)."""
    refs = [ray.put(x) for x in shared]
    remote = ray.remote(num_cpus=1, max_retries=3)(function)
    return ray.get([remote.remote(*refs, *job) for job in jobs])


def _ranges(size: int, parts: int) -> list[tuple[int, int]]:
    bounds = np.linspace(0, size, parts + 1).astype(np.int64).tolist()
    return [(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True) if hi > lo]


# --- near images ------------------------------------------------------------------------------


def hamming_pairs(
    table: np.ndarray, queries: np.ndarray, max_distance: int, same: bool, *, partitions: int
) -> Pairs:
    """As `mmtok.duplicates.hamming_pairs`, with the search spread over the cluster: one task per
    (block, range of the block's values)."""
    if len(table) == 0 or len(queries) == 0:
        return Pairs.empty()
    ray = connect(None)
    if numba_available():  # decided here: the workers' kernel is the driver's choice
        a, b = _kernel_search(ray, table, queries, max_distance, same, partitions)
        return Pairs(a, b, np.bitwise_count(queries[a] ^ table[b]).astype(np.int64))
    blocks = search_blocks(max_distance)
    parts = max(1, -(-2 * partitions // len(blocks)))  # about two tasks per CPU
    jobs = [
        (blocks, j, lo, hi, max_distance, same)
        for j, block in enumerate(blocks)
        for lo, hi in _ranges(1 << block.bits, parts)
    ]
    found = _run(ray, _block_pairs, [table, queries], jobs)
    a = np.concatenate([np.empty(0, np.int64), *(f[0] for f in found)])
    b = np.concatenate([np.empty(0, np.int64), *(f[1] for f in found)])
    return Pairs(a, b, np.bitwise_count(queries[a] ^ table[b]).astype(np.int64))


def _kernel_search(
    ray: Any, table: np.ndarray, queries: np.ndarray, max_distance: int, same: bool, partitions: int
) -> tuple[np.ndarray, np.ndarray]:
    """The local multi-index search (`mmtok.hamming.near_pairs`, numba kernel) cut into tasks:
    one per (block of its plan, range of the queries). The plan is the one near_pairs makes
    for the whole table, and the kernel keeps a pair only in the first block that holds it,
    so the tasks' pairs are disjoint and together exactly near_pairs' pairs."""
    blocks = block_plan(len(table), max_distance, CANDIDATE_COST["numba"])
    searched = [j for j, block in enumerate(blocks) if block.radius >= 0]
    parts = max(1, -(-2 * partitions // len(searched)))  # about two tasks per CPU
    jobs = [
        (blocks, j, lo, hi, max_distance, same)
        for j in searched
        for lo, hi in _ranges(len(queries), parts)
    ]
    found = _run(ray, _kernel_block_pairs, [table, queries], jobs)
    a = np.concatenate([np.empty(0, np.int64), *(f[0] for f in found)])
    b = np.concatenate([np.empty(0, np.int64), *(f[1] for f in found)])
    return (np.minimum(a, b), np.maximum(a, b)) if same else (a, b)


def _kernel_block_pairs(
    table: np.ndarray,
    queries: np.ndarray,
    blocks: list[Block],
    j: int,
    lo: int,
    hi: int,
    max_distance: int,
    same: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Block j of `mmtok.hamming._numba_pairs` for the queries at [lo, hi) of its query order
    (the same arguments, built the same way; one thread: the task holds one CPU)."""
    from mmtok._hamming_numba import block_pairs
    from mmtok.hamming import numba_block_args

    return block_pairs(*numba_block_args(table, queries, blocks, j, max_distance, same), lo, hi)


def _groups(values: np.ndarray, lo: int, hi: int) -> dict[int, np.ndarray]:
    """Rows by value, for the values in [lo, hi)."""
    rows = np.flatnonzero((values >= lo) & (values < hi))
    rows = rows[np.argsort(values[rows], kind="stable")]
    keys, starts = np.unique(values[rows], return_index=True)
    return dict(zip(keys.tolist(), np.split(rows, starts[1:]), strict=True))


def _block_pairs(
    table: np.ndarray,
    queries: np.ndarray,
    blocks: list[Block],
    j: int,
    lo: int,
    hi: int,
    max_distance: int,
    same: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """The pairs within `max_distance` among the rows equal in block j to a value in [lo, hi),
    group by group, each kept only when j is the first block the two agree on."""
    block = blocks[j]
    table_groups = _groups(block.of(table), lo, hi)
    query_groups = table_groups if same else _groups(block.of(queries), lo, hi)
    found_a, found_b = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    for value, query_rows in query_groups.items():
        table_rows = table_groups.get(value)
        if table_rows is None or (same and len(table_rows) < 2):
            continue
        a, b = _group_pairs(table[table_rows], queries[query_rows], max_distance, same)
        a, b = query_rows[a], table_rows[b]
        x, first = queries[a] ^ table[b], np.ones(len(a), bool)
        for earlier in blocks[:j]:
            first &= earlier.of(x) != 0
        found_a.append(a[first])
        found_b.append(b[first])
    a, b = np.concatenate(found_a), np.concatenate(found_b)
    return (np.minimum(a, b), np.maximum(a, b)) if same else (a, b)


def _group_pairs(
    table: np.ndarray, queries: np.ndarray, max_distance: int, same: bool
) -> tuple[np.ndarray, np.ndarray]:
    """As `near_pairs`: all pairs for a small group (its index tables would cost more than
    the pairs), the multi-index search for a large one."""
    if len(table) * len(queries) > BRUTE_FORCE_CELLS:
        # numba from far fewer rows than in one process: a Ray worker loads it once for all
        # its groups (a group of 10M hashes by 7-bit blocks holds ~78,000 rows)
        fast = len(table) >= NUMBA_FROM_ROWS and numba_available()
        return near_pairs(table, queries, max_distance, same, "numba" if fast else "numpy")
    a, b = np.nonzero(np.bitwise_count(queries[:, None] ^ table[None, :]) <= max_distance)
    if same:  # each unordered pair once, a row not with itself
        a, b = a[a < b], b[a < b]
    return a, b


# --- caption bands ----------------------------------------------------------------------------


def band_candidates(
    bands: np.ndarray, rows: np.ndarray, *, partitions: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """As `mmtok.duplicates.band_candidates`: row pairs sharing a band key, once per band; one task
    per (band, key mod P)."""
    if len(rows) == 0:
        return
    ray = connect(None)
    parts = max(1, -(-2 * partitions // bands.shape[1]))
    jobs = [(k, part, parts) for k in range(bands.shape[1]) for part in range(parts)]
    for a, b in _run(ray, _band_pairs, [bands, rows], jobs):
        if len(a):
            yield a, b


def _band_pairs(
    bands: np.ndarray, rows: np.ndarray, k: int, part: int, parts: int
) -> tuple[np.ndarray, np.ndarray]:
    keys = bands[:, k]
    mine = np.flatnonzero(keys % np.uint64(parts) == part)
    found = list(local_band_candidates(keys[mine][:, None], rows[mine]))
    if not found:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate([a for a, _ in found]), np.concatenate([b for _, b in found])
