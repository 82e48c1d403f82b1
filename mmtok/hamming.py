"""Exact search for 64-bit hashes within a Hamming radius: multi-index hashing (Norouzi, Punjani
and Fleet, "Fast search in Hamming space with multi-index hashing", CVPR 2012) with the
generalised pigeonhole principle (Qin, Wang, Xiao, "GPH: similarity search in Hamming space",
ICDE 2018).

The hash is cut into m blocks, block j with a radius t_j such that sum(t_j + 1) > d. Two
hashes within d bits then differ by at most t_j bits in some block j (were every block t_j + 1
or more apart, the hashes would be more than d apart). So each block is a table (rows sorted by
the block's value, a bucket per value) and every row probes, in each block, the values up to
t_j bits from its own; a candidate is kept when its whole hash is within d. Nothing within d is
missed, at any d.

Each unordered pair comes out once, with no set of pairs to deduplicate:
- a pair is taken only in the first block where its block distance is within t_j;
- in that block, from one probe only: inside a bucket, a row meets the rows after it; across a
  flip f, only the row whose lowest flipped bit is 0 probes (the other row has it set).

The number of blocks follows the rows: short blocks mean few probes and crowded buckets, long
blocks many probes and sparse buckets; `block_plan` takes the cheapest under a simple cost
model (probes plus candidates). With m >= 3 a block has at most 22 bits, so a bucket is found by
direct addressing. At the default distance (8) and a few million distinct hashes: 3 blocks of
22/21/21 bits, radius 2 each: 718 bucket values around each row, of which it probes about half;
below about a million (numba) or 100,000 (numpy), 4 blocks of 16 bits, radii 2/1/1/1.

Two kernels run the same plan: numba (a compiled loop, from NUMBA_FROM_ROWS distinct hashes
when numba is installed, `pip install mmtok[dedup]`; MMTOK_NO_NUMBA=1 turns it off) and numpy
(vectorised per probe, in bounded chunks). Both give the same pairs; the tests check both
against brute force. Both probe the rows in block-value order, so that neighbouring rows probe
neighbouring buckets and the bucket table is read nearly in sequence.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import combinations
from math import comb

import numpy as np

HASH_BITS = 64
MAX_BLOCK_BITS = 22  # a bucket table of 2**22 + 1 offsets: 32 MB
_CHUNK = 1 << 18  # candidate pairs expanded at a time by the numpy kernel
# cost of a candidate (read its hash, compare) relative to a probe (find a bucket), per kernel;
# fitted to CPU times at 0.3M-3M random hashes, 3 against 4 blocks
CANDIDATE_COST = {"numpy": 1.0, "numba": 0.2}
NUMBA_FROM_ROWS = 100_000  # below, numpy is as fast as loading numba and its compiled kernel


@dataclass(frozen=True)
class Block:
    shift: int  # the block is bits [shift, shift + bits) of the hash
    bits: int
    radius: int  # t_j; -1: the block is not probed

    def of(self, h: np.ndarray) -> np.ndarray:
        return ((h >> np.uint64(self.shift)) & np.uint64((1 << self.bits) - 1)).astype(np.int64)

    def probes(self) -> int:
        return sum(comb(self.bits, k) for k in range(self.radius + 1))


def split(m: int, max_distance: int) -> list[Block]:
    """m blocks of near-equal width with radii summing (plus one each) to max_distance + 1; the
    longer blocks take the larger radii."""
    width, longer = divmod(HASH_BITS, m)
    per, extra = divmod(max_distance + 1, m)
    blocks, shift = [], 0
    for j in range(m):
        bits = width + (j < longer)
        blocks.append(Block(shift, bits, per - 1 + (j < extra)))
        shift += bits
    return blocks


def block_plan(rows: int, max_distance: int, candidate_cost: float = 1.0) -> list[Block]:
    """The cheapest split of the hash for `rows` distinct random hashes searched within
    max_distance: probes, plus the candidates they meet (rows / 2**bits each) at
    `candidate_cost` per candidate."""

    def cost(blocks: list[Block]) -> float:
        return sum(
            b.probes() * (1 + candidate_cost * rows / 2**b.bits) for b in blocks if b.radius >= 0
        )

    splits = [split(m, max_distance) for m in range(3, max(3, max_distance + 1) + 1)]
    return min(splits, key=cost)


def flips(block: Block) -> Iterator[tuple[int, np.ndarray]]:
    """(lowest flipped bit, the masks with that lowest bit) of the block's non-zero probes
    (1 to `radius` bits flipped)."""
    for low in range(block.bits):
        masks = [
            (1 << low) | sum(1 << b for b in rest)
            for k in range(block.radius)
            for rest in combinations(range(low + 1, block.bits), k)
        ]
        if masks:
            yield low, np.array(masks, np.int64)


@dataclass
class Table:
    """One block's rows grouped by block value: `order` lists the rows bucket by bucket,
    `starts[v]:starts[v + 1]` is bucket v in it, `hashes` the rows' hashes in that order."""

    order: np.ndarray
    starts: np.ndarray
    hashes: np.ndarray

    @classmethod
    def build(cls, h: np.ndarray, block: Block) -> Table:
        keys = block.of(h)
        order = np.argsort(keys, kind="stable")
        starts = np.zeros((1 << block.bits) + 1, np.int32 if len(h) < 2**31 else np.int64)
        np.cumsum(np.bincount(keys, minlength=1 << block.bits), out=starts[1:])
        return cls(order, starts, h[order])


