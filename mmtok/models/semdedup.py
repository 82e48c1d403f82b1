"""Semantic near-duplicates over stored embeddings: pairs with cosine >= threshold.

SemDeDup's plan (Abbas et al., 2023): spherical k-means cuts the vectors into clusters, then
every pair inside a cluster is compared exactly. A true pair split across a cluster boundary is
missed; each vector therefore joins its `probes` nearest clusters (multi-probe), which recovers
most of those at `probes` times the work. `exact_pairs` is the brute-force reference the recall
is measured against. Pure numpy; the pairs feed the same connected components and keep policies
as the other dedup modes (`mmtok.duplicates.Pairs`, `components`, `choose_kept`).
"""

from __future__ import annotations

import numpy as np

from mmtok.duplicates import Pairs

ROWS_PER_BLOCK = 2048  # rows of a similarity block at a time: 2048 x 2048 float32 = 16 MB


def _unit(vectors: np.ndarray) -> np.ndarray:
    v = np.asarray(vectors, np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.where(norms == 0, 1, norms)


def _pairs_in(v: np.ndarray, rows: np.ndarray, threshold: float) -> tuple[np.ndarray, ...]:
    """Exact pairs among `rows` (earlier row first) with cosine >= threshold, one
    ROWS_PER_BLOCK square of the similarity matrix at a time (bounded memory)."""
    found_a, found_b, found_s = [], [], []
    for start in range(0, len(rows), ROWS_PER_BLOCK):
        block = rows[start : start + ROWS_PER_BLOCK]
        for other in range(start, len(rows), ROWS_PER_BLOCK):
            columns = rows[other : other + ROWS_PER_BLOCK]
            sims = v[block] @ v[columns].T
            i, j = np.nonzero(sims >= threshold)
            if other == start:  # the diagonal square: each pair once, no row with itself
                keep = j > i
                i, j = i[keep], j[keep]
            found_a.append(block[i])
            found_b.append(columns[j])
            found_s.append(sims[i, j])
    if not found_a:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    return np.concatenate(found_a), np.concatenate(found_b), np.concatenate(found_s)


def _as_pairs(a: np.ndarray, b: np.ndarray, sims: np.ndarray) -> Pairs:
    low, high = np.minimum(a, b), np.maximum(a, b)
    order = np.lexsort((high, low))
    low, high, sims = low[order], high[order], sims[order]
    first = np.ones(len(low), bool)
    first[1:] = (low[1:] != low[:-1]) | (high[1:] != high[:-1])
    return Pairs(low[first], high[first], (1.0 - sims[first]).astype(np.float32))


def exact_pairs(vectors: np.ndarray, threshold: float) -> Pairs:
    """Every pair with cosine >= threshold (brute force; the reference)."""
    v = _unit(vectors)
    return _as_pairs(*_pairs_in(v, np.arange(len(v)), threshold))


def spherical_kmeans(v: np.ndarray, k: int, *, iterations: int = 10, seed: int = 0) -> np.ndarray:
    """(k, D) unit centroids: assign by largest cosine, re-centre, renormalise. Trained on
    every vector: a sample of 256 per centroid (faiss's default) was 3x faster here but cut
    the recall at one probe from 0.97 to 0.87 (benchmarks/semdedup.py)."""
    rng = np.random.default_rng(seed)
    centroids = v[rng.choice(len(v), size=k, replace=False)].copy()
    for _ in range(iterations):
        nearest = _nearest(v, centroids, 1)[:, 0]
        order = np.argsort(nearest, kind="stable")
        ranked = nearest[order]
        starts = np.flatnonzero(np.concatenate([[True], ranked[1:] != ranked[:-1]]))
        sums = np.zeros_like(centroids)
        sums[ranked[starts]] = np.add.reduceat(v[order], starts, axis=0)  # (np.add.at: 4x slower)
        empty = np.bincount(nearest, minlength=k) == 0
        sums[empty] = v[rng.choice(len(v), size=int(empty.sum()), replace=False)]
        centroids = _unit(sums)
    return centroids


def _nearest(v: np.ndarray, centroids: np.ndarray, probes: int) -> np.ndarray:
    """For each row, the `probes` centroids of largest cosine (block by block)."""
    out = np.empty((len(v), probes), np.int64)
    for start in range(0, len(v), ROWS_PER_BLOCK * 8):
        sims = v[start : start + ROWS_PER_BLOCK * 8] @ centroids.T
        if probes == 1:
            out[start : start + len(sims), 0] = sims.argmax(axis=1)
        else:
            top = np.argpartition(-sims, probes - 1, axis=1)[:, :probes]
            out[start : start + len(sims)] = top
    return out


def near_pairs(
    vectors: np.ndarray,
    threshold: float,
    *,
    cluster_size: int = 1000,
    probes: int = 2,
    seed: int = 0,
) -> Pairs:
    """Pairs with cosine >= threshold, SemDeDup-style: exact within clusters of about
    `cluster_size` vectors, each vector in its `probes` nearest clusters."""
    v = _unit(vectors)
    n = len(v)
    k = max(1, -(-n // cluster_size))
    if k == 1:
        return exact_pairs(v, threshold)
    centroids = spherical_kmeans(v, k, seed=seed)
    probes = min(probes, k)
    member_of = _nearest(v, centroids, probes)
    rows = np.repeat(np.arange(n), probes)
    clusters = member_of.reshape(-1)
    order = np.argsort(clusters, kind="stable")
    rows, clusters = rows[order], clusters[order]
    bounds = np.flatnonzero(np.diff(clusters)) + 1
    found = [_pairs_in(v, members, threshold) for members in np.split(rows, bounds)]
    a = np.concatenate([f[0] for f in found])
    b = np.concatenate([f[1] for f in found])
    s = np.concatenate([f[2] for f in found])
    return _as_pairs(a, b, s)


def recall(found: Pairs, reference: Pairs) -> float:
    """Share of the reference pairs that `found` has (1.0 when there are none)."""
    if len(reference) == 0:
        return 1.0
    ends = [reference.a.max(), reference.b.max(), found.a.max(initial=0), found.b.max(initial=0)]
    n = int(max(ends)) + 1
    return float(np.isin(reference.a * n + reference.b, found.a * n + found.b).mean())
