"""Bottom-k samples: a uniform sample whatever the batching, exact below capacity."""

import numpy as np

from mmtok.stats import PercentileSample, RowSample


def test_percentiles_exact_below_capacity():
    s = PercentileSample(capacity=1000)
    s.add([3.0, np.nan, 1.0])
    s.add(np.arange(100, dtype=float))
    assert s.exact and s.count == 102
    assert s.percentiles((50,)) == {"p50": float(np.percentile([3.0, 1.0, *range(100)], 50))}


def test_same_sample_whatever_the_batching():
    values = np.random.default_rng(0).normal(size=5000)
    by_batch = []
    for size in (1, 7, 256, 5000):
        s = PercentileSample(capacity=300, seed=4)
        for start in range(0, len(values), size):
            s.add(values[start : start + size])
        assert not s.exact and s.values.size == 300
        by_batch.append(np.sort(s.values))
    for sample in by_batch[1:]:
        np.testing.assert_array_equal(sample, by_batch[0])


def test_sample_is_roughly_uniform():
    s = PercentileSample(capacity=2000, seed=1)
    for start in range(0, 100_000, 333):
        s.add(np.arange(start, min(start + 333, 100_000), dtype=float))
    assert abs(s.percentiles((50,))["p50"] - 50_000) < 3_000


def test_row_sample_keeps_rows_whole():
    rows = np.stack([np.arange(1000), np.arange(1000) * 2], axis=1)
    s = RowSample(2, capacity=50, seed=0)
    for start in range(0, 1000, 64):
        s.add(rows[start : start + 64])
    assert s.rows.shape == (50, 2)
    np.testing.assert_array_equal(s.rows[:, 1], s.rows[:, 0] * 2)


def test_keys_come_from_the_ordinal_so_parts_merge_to_the_same_sample():
    """Values split into parts (as workers summarise batches) and merged in order give the
    sample of one stream, values and order alike, whatever the cut."""
    values = np.random.default_rng(1).normal(size=3000)
    whole = PercentileSample(capacity=250, seed=7)
    whole.add(values)
    for cuts in ([1000, 2000], [1, 2, 3, 999, 1001, 2999], list(range(0, 3000, 256))):
        merged = PercentileSample(capacity=250, seed=7)
        for lo, hi in zip([0, *cuts], [*cuts, 3000], strict=True):
            part = merged.empty()
            part.add(values[lo:hi])
            merged.merge(part)
        assert merged.count == whole.count == 3000 and not merged.exact
        np.testing.assert_array_equal(merged.values, whole.values)
    other_seed = PercentileSample(capacity=250, seed=8)
    other_seed.add(values)
    assert not np.array_equal(np.sort(other_seed.values), np.sort(whole.values))


def test_a_part_below_capacity_keeps_every_value_in_order():
    s = PercentileSample(capacity=100, seed=3)
    for lo in range(0, 90, 30):
        part = s.empty()
        part.add(np.arange(lo, lo + 30, dtype=float))
        s.merge(part)
    assert s.exact
    np.testing.assert_array_equal(s.values, np.arange(90, dtype=float))
    rows = RowSample(2, capacity=10)
    part = rows.empty()
    part.add([[1, 2], [3, 4]])
    rows.merge(part)
    np.testing.assert_array_equal(rows.rows, [[1, 2], [3, 4]])


def test_row_sample_parts_merge_to_the_same_rows():
    rows = np.stack([np.arange(2000), -np.arange(2000)], axis=1)
    whole = RowSample(2, capacity=64, seed=5)
    whole.add(rows)
    merged = RowSample(2, capacity=64, seed=5)
    for lo in range(0, 2000, 300):
        part = merged.empty()
        part.add(rows[lo : lo + 300])
        merged.merge(part)
    np.testing.assert_array_equal(merged.rows, whole.rows)


def test_exact_sums_add_in_any_order():
    import math

    from mmtok.stats import exact_float, exact_sum

    values = np.random.default_rng(2).lognormal(3, 4, size=10_000)
    values[::7] *= -1e-12
    values[3] = 5e-324  # a subnormal
    assert exact_float(exact_sum(values)) == math.fsum(values)
    halves = exact_sum(values[:4321]) + exact_sum(values[4321:])
    assert halves == exact_sum(values[::-1]) == exact_sum(values)
    assert exact_float(exact_sum(np.array([1e300, 1.0, -1e300]))) == 1.0  # float sum: 0.0


def _percentiles_one_by_one(values: np.ndarray, qs, integer: bool) -> dict:
    """The reference: one np.percentile call per q (as PercentileSample did)."""
    if integer:
        return {f"p{q:g}": int(np.percentile(values, q, method="inverted_cdf")) for q in qs}
    return {f"p{q:g}": float(f"{np.percentile(values, q):.12g}") for q in qs}