def near_pairs(
    table: np.ndarray, queries: np.ndarray, max_distance: int, same: bool, kernel: str = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    """(query index, table index) of every pair within `max_distance` bits, each once.

    `same`: the queries are the table itself; each unordered pair comes once, as (a, b) with
    a < b, and a row is not paired with itself."""
    if kernel == "auto":
        kernel = "numba" if len(table) >= NUMBA_FROM_ROWS and numba_available() else "numpy"
    blocks = block_plan(len(table), max_distance, CANDIDATE_COST[kernel])
    run = _numba_pairs if kernel == "numba" else _numpy_pairs
    a, b = run(table, queries, max_distance, same, blocks)
    if same:
        a, b = np.minimum(a, b), np.maximum(a, b)
    return a, b


def numba_available() -> bool:
    if os.environ.get("MMTOK_NO_NUMBA"):
        return False
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


# --- numpy kernel ----------------------------------------------------------------------------


def _earlier_block_holds(x: np.ndarray, blocks: list[Block], j: int) -> np.ndarray:
    """Whether the pair with xor `x` lies within the radius of a block before block j."""
    held = np.zeros(len(x), bool)
    for block in blocks[:j]:
        if block.radius >= 0:
            held |= np.bitwise_count(block.of(x)) <= block.radius
    return held


def _numpy_pairs(table, queries, max_distance, same, blocks):
    found_a, found_b = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    for j, block in enumerate(blocks):
        if block.radius < 0:
            continue
        t = Table.build(table, block)
        for query_ids, lo, count in _probes(t, block, block.of(queries), same):
            for q, r in _expand_near(t, queries, query_ids, lo, count, max_distance):
                if j:
                    keep = ~_earlier_block_holds(queries[q] ^ table[r], blocks, j)
                    q, r = q[keep], r[keep]
                found_a.append(q)
                found_b.append(r)
    return np.concatenate(found_a), np.concatenate(found_b)


def _probes(t: Table, block: Block, probe_base: np.ndarray, same: bool):
    """(query ids, first position, count) of the table rows each query meets, probe by probe."""
    if same:  # flip 0: each row with the rows after it in its bucket
        lo = np.arange(1, len(t.order) + 1)
        yield t.order, lo, t.starts[probe_base[t.order] + 1] - lo
    else:
        lo = t.starts[probe_base]
        yield np.arange(len(probe_base)), lo, t.starts[probe_base + 1] - lo
    # queries in block-value order: the probes of neighbouring queries fall in neighbouring
    # buckets, so the bucket table is read nearly in sequence instead of at random
    by_value = t.order if same else np.argsort(probe_base, kind="stable")
    sorted_base = probe_base[by_value]
    for low, masks in flips(block):
        ids = by_value[(sorted_base >> low) & 1 == 0] if same else by_value
        base = probe_base[ids]
        for mask in masks.tolist():
            p = base ^ mask
            lo = t.starts[p]
            count = t.starts[p + 1] - lo
            hit = np.flatnonzero(count)
            yield ids[hit], lo[hit], count[hit]


def _expand_near(t: Table, queries, query_ids, lo, count, max_distance):
    """(query, row) within max_distance among the `count` rows from `lo` in the table's order
    that each query meets, expanded in chunks of about _CHUNK candidates."""
    cum = np.cumsum(count)
    begin = 0
    while begin < len(query_ids):
        end = int(np.searchsorted(cum, (cum[begin - 1] if begin else 0) + _CHUNK, "right"))
        end = max(end, begin + 1)
        c = count[begin:end]
        q = np.repeat(query_ids[begin:end], c)
        offsets = np.arange(len(q)) - np.repeat(np.cumsum(c) - c, c)
        pos = np.repeat(lo[begin:end], c) + offsets
        keep = np.bitwise_count(queries[q] ^ t.hashes[pos]) <= max_distance
        yield q[keep], t.order[pos[keep]]
        begin = end


# --- numba kernel ----------------------------------------------------------------------------


def numba_block_args(table, queries, blocks: list[Block], j: int, max_distance: int, same: bool):
    """The arguments of the numba kernel `block_pairs` for block j, before the query range
    (lo, hi): the same for a thread here and for a Ray task (`mmtok.engine.ray_dedup`)."""
    from mmtok._hamming_numba import occupancy

    block = blocks[j]
    t = Table.build(table, block)
    groups = list(flips(block))
    masks = np.concatenate([np.zeros(1, np.int64)] + [m for _, m in groups])
    group_starts = np.cumsum([1] + [len(m) for _, m in groups]).astype(np.int64)
    group_lows = np.array([low for low, _ in groups], np.int64)
    # queries in block-value order: neighbouring queries probe neighbouring buckets
    by_value = t.order if same else np.argsort(block.of(queries), kind="stable")
    shifts = np.array([b.shift for b in blocks], np.int64)
    widths = np.array([b.bits for b in blocks], np.int64)
    radii = np.array([b.radius for b in blocks], np.int64)
    return (
        queries, by_value, t.order, t.starts, occupancy(t.starts), t.hashes, masks,
        group_starts, group_lows, shifts, widths, radii, j, max_distance, same,
    )  # fmt: skip


def _numba_pairs(table, queries, max_distance, same, blocks):
    from concurrent.futures import ThreadPoolExecutor

    from mmtok._hamming_numba import block_pairs  # compiled once, cached on disk

    found_a, found_b = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    threads = max(1, min(os.cpu_count() or 1, 8))
    bounds = np.linspace(0, len(queries), 4 * threads + 1).astype(np.int64).tolist()
    ranges = list(zip(bounds[:-1], bounds[1:], strict=True))
    with ThreadPoolExecutor(threads) as pool:  # the kernel releases the GIL
        for j, block in enumerate(blocks):
            if block.radius < 0:
                continue
            args = numba_block_args(table, queries, blocks, j, max_distance, same)
            jobs = [pool.submit(block_pairs, *args, lo, hi) for lo, hi in ranges]
            for job in jobs:
                a, b = job.result()
                found_a.append(a)
                found_b.append(b)
    return np.concatenate(found_a), np.concatenate(found_b)
