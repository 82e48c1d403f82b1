"""Bounded-memory statistics over a stream: a seeded bottom-k sample for percentiles."""

from __future__ import annotations

import numpy as np


class PercentileSample:
    """Keeps at most `capacity` values, a uniform sample of all values seen (exact below that).

    Each value gets a random key and the `capacity` smallest keys survive (bottom-k sampling),
    so the result does not depend on how the stream was cut into batches.
    """

    def __init__(self, capacity: int = 100_000, seed: int = 0):
        self.capacity = capacity
        self.rng = np.random.default_rng(seed)
        self.values = np.empty(0, dtype=np.float64)
        self.keys = np.empty(0, dtype=np.float64)
        self.count = 0

    def add(self, values) -> None:
        values = np.asarray(values, dtype=np.float64)
        values = values[~np.isnan(values)]
        self.count += values.size
        self.values = np.concatenate([self.values, values])
        self.keys = np.concatenate([self.keys, self.rng.random(values.size)])
        if self.values.size > self.capacity:
            keep = np.argpartition(self.keys, self.capacity)[: self.capacity]
            self.values, self.keys = self.values[keep], self.keys[keep]

    @property
    def exact(self) -> bool:
        return self.count <= self.capacity

    def percentiles(self, qs: tuple[float, ...] = (5, 50, 95)) -> dict[str, float | None]:
        if self.values.size == 0:
            return {f"p{q:g}": None for q in qs}
        return {f"p{q:g}": float(np.percentile(self.values, q)) for q in qs}


class RowSample:
    """Bottom-k uniform sample of rows (a fixed number of float columns), like PercentileSample."""

    def __init__(self, columns: int, capacity: int = 50_000, seed: int = 0):
        self.capacity = capacity
        self.rng = np.random.default_rng(seed)
        self.rows = np.empty((0, columns), dtype=np.float64)
        self.keys = np.empty(0, dtype=np.float64)

    def add(self, rows) -> None:
        rows = np.asarray(rows, dtype=np.float64)
        self.rows = np.concatenate([self.rows, rows])
        self.keys = np.concatenate([self.keys, self.rng.random(len(rows))])
        if len(self.rows) > self.capacity:
            keep = np.argpartition(self.keys, self.capacity)[: self.capacity]
            self.rows, self.keys = self.rows[keep], self.keys[keep]
