"""Semantic dedup (`mmtok dedup --by embedding`): recall and time of the clustered pair search
against brute force, and k-means in numpy against faiss.

Data: N random unit vectors (D dims) plus planted near-duplicates, noisy copies of random
earlier rows at cosines spread over [threshold - 0.03, 1): some just below the threshold, so the
brute-force answer is not simply "the planted pairs". Brute force (`exact_pairs`, every pair,
blocked matmul) is the truth; recall = share of its pairs the clustered search finds (it never
reports a pair below the threshold: its pairs are checked exactly).

    python benchmarks/semdedup.py                    # 20,000 + 2,000 planted, D=512
    python benchmarks/semdedup.py --topics 200        # clustered like real embeddings
    python benchmarks/semdedup.py --rows 100000 --dim 256
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from mmtok.models.semdedup import (
    exact_pairs,
    near_pairs,
    recall,
    spherical_kmeans,
)


def planted(
    rows: int, dupes: int, dim: int, threshold: float, topics: int = 0, seed: int = 0
) -> np.ndarray:
    """`rows` random unit vectors, then `dupes` copies of random ones at chosen cosines.

    `topics` > 0: the vectors gather around that many random directions (cosine about 0.5 to
    their topic, 0.25 between two of a topic), as image embeddings of a real collection do;
    0: spread evenly over the sphere, where no cell boundary is natural (the worst case)."""
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(rows, dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    if topics:
        centres = rng.normal(size=(topics, dim)).astype(np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        v = v + centres[rng.integers(0, topics, rows)]
        v /= np.linalg.norm(v, axis=1, keepdims=True)
    sources = rng.choice(rows, size=dupes)
    cos = rng.uniform(threshold - 0.03, 1.0, size=dupes)
    noise = rng.normal(size=(dupes, dim)).astype(np.float32)
    noise -= np.einsum("nd,nd->n", noise, v[sources])[:, None] * v[sources]  # orthogonal part
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    copies = cos[:, None] * v[sources] + np.sqrt(1 - cos**2)[:, None] * noise
    return np.concatenate([v, copies.astype(np.float32)]).astype(np.float16)  # as stored


def timed(fn, *args, **kw):
    """The result and the CPU seconds of this process (all threads): on a shared machine the
    wall clock measures the neighbours too."""
    t0 = time.process_time()
    out = fn(*args, **kw)
    return out, time.process_time() - t0


def faiss_kmeans(v: np.ndarray, k: int, iterations: int = 10, seed: int = 0) -> np.ndarray:
    import faiss

    km = faiss.Kmeans(v.shape[1], k, niter=iterations, spherical=True, seed=seed, verbose=False)
    km.train(np.ascontiguousarray(v, np.float32))
    return km.centroids


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--dupes", type=int, default=2_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--threshold", type=float, default=0.95)
    ap.add_argument("--cluster-size", type=int, default=1000)
    ap.add_argument("--topics", type=int, default=0, help="0: evenly spread (the worst case)")
    ap.add_argument(
        "--default-only", action="store_true", help="only the default cluster size and probes"
    )
    args = ap.parse_args()

    v = planted(args.rows, args.dupes, args.dim, args.threshold, args.topics)
    n = len(v)
    spread = f"around {args.topics} topics" if args.topics else "evenly spread"
    print(f"{n:,} vectors of {args.dim} dims (float16, {spread}), threshold {args.threshold}")
    truth, t_brute = timed(exact_pairs, v, args.threshold)
    print(f"brute force: {len(truth):,} pairs in {t_brute:.2f} CPU s")
    print("| cluster size | probes | recall | pairs found | CPU s | x faster than brute force |")
    print("|---|---|---|---|---|---|")
    grid = (
        [(args.cluster_size, 2)]
        if args.default_only
        else [
            (size, probes)
            for size in (args.cluster_size // 2, args.cluster_size, args.cluster_size * 2)
            for probes in (1, 2, 3)
        ]
    )
    for size, probes in grid:
        found, t = timed(near_pairs, v, args.threshold, cluster_size=size, probes=probes)
        r = recall(found, truth)
        print(f"| {size:,} | {probes} | {r:.4f} | {len(found):,} | {t:.2f} | {t_brute / t:.1f} |")

    unit = v.astype(np.float32)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    k = -(-n // args.cluster_size)
    _, t_np = timed(spherical_kmeans, unit, k)
    line = f"k-means, k={k}, 10 iterations: numpy {t_np:.2f} CPU s"
    try:
        _, t_faiss = timed(faiss_kmeans, unit, k)
        line += f", faiss {t_faiss:.2f} s (faiss threads: {_faiss_threads()})"
    except ImportError:
        line += ", faiss not installed"
    print(line)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory of this process: {peak:,.0f} MB")


def _faiss_threads() -> int:
    import faiss

    return faiss.omp_get_max_threads()


if __name__ == "__main__":
    main()
