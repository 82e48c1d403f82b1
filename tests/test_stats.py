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
