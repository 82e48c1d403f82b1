"""Duplicate clusters over compact signatures: pure numpy, no pass over the data.

- Image near-duplicates: 64-bit perceptual hashes within `max_distance` Hamming bits, found by
  multi-index hashing (Norouzi et al., 2012): the hash is cut into four 16-bit blocks, and two
  hashes within distance d agree on some block up to floor(d / 4) bits. Each block is a sorted
  table; every hash probes its own block value and, when d >= 4, the 16 values one bit away.
  Exact up to 7 bits; at 8-11 bits a pair is found when one block differs in at most 1 bit.
  Equal hashes are collapsed first, so a thousand copies of one picture cost one lookup.
- Caption near-duplicates: rows sharing any LSH band key are candidates, then verified with
  their exact Jaccard similarity.
- Clusters: connected components (union by minimum label, then pointer jumping), so a cluster
  is labelled by its first row and is the same whatever order the pairs came in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

BLOCKS, BLOCK_BITS = 4, 16
_CHUNK = 1 << 18  # candidate pairs expanded at a time (bounded memory)


@dataclass
class Pairs:
    """Row pairs (a < b is not required) with a distance each."""

    a: np.ndarray
    b: np.ndarray
    distance: np.ndarray

    @classmethod
    def empty(cls) -> Pairs:
        return cls(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64))

    @classmethod
    def concat(cls, parts: list[Pairs]) -> Pairs:
        parts = [p for p in parts if len(p.a)] or [cls.empty()]
        return cls(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in ("a", "b", "distance"))
        )

    def __len__(self) -> int:
        return len(self.a)


def equal_pairs(keys: np.ndarray, rows: np.ndarray) -> tuple[Pairs, np.ndarray]:
    """Rows with equal keys paired with the first row holding that key (distance 0).

    Returns the pairs and the representative rows (one per distinct key, in row order)."""
    if len(rows) == 0:
        return Pairs.empty(), rows
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True, axis=0)
    reps = rows[first]
    others = np.flatnonzero(first[inverse] != np.arange(len(rows)))
    pairs = Pairs(rows[others], reps[inverse[others]], np.zeros(len(others), np.int64))
    order = np.argsort(first, kind="stable")  # representatives in row order
    return pairs, reps[order]


def _block(h: np.ndarray, j: int) -> np.ndarray:
    return ((h >> np.uint64(BLOCK_BITS * j)) & np.uint64((1 << BLOCK_BITS) - 1)).astype(np.int64)


def _expand(lo: np.ndarray, count: np.ndarray, query_ids: np.ndarray):
    """(query id, position in the sorted table) for every table entry each query hits."""
    total = int(count.sum())
    queries = np.repeat(query_ids, count)
    offsets = np.arange(total) - np.repeat(np.cumsum(count) - count, count)
    return queries, np.repeat(lo, count) + offsets


def hamming_pairs(table: np.ndarray, queries: np.ndarray, max_distance: int, same: bool) -> Pairs:
    """Pairs (query index, table index) whose hashes are within `max_distance` bits.

    `same`: the queries are the table itself; each unordered pair is returned once (a < b)."""
    flips = [0] + ([1 << bit for bit in range(BLOCK_BITS)] if max_distance >= BLOCKS else [])
    found = []
    for j in range(BLOCKS):
        keys = _block(table, j)
        order = np.argsort(keys, kind="stable")
        starts = np.searchsorted(keys[order], np.arange((1 << BLOCK_BITS) + 1))
        probe_base = _block(queries, j)
        for flip in flips:
            probe = probe_base ^ flip
            lo, count = starts[probe], starts[probe + 1] - starts[probe]
            # expand in chunks of queries so candidate arrays stay bounded
            cum = np.cumsum(count)
            begin = 0
            while begin < len(queries):
                end = int(np.searchsorted(cum, (cum[begin - 1] if begin else 0) + _CHUNK, "right"))
                end = max(end, begin + 1)
                q, pos = _expand(lo[begin:end], count[begin:end], np.arange(begin, end))
                t = order[pos]
                keep = t > q if same else np.ones(len(q), bool)
                q, t = q[keep], t[keep]
                d = np.bitwise_count(queries[q] ^ table[t]).astype(np.int64)
                keep = d <= max_distance
                found.append(Pairs(q[keep], t[keep], d[keep]))
                begin = end
    pairs = Pairs.concat(found)
    if len(pairs) == 0:
        return pairs
    # the same pair can be found through several blocks and flips
    _, unique = np.unique(pairs.a * len(table) + pairs.b, return_index=True)
    return Pairs(pairs.a[unique], pairs.b[unique], pairs.distance[unique])


def image_pairs(
    phash: np.ndarray, mirror: np.ndarray | None, valid: np.ndarray, max_distance: int
) -> Pairs:
    """Near-duplicate image pairs among `valid` rows (mirror images too when `mirror` is given)."""
    rows = np.flatnonzero(valid)
    exact, reps = equal_pairs(phash[rows], rows)
    h = phash[reps]
    near = hamming_pairs(h, h, max_distance, same=True)
    parts = [exact, Pairs(reps[near.a], reps[near.b], near.distance)]
    if mirror is not None:
        flipped = hamming_pairs(h, mirror[reps], max_distance, same=False)
        keep = flipped.a != flipped.b  # a symmetric picture is its own mirror
        parts.append(Pairs(reps[flipped.a[keep]], reps[flipped.b[keep]], flipped.distance[keep]))
        # rows equal to a representative match its mirror partners too: equal_pairs unions them
    return Pairs.concat(parts)


def band_candidates(bands: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row pairs sharing at least one LSH band key (`bands`: rows x b uint64)."""
    a_parts, b_parts = [], []
    for column in bands.T:
        order = np.argsort(column, kind="stable")
        sorted_keys = column[order]
        boundary = np.flatnonzero(np.diff(sorted_keys)) + 1
        starts = np.concatenate([[0], boundary])
        sizes = np.diff(np.concatenate([starts, [len(column)]]))
        for size in np.unique(sizes[sizes > 1]):
            group_starts = starts[sizes == size]
            members = order[group_starts[:, None] + np.arange(size)]  # groups x size
            i, j = np.triu_indices(size, 1)
            a_parts.append(rows[members[:, i].ravel()])
            b_parts.append(rows[members[:, j].ravel()])
    if not a_parts:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    a, b = np.concatenate(a_parts), np.concatenate(b_parts)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    code = np.unique(lo * (int(rows.max()) + 1) + hi)
    n = int(rows.max()) + 1
    return code // n, code % n


