"""Bounded-memory statistics over a stream, mergeable across worker processes: a bottom-k
sample for percentiles whose keys come from each value's ordinal in the stream, and exact
float sums.

Workers summarise their batches into parts (`empty()`, `add`), which the main process merges
in input order (`merge`): the result is the same for any worker count, any batching, and for a
resumed run (which re-reads its committed rows in order) as for one that was not interrupted.
"""

from __future__ import annotations

import numpy as np

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def ordinal_keys(seed: int, start: int, n: int) -> np.ndarray:
    """The keys of the values number `start`..`start+n-1` of a stream: splitmix64 of the
    ordinal and the seed. The mix is a bijection of uint64, so distinct ordinals never tie."""
    with np.errstate(over="ignore"):
        z = np.arange(start, start + n, dtype=np.uint64) * _GOLDEN + np.uint64(seed) * _M2
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


class _BottomK:
    """Rows keyed by their ordinal in the stream (`ordinal_keys`); the `capacity` smallest keys
    survive, so the sample depends only on the stream, not on how it was cut or merged.

    New rows wait in a list and are merged when they reach `capacity`, so a small batch costs
    O(batch), not O(capacity). Survivors are kept in key order once any row was dropped, so
    their order does not depend on when merges happened either. A part (`capacity` None, from
    `empty()`) keeps its rows unkeyed, in order: they get their keys when merged, in input order,
    into the main sample, from its count of rows so far.

    Since summaries are computed in the workers, the keys are these hashes, not draws of a
    seeded RNG in stream order: below `capacity` nothing changes (every value is kept); above
    it the sample, so the percentiles, differ from earlier mmtok's.
    """

    def __init__(self, width: int | None, capacity: int | None, seed: int):
        self.capacity, self.seed, self.width = capacity, seed, width
        self.offered = 0  # rows seen: the next row's ordinal
        shape = (0,) if width is None else (0, width)
        self._rows = np.empty(shape, dtype=np.float64)
        self._keys = np.empty(0, dtype=np.uint64)
        self._pending: list[np.ndarray] = []
        self._pending_size = 0
        self._unsorted = False  # rows were dropped since the survivors were put in key order

    def _add(self, rows: np.ndarray) -> None:
        if len(rows) == 0:
            return
        self._pending.append(rows)
        self._pending_size += len(rows)
        if self.capacity is not None and self._pending_size >= self.capacity:
            self._merge()

    def _merge(self) -> np.ndarray:
        if not self._pending:
            return self._rows
        rows = np.concatenate([self._rows, *self._pending])
        self._pending, self._pending_size = [], 0
        if self.capacity is None:  # a part: rows in order, keyed when merged
            self._rows = rows
            return rows
        new = len(rows) - len(self._keys)
        keys = np.concatenate([self._keys, ordinal_keys(self.seed, self.offered, new)])
        self.offered += new
        if len(keys) > self.capacity:
            # key order only when read (`_sample`), not after each merge: a sort of `capacity`
            # keys per merge would cost the main process more than the merge itself
            keep = np.argpartition(keys, self.capacity)[: self.capacity]
            rows, keys = rows[keep], keys[keep]
            self._unsorted = True
        self._rows, self._keys = rows, keys
        return rows

    def _sample(self) -> np.ndarray:
        """The rows kept, in key order once any row was dropped."""
        rows = self._merge()
        if self._unsorted:
            order = np.argsort(self._keys)
            self._rows, self._keys = rows[order], self._keys[order]
            self._unsorted = False
        return self._rows

    def _merge_part(self, part: _BottomK) -> None:
        assert part.capacity is None, "merge a part made by empty()"
        self._add(part._merge())


