"""Semantic near-duplicate pairs: exact where it claims to be, and its recall measured against
brute force on vectors with planted near-duplicates."""

from __future__ import annotations

import numpy as np

from mmtok.duplicates import components
from mmtok.models.semdedup import exact_pairs, near_pairs, recall


def planted(n: int, dim: int = 64, dupes: int = 200, noise: float = 0.05, seed: int = 0):
    """`n` random unit vectors, the last `dupes` of them noisy copies of earlier ones."""
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, dim)).astype(np.float32)
    sources = rng.choice(n - dupes, size=dupes, replace=False)
    v[n - dupes :] = v[sources] + noise * rng.normal(size=(dupes, dim)) * np.linalg.norm(
        v[sources], axis=1, keepdims=True
    ) / np.sqrt(dim)
    return v, sources


def brute(v: np.ndarray, threshold: float) -> set[tuple[int, int]]:
    u = v / np.linalg.norm(v, axis=1, keepdims=True)
    sims = u @ u.T
    i, j = np.nonzero(np.triu(sims >= threshold, 1))
    return set(zip(i.tolist(), j.tolist(), strict=True))


def test_exact_pairs_are_every_pair_over_the_threshold():
    v, _ = planted(700, dupes=50)
    pairs = exact_pairs(v, 0.9)
    assert set(zip(pairs.a.tolist(), pairs.b.tolist(), strict=True)) == brute(v, 0.9)
    assert len(pairs) >= 50 and (pairs.a < pairs.b).all()
    u = v / np.linalg.norm(v, axis=1, keepdims=True)
    cos = np.einsum("nd,nd->n", u[pairs.a], u[pairs.b])
    np.testing.assert_allclose(pairs.distance, 1 - cos, atol=1e-5)


def test_clustered_search_finds_the_planted_duplicates_and_reports_its_recall():
    v, sources = planted(6000, dupes=300)
    reference = exact_pairs(v, 0.9)
    one = near_pairs(v, 0.9, cluster_size=500, probes=1)
    two = near_pairs(v, 0.9, cluster_size=500, probes=2)
    assert recall(two, reference) >= recall(one, reference)
    assert recall(two, reference) >= 0.99
    found = set(zip(two.a.tolist(), two.b.tolist(), strict=True))
    assert found <= brute(v, 0.9)  # never a pair under the threshold
    label = components(len(v), two.a, two.b)
    joined = sum(label[s] == label[6000 - 300 + k] for k, s in enumerate(sources))
    assert joined >= 0.99 * 300
    assert len(np.unique(label)) >= 6000 - 300 - 3  # distinct vectors stay apart


def test_small_inputs_are_searched_exactly():
    v, _ = planted(300, dupes=30)
    assert recall(near_pairs(v, 0.9), exact_pairs(v, 0.9)) == 1.0
    empty = near_pairs(v[:1], 0.9)
    assert len(empty) == 0
