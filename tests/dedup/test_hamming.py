"""Exact Hamming-radius search (mmtok.hamming): both kernels against brute force at every
distance the CLI accepts, including pairs the old 4 x 16-bit probe scheme missed (two bits
apart in each of the four blocks), and clusters equal to those of brute-force pairs."""

import numpy as np
import pyarrow as pa
import pytest

from mmtok.duplicates import Settings, Signatures, components, find_clusters
from mmtok.hamming import HASH_BITS, MAX_BLOCK_BITS, block_plan, near_pairs, numba_available

KERNELS = [
    "numpy",
    pytest.param(
        "numba", marks=pytest.mark.skipif(not numba_available(), reason="numba not installed")
    ),
]


def planted_hashes(n: int = 1500, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64) << np.uint64(1)
    for i in range(0, 400, 2):  # pairs at 0..13 bits
        bits = rng.choice(64, int(rng.integers(0, 14)), replace=False)
        h[i + 1] = h[i] ^ np.uint64(int(sum(1 << int(b) for b in bits)))
    # crowded block values: 300 hashes share their low 16 bits, 100 more are one bit off them
    h[400:700] = (h[400:700] & ~np.uint64(0xFFFF)) | np.uint64(0x1234)
    h[700:800] = (h[700:800] & ~np.uint64(0xFFFF)) | np.uint64(0x1234 ^ 0x40)
    h[800:850] = h[400:450] ^ np.uint64(0b1011 << 20)  # 3 bits away, the crowded block equal
    # 8 bits away as 2 bits in each 16-bit quarter: missed by the old search at distance 8
    spread = sum(0b11 << (16 * q + 3 * q) for q in range(4))
    h[850:900] = h[900:950] ^ np.uint64(spread)
    return h


def as_set(a: np.ndarray, b: np.ndarray) -> set:
    pairs = list(zip(a.tolist(), b.tolist(), strict=True))
    assert len(pairs) == len(set(pairs))  # each pair once
    return set(pairs)


@pytest.mark.parametrize("kernel", KERNELS)
def test_self_search_is_brute_force_at_every_distance(kernel):
    h = planted_hashes()
    d = np.bitwise_count(h[:, None] ^ h[None, :])
    iu = np.triu_indices(len(h), 1)
    for k in range(17):
        a, b = near_pairs(h, h, k, same=True, kernel=kernel)
        assert (a < b).all()
        truth = set(zip(*(x[d[iu] <= k].tolist() for x in iu), strict=True))
        assert as_set(a, b) == truth, k


@pytest.mark.parametrize("kernel", KERNELS)
def test_search_of_other_queries_is_brute_force_at_every_distance(kernel):
    h = planted_hashes()
    queries = h[::3] ^ np.uint64(0b101)
    d = np.bitwise_count(queries[:, None] ^ h[None, :])
    for k in range(17):
        a, b = near_pairs(h, queries, k, same=False, kernel=kernel)
        assert as_set(a, b) == set(zip(*(x.tolist() for x in np.nonzero(d <= k)), strict=True))


@pytest.mark.parametrize("rows", [10, 100_000, 10_000_000])
@pytest.mark.parametrize("distance", range(17))
def test_every_plan_covers_its_distance(rows, distance):
    blocks = block_plan(rows, distance)
    assert sum(b.bits for b in blocks) == HASH_BITS
    assert all(b.bits <= MAX_BLOCK_BITS for b in blocks)
    assert sum(b.radius + 1 for b in blocks) > distance  # the pigeonhole that makes it exact
    assert [b.shift for b in blocks] == np.cumsum([0] + [b.bits for b in blocks[:-1]]).tolist()


def test_default_plan_for_a_million_rows():
    assert [(b.bits, b.radius) for b in block_plan(1_000_000, 8)] == [(22, 2), (21, 2), (21, 2)]


def rotate(h: np.ndarray) -> np.ndarray:
    return (h << np.uint64(17)) | (h >> np.uint64(47))


@pytest.mark.parametrize("kernel", KERNELS)
def test_clusters_are_those_of_brute_force_pairs(kernel, monkeypatch):
    import mmtok.duplicates

    real = mmtok.duplicates.near_pairs
    monkeypatch.setattr(mmtok.duplicates, "near_pairs", lambda *a: real(*a, kernel=kernel))
    rng = np.random.default_rng(5)
    n = 2500
    h = planted_hashes(n, seed=7)
    h[rng.integers(0, n, 300)] = h[rng.integers(0, n, 300)]  # equal hashes, collapsed first
    # a mirror hash is a function of the picture: here a rotation of the hash; 100 rows are
    # mirror images (a few bits off) of others
    h[1000:1100] = rotate(h[1100:1200]) ^ np.uint64(0b10101)
    mirror = rotate(h)
    table = pa.table(
        {
            "id": [f"r{i}" for i in range(n)],
            "caption": pa.nulls(n, pa.string()),
            "sha256": pa.array([i.to_bytes(32, "big") for i in range(n)], pa.binary(32)),
            "phash": pa.array(h, pa.uint64()),
            "phash_mirror": pa.array(mirror, pa.uint64()),
            "pixels": pa.array(rng.integers(1, 10**6, n)),
            "caption_bands": pa.nulls(n, pa.list_(pa.uint64())),
            "sig_reason": pa.nulls(n, pa.string()),
            "sig_message": pa.nulls(n, pa.string()),
        }
    )
    sig = Signatures.from_table(table, False, 0)
    for distance, use_mirror in ((8, False), (8, True), (12, False)):
        clusters = find_clusters(sig, Settings(max_distance=distance, mirror=use_mirror))
        d = np.bitwise_count(h[:, None] ^ h[None, :])
        if use_mirror:
            d = np.minimum(d, np.bitwise_count(mirror[:, None] ^ h[None, :]))
            d = np.minimum(d, d.T)
        a, b = np.nonzero(np.triu(d <= distance, 1))
        assert (clusters.label == components(n, a, b)).all(), (distance, use_mirror)


def test_same_file_pairs_group_on_the_whole_digest_when_64_bits_collide():
    from mmtok.duplicates import same_file_pairs

    sha = np.zeros((6, 4), np.uint64)
    sha[:, 0] = [7, 7, 9, 7, 9, 1]
    sha[:, 1] = [1, 1, 1, 2, 1, 1]  # row 3 shares the first 64 bits with rows 0 and 1 only
    pairs = same_file_pairs(sha, np.arange(6))
    assert sorted(zip(pairs.a.tolist(), pairs.b.tolist(), strict=True)) == [(1, 0), (4, 2)]
    sha[3, 1] = 1
    pairs = same_file_pairs(sha, np.array([0, 2, 3, 4]))
    assert sorted(zip(pairs.a.tolist(), pairs.b.tolist(), strict=True)) == [(3, 0), (4, 2)]
