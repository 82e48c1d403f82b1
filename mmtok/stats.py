"""Bounded-memory statistics over a stream: a seeded bottom-k sample for percentiles."""

from __future__ import annotations

import numpy as np


class _BottomK:
    """Rows with a seeded random key each; the `capacity` smallest keys survive.

    New rows wait in a list and are merged when they reach `capacity`, so a small batch costs
    O(batch), not O(capacity). Bottom-k does not depend on when merges happen: the result is
    the same as merging after every batch.
    """

    def __init__(self, width: int | None, capacity: int, seed: int):
        self.capacity = capacity
        self.rng = np.random.default_rng(seed)
        shape = (0,) if width is None else (0, width)
        self._rows = np.empty(shape, dtype=np.float64)
        self._keys = np.empty(0, dtype=np.float64)
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending_size = 0

    def _add(self, rows: np.ndarray) -> None:
        self._pending.append((rows, self.rng.random(len(rows))))
        self._pending_size += len(rows)
        if self._pending_size >= self.capacity:
            self._merge()

    def _merge(self) -> np.ndarray:
        if self._pending:
            self._rows = np.concatenate([self._rows, *(r for r, _ in self._pending)])
            self._keys = np.concatenate([self._keys, *(k for _, k in self._pending)])
            self._pending, self._pending_size = [], 0
            if len(self._keys) > self.capacity:
                keep = np.argpartition(self._keys, self.capacity)[: self.capacity]
                self._rows, self._keys = self._rows[keep], self._keys[keep]
        return self._rows


class PercentileSample(_BottomK):
    """Keeps at most `capacity` values, a uniform sample of all values seen (exact below that).

    Each value gets a random key and the `capacity` smallest keys survive (bottom-k sampling),
    so the result does not depend on how the stream was cut into batches.
    """

    def __init__(self, capacity: int = 100_000, seed: int = 0, *, integer: bool = False):
        super().__init__(None, capacity, seed)
        self.count = 0
        self.integer = integer

    def add(self, values) -> None:
        values = np.asarray(values, dtype=np.float64)
        values = values[~np.isnan(values)]
        self.count += values.size
        self._add(values)

    @property
    def values(self) -> np.ndarray:
        return self._merge()

    @property
    def exact(self) -> bool:
        return self.count <= self.capacity

    def percentiles(self, qs: tuple[float, ...] = (5, 50, 95)) -> dict[str, float | int | None]:
        """Percentiles of the values seen. With `integer=True` (counts such as tokens) each is a
        value that occurs: the smallest x with at least q% of values <= x (numpy's
        "inverted_cdf", Hyndman & Fan type 1), so "p99 = 2,022 tokens" reads as "99% of images
        have at most 2,022 tokens". Otherwise linear interpolation, rounded to 12 significant
        digits so that interpolation noise (0.058758000000000005) does not reach the output."""
        values = self.values
        if values.size == 0:
            return {f"p{q:g}": None for q in qs}
        if self.integer:
            return {f"p{q:g}": int(np.percentile(values, q, method="inverted_cdf")) for q in qs}
        return {f"p{q:g}": float(f"{np.percentile(values, q):.12g}") for q in qs}


class RowSample(_BottomK):
    """Bottom-k uniform sample of rows (a fixed number of float columns), like PercentileSample."""

    def __init__(self, columns: int, capacity: int = 50_000, seed: int = 0):
        super().__init__(columns, capacity, seed)

    def add(self, rows) -> None:
        self._add(np.asarray(rows, dtype=np.float64))

    @property
    def rows(self) -> np.ndarray:
        return self._merge()
