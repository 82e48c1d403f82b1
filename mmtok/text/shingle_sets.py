"""Caption shingle sets as sorted integer arrays, for exact Jaccard similarity of many row
pairs at once.

Each distinct shingle gets an integer id; a row's set is a sorted run of ids in one pool. Sets
are built on demand, only for the rows a comparison needs (in dedup, the rows of candidate
pairs), so the cost and the memory follow the duplicates, not the dataset.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from mmtok.text.caption import shingles

_PAIRS_PER_STEP = 1 << 18  # pairs compared at a time (bounded memory)


class ShingleSets:
    def __init__(self, captions: pa.Array, size: int = 1):
        self.captions, self.size = captions, size
        self.vocabulary: dict[str, int] = {}
        self.start = np.full(len(captions), -1, np.int64)  # -1: not built yet
        self.length = np.zeros(len(captions), np.int64)
        self.pool = np.empty(1 << 16, np.int64)
        self.used = 0

    def build(self, rows: np.ndarray) -> None:
        """Build the sets of `rows` that are not built yet."""
        missing = np.unique(rows[self.start[rows] < 0])
        if len(missing) == 0:
            return
        vocabulary = self.vocabulary
        runs = [
            sorted({vocabulary.setdefault(g, len(vocabulary)) for g in shingles(text, self.size)})
            if text
            else []
            for text in self.captions.take(pa.array(missing)).to_pylist()
        ]
        lengths = np.fromiter(map(len, runs), np.int64, len(runs))
        values = np.fromiter((v for run in runs for v in run), np.int64, int(lengths.sum()))
        while self.used + len(values) > len(self.pool):
            self.pool = np.concatenate([self.pool, np.empty_like(self.pool)])
        self.pool[self.used : self.used + len(values)] = values
        self.start[missing] = self.used + np.cumsum(lengths) - lengths
        self.length[missing] = lengths
        self.used += len(values)

    def jaccard(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Exact Jaccard similarity of the sets of rows a[k] and b[k] (1.0 for two empty sets)."""
        self.build(np.concatenate([a, b]))
        out = np.empty(len(a))
        for begin in range(0, len(a), _PAIRS_PER_STEP):
            out[begin : begin + _PAIRS_PER_STEP] = self._jaccard(
                a[begin : begin + _PAIRS_PER_STEP], b[begin : begin + _PAIRS_PER_STEP]
            )
        return out

    def _jaccard(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        # every (pair, shingle id) of both sides as one integer: a shingle both sets hold
        # appears twice, and each set holds a shingle once
        span = max(len(self.vocabulary), 1)
        keys = np.concatenate([self._keys(a, span), self._keys(b, span)])
        keys.sort()
        shared = keys[1:][keys[1:] == keys[:-1]] // span
        common = np.bincount(shared, minlength=len(a))
        union = self.length[a] + self.length[b] - common
        return np.divide(common, union, out=np.ones(len(a)), where=union > 0)

    def members(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the shingle ids of each of `rows`, one sorted run after another; the run lengths)."""
        self.build(rows)
        count = self.length[rows]
        offset = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
        return self.pool[np.repeat(self.start[rows], count) + offset], count

    def _keys(self, rows: np.ndarray, span: int) -> np.ndarray:
        count = self.length[rows]
        pair = np.repeat(np.arange(len(rows)), count)
        offset = np.arange(len(pair)) - np.repeat(np.cumsum(count) - count, count)
        return pair * span + self.pool[np.repeat(self.start[rows], count) + offset]