class PercentileSample(_BottomK):
    """Keeps at most `capacity` values, a uniform sample of all values seen (exact below that).

    Each value gets a key from its ordinal in the stream and the `capacity` smallest keys
    survive (bottom-k sampling), so the result does not depend on how the stream was cut into
    batches or parts.
    """

    def __init__(self, capacity: int | None = 100_000, seed: int = 0, *, integer: bool = False):
        super().__init__(None, capacity, seed)
        self.count = 0
        self.integer = integer

    def empty(self) -> PercentileSample:
        """A part for one batch, merged later with `merge`."""
        return PercentileSample(None, self.seed, integer=self.integer)

    def add(self, values) -> None:
        values = np.asarray(values, dtype=np.float64)
        values = values[~np.isnan(values)]
        self.count += values.size
        self._add(values)

    def merge(self, part: PercentileSample) -> None:
        self.count += part.count
        self._merge_part(part)

    @property
    def values(self) -> np.ndarray:
        return self._sample()

    @property
    def exact(self) -> bool:
        return self.capacity is None or self.count <= self.capacity

    def percentiles(self, qs: tuple[float, ...] = (5, 50, 95)) -> dict[str, float | int | None]:
        """Percentiles of the values seen. With `integer=True` (counts such as tokens) each is a
        value that occurs: the smallest x with at least q% of values <= x (numpy's
        "inverted_cdf", Hyndman & Fan type 1), so "p99 = 2,022 tokens" reads as "99% of images
        have at most 2,022 tokens". Otherwise linear interpolation, rounded to 12 significant
        digits so that interpolation noise (0.058758000000000005) does not reach the output."""
        values = self.values
        if values.size == 0:
            return {f"p{q:g}": None for q in qs}
        # one call for all q's: numpy sorts (partitions) the values once, not once per q
        if self.integer:
            found = np.percentile(values, qs, method="inverted_cdf").tolist()
            return {f"p{q:g}": int(v) for q, v in zip(qs, found, strict=True)}
        found = np.percentile(values, qs).tolist()
        return {f"p{q:g}": float(f"{v:.12g}") for q, v in zip(qs, found, strict=True)}


class RowSample(_BottomK):
    """Bottom-k uniform sample of rows (a fixed number of float columns), like PercentileSample."""

    def __init__(self, columns: int, capacity: int | None = 50_000, seed: int = 0):
        super().__init__(columns, capacity, seed)

    def empty(self) -> RowSample:
        return RowSample(self.width, None, self.seed)  # type: ignore[arg-type]

    def add(self, rows) -> None:
        self._add(np.asarray(rows, dtype=np.float64))

    def merge(self, part: RowSample) -> None:
        self._merge_part(part)

    @property
    def rows(self) -> np.ndarray:
        return self._sample()


# -- exact sums -----------------------------------------------------------------------------

_SCALE = 1130  # frexp mantissas are 53-bit integers times 2**(e - 53), e >= -1073


def exact_sum(values: np.ndarray) -> int:
    """The exact sum of finite float64 values, as an integer multiple of 2**-_SCALE: sums
    of these add exactly, in any order (`exact_float` rounds once, at the end). Vectorised:
    each value is its 53-bit mantissa times a power of two; mantissas are summed per exponent
    in two 27-bit halves (exact in float64 for fewer than 2**26 values)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return 0
    mantissa, exponent = np.frexp(values)
    m = (mantissa * 2.0**53).astype(np.int64)  # exact: |mantissa| < 1
    # slots from the lowest exponent present (frexp exponents run from -1073 to 1024): a
    # batch spans a few dozen, so the bins are few and the total is built in small integers
    low = int(exponent.min())
    slot = exponent - low
    hi = np.bincount(slot, weights=(m >> 27).astype(np.float64)).tolist()
    lo = np.bincount(slot, weights=(m & ((1 << 27) - 1)).astype(np.float64)).tolist()
    total = 0
    for high, low_half in zip(reversed(hi), reversed(lo), strict=True):  # Horner: a bit a slot
        total = (total << 1) + (int(high) << 27) + int(low_half)
    return total << (low - 53 + _SCALE)


def exact_float(total: int) -> float:
    """An `exact_sum` as the nearest float (Python's int division rounds correctly)."""
    return total / (1 << _SCALE)