@np.errstate(invalid="ignore")  # inf - inf in the interpolation, both ways
def test_percentiles_in_one_call_are_those_one_by_one():
    """All q's in one np.percentile call give the values (and their types) of one call per q,
    on many inputs: ties, one value, negative zero, infinities, tiny and huge floats."""
    rng = np.random.default_rng(7)
    qs_list = [(5, 50, 95, 99), (0, 0.1, 33.3, 50, 99.9, 100), (50,), (99, 5, 50)]
    inputs = [
        np.array([42.0]),
        np.array([-0.0, 0.0, -0.0]),
        np.array([1.0, np.inf, 3.0, -np.inf, 2.0]),
        np.array([5e-324, 1e-300, 1e300, 1.7976931348623157e308]),
        rng.integers(0, 4, 1000).astype(float),  # heavy ties
    ]
    for n in (2, 3, 7, 100, 1001, 20_000):
        inputs.append(rng.normal(size=n) * 10.0 ** rng.integers(-8, 9))
        inputs.append(rng.integers(1, 20_000, n).astype(float))
        inputs.append(rng.integers(1000, 10**7, n) / rng.integers(1, 5000, n))
    for values in inputs:
        for qs in qs_list:
            for integer in (False, True):
                if integer and not np.isfinite(values).all():
                    continue  # no integer percentile of an infinity
                s = PercentileSample(capacity=None, integer=integer)
                s.add(values)
                got, want = s.percentiles(qs), _percentiles_one_by_one(values, qs, integer)
                assert list(got) == list(want)
                # repr: bit for bit (tells -0.0 from 0.0, and nan is nan), and the types
                assert [(type(v), repr(v)) for v in got.values()] == [
                    (type(v), repr(v)) for v in want.values()
                ]


def test_exact_sum_is_the_sum_of_fractions():
    """exact_sum is the exact sum (as Fractions add) times 2**_SCALE, on hostile inputs:
    subnormals, zeros of both signs, the largest floats, values that cancel, wide and
    narrow exponent ranges, one value."""
    from fractions import Fraction

    from mmtok.stats import _SCALE, exact_sum

    rng = np.random.default_rng(3)
    inputs = [
        np.array([5e-324]),
        np.array([-0.0, 0.0, -0.0]),
        np.array([1.7976931348623157e308, -1.7976931348623157e308, 5e-324, -5e-324, 1.0]),
        np.array([1e300, 1.0, -1e300, 2.2250738585072014e-308, 4.9e-324 * 3]),
        rng.normal(size=1000),
        rng.integers(1000, 10**7, 5000) / rng.integers(1, 5000, 5000),
        (rng.integers(1000, 10**7, 300) / rng.integers(1, 5000, 300)) ** 2,
        rng.normal(size=300) * 10.0 ** rng.integers(-320, 308, 300),
        np.full(100_000, 0.1),
    ]
    for values in inputs:
        want = sum((Fraction(float(v)) for v in values), Fraction(0)) * 2**_SCALE
        assert want.denominator == 1
        assert exact_sum(values) == want.numerator


def _sorted_each_merge(base):
    """The reference: survivors put in key order at every merge that drops rows (as before)."""

    class Reference(base):
        def _merge(self):
            rows = super()._merge()
            if self._unsorted:
                order = np.argsort(self._keys)
                self._rows, self._keys = rows[order], self._keys[order]
                self._unsorted = False
            return self._rows

    return Reference


def test_sample_and_its_order_as_when_sorted_at_each_merge():
    """Key order only on read gives the values, in the order, of sorting at every merge:
    batches and parts of many sizes, reads in between, capacities above and below the count."""
    rng = np.random.default_rng(11)
    for capacity in (1, 5, 300, 1000, 10_000):
        ours, reference = (
            PercentileSample(capacity, 3),
            _sorted_each_merge(PercentileSample)(capacity, 3),
        )
        rows_ours, rows_reference = (
            RowSample(2, capacity, 5),
            _sorted_each_merge(RowSample)(2, capacity, 5),
        )
        for step in range(60):
            values = rng.normal(size=int(rng.integers(0, 700)))
            pairs = np.stack([values, values * 2], axis=1)
            if step % 3:  # a worker's part
                for sample, same, add in ((ours, reference, values),
                                          (rows_ours, rows_reference, pairs)):  # fmt: skip
                    part = sample.empty()
                    part.add(add)
                    sample.merge(part)
                    same.merge(part)
            else:
                ours.add(values)
                reference.add(values)
                rows_ours.add(pairs)
                rows_reference.add(pairs)
            if step % 7 == 0:  # a read mid-stream
                np.testing.assert_array_equal(ours.values, reference.values)
                np.testing.assert_array_equal(rows_ours.rows, rows_reference.rows)
        np.testing.assert_array_equal(ours.values, reference.values)
        np.testing.assert_array_equal(rows_ours.rows, rows_reference.rows)
        assert ours.percentiles() == reference.percentiles()
        assert len(rows_ours.rows) == min(capacity, rows_ours.offered)
