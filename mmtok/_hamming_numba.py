"""The numba kernel of `mmtok.hamming` (imported only when numba is installed)."""

import numba
import numpy as np

_M1 = np.uint64(0x5555555555555555)
_M2 = np.uint64(0x3333333333333333)
_M4 = np.uint64(0x0F0F0F0F0F0F0F0F)
_H01 = np.uint64(0x0101010101010101)


@numba.njit(inline="always")
def popcount(x):
    """Bits set in a uint64 (SWAR: numba has no portable popcount intrinsic)."""
    x = x - ((x >> np.uint64(1)) & _M1)
    x = (x & _M2) + ((x >> np.uint64(2)) & _M2)
    x = (x + (x >> np.uint64(4))) & _M4
    return (x * _H01) >> np.uint64(56)


@numba.njit(cache=True, nogil=True)
def occupancy(starts):
    """One bit per bucket, set when the bucket holds a row: 512 KB for 2**22 buckets, small
    enough to stay in cache, where most probes of a sparse table end."""
    buckets = len(starts) - 1
    bitmap = np.zeros((buckets + 63) // 64, np.uint64)
    for v in range(buckets):
        if starts[v + 1] > starts[v]:
            bitmap[v >> 6] |= np.uint64(1) << np.uint64(v & 63)
    return bitmap


@numba.njit(cache=True, nogil=True)
def block_pairs(
    queries, by_value, order, starts, bitmap, hashes, masks, group_starts, group_lows,
    shifts, widths, radii, j, d, same, start, stop,
):  # fmt: skip
    """(query, row) pairs taken in block j for the queries by_value[start:stop]: the same rules
    as the numpy kernel of mmtok.hamming, one query at a time. `masks` are grouped by their
    lowest flipped bit (group g: masks[group_starts[g]:group_starts[g + 1]], lowest bit
    group_lows[g])."""
    capacity = 1024
    out_a = np.empty(capacity, np.int64)
    out_b = np.empty(capacity, np.int64)
    n_out = 0
    shift = np.uint64(shifts[j])
    key_mask = np.uint64((1 << widths[j]) - 1)
    n_groups = len(group_lows)
    for position in range(start, stop):
        i = by_value[position]
        h = queries[i]
        key = np.int64((h >> shift) & key_mask)
        for g in range(-1, n_groups):
            if g < 0:
                first, last = 0, 1  # the query's own bucket
            else:
                if same and (key >> group_lows[g]) & 1:  # the partner probes these pairs
                    continue
                first, last = group_starts[g], group_starts[g + 1]
            for k in range(first, last):
                p = key if g < 0 else key ^ masks[k]
                if not (bitmap[p >> 6] >> np.uint64(p & 63)) & np.uint64(1):
                    continue
                lo = starts[p]
                if same and g < 0:  # inside its bucket, a row meets the rows after it
                    lo = position + 1
                for e in range(lo, starts[p + 1]):
                    x = h ^ hashes[e]
                    if popcount(x) > d:
                        continue
                    earlier = False
                    for jj in range(j):  # taken in an earlier block already
                        if radii[jj] >= 0:
                            bits = (x >> np.uint64(shifts[jj])) & np.uint64((1 << widths[jj]) - 1)
                            if popcount(bits) <= radii[jj]:
                                earlier = True
                                break
                    if earlier:
                        continue
                    if n_out == capacity:
                        capacity *= 2
                        grown_a = np.empty(capacity, np.int64)
                        grown_b = np.empty(capacity, np.int64)
                        grown_a[:n_out] = out_a[:n_out]
                        grown_b[:n_out] = out_b[:n_out]
                        out_a, out_b = grown_a, grown_b
                    out_a[n_out] = i
                    out_b[n_out] = order[e]
                    n_out += 1
    return out_a[:n_out], out_b[:n_out]
