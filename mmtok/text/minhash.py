"""Caption MinHash (datasketch) cut into LSH band keys, for near-duplicate caption search.

datasketch's `MinHashLSH` picks the bands (b) and rows per band (r) that minimise a weighted
sum of false positives and false negatives at the threshold. Every candidate is verified with
its exact Jaccard similarity, so a false positive only costs a check: the weights are 0.05 /
0.95 (128 permutations at 0.8: b=16, r=8; a pair at Jaccard 0.8 is a candidate with
probability 0.95, at 0.85 with 0.994; datasketch's default 0.5 / 0.5 gives 0.40 and 0.69). Each
band becomes one 64-bit key (blake2b of its r values), so a worker computes the keys, the
clustering pass only groups equal keys, and two captions that share any key are candidates,
verified afterwards with their exact Jaccard similarity.
"""

from __future__ import annotations

import hashlib
from functools import cache

import numpy as np

from mmtok.text.caption import shingles

LSH_WEIGHTS = (0.05, 0.95)  # (false positive, false negative)


@cache
def band_layout(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band) datasketch uses for this threshold and permutation count."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=LSH_WEIGHTS)
    return lsh.b, lsh.r


class CaptionBands:
    """Band keys of one caption at a time; the permutations are built once per worker."""

    def __init__(self, threshold: float = 0.8, num_perm: int = 128, shingle_size: int = 1):
        self.threshold, self.num_perm, self.shingle_size = threshold, num_perm, shingle_size
        self.bands, self.rows = band_layout(threshold, num_perm)
        self._template = None

    def setup(self) -> CaptionBands:
        from datasketch import MinHash

        self._template = MinHash(num_perm=self.num_perm, seed=1, scheme="affine32")
        return self

    def keys(self, caption: str | None) -> list[int] | None:
        """The band keys, or None for a caption with no words (never a caption duplicate)."""
        grams = shingles(caption, self.shingle_size) if caption else set()
        if not grams:
            return None
        from datasketch import MinHash

        assert self._template is not None, "call setup() first"
        m = MinHash(
            num_perm=self.num_perm, permutations=self._template.permutations, scheme="affine32"
        )
        m.update_batch([g.encode("utf-8") for g in grams])
        values = m.hashvalues.astype(np.uint32)
        return [
            int.from_bytes(
                hashlib.blake2b(
                    values[i * self.rows : (i + 1) * self.rows].tobytes(), digest_size=8
                ).digest(),
                "little",
            )
            for i in range(self.bands)
        ]

    def __getstate__(self):
        return {**self.__dict__, "_template": None}