def components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Component label of each of n rows: the smallest row index in its component."""
    label = np.arange(n)
    if len(a) == 0:
        return label
    while True:
        la, lb = label[a], label[b]
        lo, hi = np.minimum(la, lb), np.maximum(la, lb)
        moved = lo != hi
        if not moved.any():
            return label
        np.minimum.at(label, hi[moved], lo[moved])
        while True:  # pointer jumping until every row points at its root
            jumped = label[label]
            if np.array_equal(jumped, label):
                break
            label = jumped


def choose_kept(label: np.ndarray, rank: Callable[[np.ndarray], tuple]) -> np.ndarray:
    """The kept row of each row's component: the first row in the order of `rank(rows)`.

    `rank` returns the lexsort keys (least significant first) for an array of row indices."""
    rows = np.arange(len(label))
    order = np.lexsort((*rank(rows), label))
    sorted_labels = label[order]
    first = np.concatenate([[True], sorted_labels[1:] != sorted_labels[:-1]])
    kept_of_label = np.empty(len(label), np.int64)
    kept_of_label[sorted_labels[first]] = order[first]
    return kept_of_label[label]


# --- from signatures to decisions ------------------------------------------------------------


@dataclass
class Signatures:
    """The signature columns of every row of a run, in stream order (inputs, then references)."""

    ids: np.ndarray  # object array of str
    sha256: np.ndarray  # object array of bytes or None
    phash: np.ndarray  # uint64 (0 where invalid)
    mirror: np.ndarray  # uint64
    pixels: np.ndarray  # int64 (-1 where unknown)
    image_ok: np.ndarray  # bool: the image was hashed
    bands: np.ndarray  # rows x b uint64 (zeros where the caption has no words)
    caption_ok: np.ndarray  # bool
    captions: list  # str or None
    reason: list  # str or None: why the row's image could not be read
    message: list
    reference: np.ndarray  # bool: a row of --against

    @classmethod
    def from_table(cls, table, reference: bool, band_count: int) -> Signatures:
        n = table.num_rows
        phash = table.column("phash")
        image_ok = phash.is_valid().to_numpy(zero_copy_only=False)
        bands_col = table.column("caption_bands").to_pylist()
        caption_ok = np.array([b is not None for b in bands_col], bool)
        bands = np.zeros((n, band_count), np.uint64)
        if caption_ok.any():
            bands[caption_ok] = np.array([b for b in bands_col if b is not None], np.uint64)
        return cls(
            ids=np.array(table.column("id").to_pylist(), dtype=object),
            sha256=np.array(table.column("sha256").to_pylist(), dtype=object),
            phash=phash.fill_null(0).to_numpy(zero_copy_only=False).astype(np.uint64),
            mirror=table.column("phash_mirror")
            .fill_null(0)
            .to_numpy(zero_copy_only=False)
            .astype(np.uint64),
            pixels=table.column("pixels").fill_null(-1).to_numpy(zero_copy_only=False),
            image_ok=image_ok,
            bands=bands,
            caption_ok=caption_ok,
            captions=table.column("caption").to_pylist(),
            reason=table.column("sig_reason").to_pylist(),
            message=table.column("sig_message").to_pylist(),
            reference=np.full(n, reference),
        )

    @classmethod
    def concat(cls, parts: list[Signatures]) -> Signatures:
        def join(name):
            values = [getattr(p, name) for p in parts]
            return sum(values, []) if isinstance(values[0], list) else np.concatenate(values)

        return cls(**{name: join(name) for name in cls.__dataclass_fields__})

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class Settings:
    by: str = "image"  # image | caption | pair
    max_distance: int = 8
    mirror: bool = False
    caption_threshold: float = 0.8
    shingle_size: int = 1
    keep: str = "largest"


@dataclass
class Clusters:
    """Per row: its cluster label, the kept row of its cluster (-1: none kept), whether it is
    dropped, and its distances to the kept row."""

    label: np.ndarray
    size: np.ndarray  # size of the row's cluster
    kept: np.ndarray
    dropped: np.ndarray
    image_distance: np.ndarray  # Hamming bits to the kept row, -1 when not applicable
    caption_similarity: np.ndarray  # exact Jaccard with the kept row, nan when not applicable
    kind: list  # why a dropped row is a duplicate of its kept row


def _verified_caption_pairs(a: np.ndarray, b: np.ndarray, threshold: float, jaccard_of):
    """The candidate pairs whose captions really are within `threshold` Jaccard, as far as
    they change the clusters: a pair whose rows are already joined is not checked again."""
    parent: dict[int, int] = {}

    def root(x: int) -> int:
        while parent.get(x, x) != x:
            parent[x] = x = parent.get(parent[x], parent[x])  # path halving
        return x

    keep = np.zeros(len(a), bool)
    for k, (i, j) in enumerate(zip(a.tolist(), b.tolist(), strict=True)):
        ri, rj = root(i), root(j)
        if ri != rj and jaccard_of(i, j) >= threshold:
            parent[max(ri, rj)] = min(ri, rj)
            keep[k] = True
    return a[keep], b[keep]


def find_clusters(sig: Signatures, settings: Settings) -> Clusters:
    from mmtok.text.caption import jaccard, shingles

    n = len(sig)
    shingle_cache: dict[int, set] = {}

    def grams(i: int) -> set:
        if i not in shingle_cache:
            shingle_cache[i] = shingles(sig.captions[i] or "", settings.shingle_size)
        return shingle_cache[i]

    def jaccard_of(i: int, j: int) -> float:
        return jaccard(grams(i), grams(j))

    a_parts, b_parts = [], []
    if settings.by in ("image", "pair"):
        valid = sig.image_ok
        rows = np.flatnonzero(valid)
        exact, _ = equal_pairs(sig.sha256[rows].astype("S32"), rows)
        near = image_pairs(
            sig.phash, sig.mirror if settings.mirror else None, valid, settings.max_distance
        )
        pairs = Pairs.concat([exact, near])
        a, b = pairs.a, pairs.b
        if settings.by == "pair":
            both = sig.caption_ok[a] & sig.caption_ok[b]
            a, b = _verified_caption_pairs(a[both], b[both], settings.caption_threshold, jaccard_of)
        a_parts.append(a)
        b_parts.append(b)
    if settings.by == "caption":
        rows = np.flatnonzero(sig.caption_ok)
        if len(rows):
            a, b = band_candidates(sig.bands[rows], rows)
            a, b = _verified_caption_pairs(a, b, settings.caption_threshold, jaccard_of)
            a_parts.append(a)
            b_parts.append(b)
    a = np.concatenate(a_parts) if a_parts else np.empty(0, np.int64)
    b = np.concatenate(b_parts) if b_parts else np.empty(0, np.int64)
    label = components(n, a, b)
    size = np.bincount(label, minlength=n)[label]

    id_rank = np.empty(n, np.int64)
    id_rank[np.argsort(sig.ids.astype(str), kind="stable")] = np.arange(n)
    caption_len = np.array([len(c) if c else 0 for c in sig.captions], np.int64)
    policies = {
        "largest": lambda r: (id_rank[r], -sig.pixels[r]),
        "first": lambda r: (r,),
        "longest-caption": lambda r: (id_rank[r], -caption_len[r]),
        "none": lambda r: (r,),
    }
    if sig.reference.any():  # --against: a reference row is the one kept, inputs go
        rank = policies[settings.keep if settings.keep != "none" else "first"]
        kept = choose_kept(label, lambda r: (*rank(r), ~sig.reference[r]))
        in_cluster = size > 1
        has_ref = np.bincount(label, weights=sig.reference, minlength=n)[label] > 0
        dropped = in_cluster & has_ref & ~sig.reference
        kept = np.where(has_ref, kept, -1)
    else:
        kept = choose_kept(label, policies[settings.keep])
        dropped = (size > 1) & (kept != np.arange(n))
        if settings.keep == "none":
            dropped = size > 1
            kept = np.full(n, -1)
    kept = np.where(size > 1, kept, -1)

    # distances to the row kept (to the first row when none is kept)
    target = np.where(kept >= 0, kept, label)
    plain = np.bitwise_count(sig.phash ^ sig.phash[target]).astype(np.int64)
    distance = plain
    if settings.mirror:
        distance = np.minimum(plain, np.bitwise_count(sig.mirror ^ sig.phash[target]))
    both_images = (size > 1) & sig.image_ok & sig.image_ok[target]
    image_distance = np.where(both_images, distance, -1)
    caption_similarity = np.full(n, np.nan)
    if settings.by != "image":
        both_captions = (size > 1) & sig.caption_ok & sig.caption_ok[target]
        caption_similarity[both_captions & (target == np.arange(n))] = 1.0
        for i in np.flatnonzero(both_captions & (target != np.arange(n))).tolist():
            caption_similarity[i] = jaccard_of(i, int(target[i]))
    kind = [None] * n
    same_file = _same_file(sig, target) if settings.by != "caption" else np.zeros(n, bool)
    for i in np.flatnonzero(dropped).tolist():
        if i == target[i]:
            kind[i] = "member"  # --keep none: every member goes
        elif same_file[i]:
            kind[i] = "exact"
        elif settings.by == "caption":
            similar = caption_similarity[i] >= settings.caption_threshold
            kind[i] = "caption" if similar else "transitive"
        elif 0 <= image_distance[i] <= settings.max_distance:
            kind[i] = "near" if plain[i] <= settings.max_distance else "mirror"
        else:
            kind[i] = "transitive"
    return Clusters(label, size, kept, dropped, image_distance, caption_similarity, kind)


def _same_file(sig: Signatures, target: np.ndarray) -> np.ndarray:
    sha = sig.sha256
    return np.array(
        [a is not None and a == sha[t] for a, t in zip(sha.tolist(), target.tolist(), strict=True)],
        bool,
    )
