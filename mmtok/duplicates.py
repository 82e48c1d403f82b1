"""Duplicate clusters over compact signatures: pure numpy, no pass over the data.

- Image near-duplicates: 64-bit perceptual hashes within `max_distance` Hamming bits, found
  exactly at any distance by multi-index hashing with the generalised pigeonhole principle
  (`mmtok.hamming`). Equal hashes are collapsed first, so a thousand copies of one picture
  cost one lookup.
- Caption near-duplicates: rows sharing any LSH band key are candidates, then verified with
  their exact Jaccard similarity (integer shingle sets, many pairs at once), in bounded chunks;
  a candidate whose rows are already joined is not verified again. A crowded band bucket
  (templated captions) is joined by groups of rows with the same shared shingles, in
  O(groups x rows) rather than a check per pair, with the same components.
- Semantic near-duplicates: stored embeddings (an `mmtok embed` output) within a cosine
  threshold, SemDeDup-style (`mmtok.models.semdedup`: k-means clusters, exact pairs inside).
- Clusters: connected components (union by minimum label, then pointer jumping), so a cluster
  is labelled by its first row and is the same whatever order the pairs came in.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmtok.errors import MmtokError
from mmtok.hamming import near_pairs
from mmtok.text.shingle_sets import ShingleSets

_CHUNK = 1 << 18  # candidate pairs expanded at a time (bounded memory)
# Rows sharing one band key past which `_crowded_pairs` joins them instead of a check per pair
_CROWDED = 64


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


def same_file_pairs(sha256: np.ndarray, rows: np.ndarray) -> Pairs:
    """Rows among `rows` whose files have the same sha256 (rows x 4 uint64), each paired with
    the first such row. Grouped on the first 64 bits (a 1-d sort, several times faster than
    sorting whole rows); if two different files ever share them, on the whole digest."""
    pairs, _ = equal_pairs(sha256[rows, 0], rows)
    if (sha256[pairs.a] != sha256[pairs.b]).any():
        pairs, _ = equal_pairs(sha256[rows], rows)
    return pairs


def hamming_pairs(table: np.ndarray, queries: np.ndarray, max_distance: int, same: bool) -> Pairs:
    """Pairs (query index, table index) whose hashes are within `max_distance` bits, exactly
    (`mmtok.hamming`). `same`: the queries are the table itself; each unordered pair is
    returned once (a < b)."""
    a, b = near_pairs(table, queries, max_distance, same)
    return Pairs(a, b, np.bitwise_count(queries[a] ^ table[b]).astype(np.int64))


def image_pairs(
    phash: np.ndarray,
    mirror: np.ndarray | None,
    valid: np.ndarray,
    max_distance: int,
    search: Search | None = None,
) -> Pairs:
    """Near-duplicate image pairs among `valid` rows (mirror images too when `mirror` is given)."""
    search = search or Search()
    rows = np.flatnonzero(valid)
    exact, reps = equal_pairs(phash[rows], rows)
    h = phash[reps]
    near = search.hamming_pairs(h, h, max_distance, True)
    parts = [exact, Pairs(reps[near.a], reps[near.b], near.distance)]
    if mirror is not None:
        flipped = search.hamming_pairs(h, mirror[reps], max_distance, False)
        keep = flipped.a != flipped.b  # a symmetric picture is its own mirror
        parts.append(Pairs(reps[flipped.a[keep]], reps[flipped.b[keep]], flipped.distance[keep]))
        # rows equal to a representative match its mirror partners too: equal_pairs unions them
    return Pairs.concat(parts)


def band_candidates(bands: np.ndarray, rows: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Row pairs sharing an LSH band key (`bands`: rows x b uint64), in chunks of about
    `_CHUNK` pairs so a crowded bucket never sits in memory at once. A pair sharing several
    bands comes once per band."""
    for column in bands.T:
        order = np.argsort(column, kind="stable")
        sorted_keys = column[order]
        starts = np.flatnonzero(np.concatenate([[True], sorted_keys[1:] != sorted_keys[:-1]]))
        sizes = np.diff(np.concatenate([starts, [len(column)]]))
        for size in np.unique(sizes[sizes > 1]).tolist():
            members = order[starts[sizes == size][:, None] + np.arange(size)]  # groups x size
            for a, b in _pairs_within(members):
                yield rows[a], rows[b]


def _pairs_within(members: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Every pair inside each row of `members` (groups x size)."""
    groups, size = members.shape
    per_group = size * (size - 1) // 2
    if per_group <= _CHUNK:
        i, j = np.triu_indices(size, 1)
        step = max(1, _CHUNK // per_group)
        for g in range(0, groups, step):
            block = members[g : g + step]
            yield block[:, i].ravel(), block[:, j].ravel()
        return
    for group in members:  # one bucket of over ~700 rows: each member with those after it
        for k in range(size - 1):
            yield np.full(size - k - 1, group[k]), group[k + 1 :]


@dataclass(frozen=True)
class Search:
    """The two candidate searches of clustering, swappable as a pair: in this process (the
    default) or across a cluster (`mmtok.engine.ray_dedup`), which must find the same pairs."""

    hamming_pairs: Callable[[np.ndarray, np.ndarray, int, bool], Pairs] = hamming_pairs
    band_candidates: Callable[[np.ndarray, np.ndarray], Iterable[tuple[np.ndarray, np.ndarray]]] = (
        band_candidates
    )


def rechunk(
    chunks: Iterable[tuple[np.ndarray, np.ndarray]],
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The same pairs in chunks of at least `_CHUNK` (the last one excepted), each pair once
    per chunk."""
    a_parts: list[np.ndarray] = []
    b_parts: list[np.ndarray] = []
    count = 0

    def flush():
        a, b = np.concatenate(a_parts), np.concatenate(b_parts)
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        _, first = np.unique(lo * (int(hi.max()) + 1) + hi, return_index=True)
        return lo[first], hi[first]

    for a, b in chunks:
        a_parts.append(a)
        b_parts.append(b)
        count += len(a)
        if count >= _CHUNK:
            yield flush()
            a_parts, b_parts, count = [], [], 0
    if count:
        yield flush()


def components(n: int, a: np.ndarray, b: np.ndarray, label: np.ndarray | None = None) -> np.ndarray:
    """Component label of each of n rows: the smallest row index in its component.

    `label`: the labels of earlier pairs (each row pointing at its root), to add pairs to."""
    label = np.arange(n) if label is None else label.copy()
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
    first = sorted_labels[1:] != sorted_labels[:-1]
    first = np.concatenate([np.ones(min(len(label), 1), bool), first])  # no rows: none first
    kept_of_label = np.empty(len(label), np.int64)
    kept_of_label[sorted_labels[first]] = order[first]
    return kept_of_label[label]


# --- from signatures to decisions ------------------------------------------------------------


@dataclass
class Signatures:
    """The signature columns of every row of a run, in stream order (inputs, then references).

    Columnar (Arrow strings, numpy numbers): about 70 bytes per row (200 with caption band
    keys) plus the id and caption text."""

    ids: pa.Array  # string
    sha256: np.ndarray  # rows x 4 uint64 (zeros where the image was not read)
    phash: np.ndarray  # uint64 (0 where invalid)
    mirror: np.ndarray  # uint64
    pixels: np.ndarray  # int64 (-1 where unknown)
    image_ok: np.ndarray  # bool: the image was hashed
    bands: np.ndarray  # rows x b uint64 (zeros where the caption has no words)
    caption_ok: np.ndarray  # bool
    captions: pa.Array  # string, null where none
    reason: pa.Array  # string, null unless the row's image could not be read
    message: pa.Array  # string
    reference: np.ndarray  # bool: a row of --against
    embedding: np.ndarray  # rows x D float16 (zeros where none; D = 0 unless --by embedding)
    embedding_ok: np.ndarray  # bool: the row has an embedding

    @classmethod
    def from_table(cls, table: pa.Table, reference: bool, band_count: int) -> Signatures:
        def column(name: str) -> pa.Array:
            return table.column(name).combine_chunks()

        def numbers(name: str, fill: int, dtype) -> np.ndarray:
            values = column(name).fill_null(fill).to_numpy(zero_copy_only=False)
            return values.astype(dtype, copy=False)

        n = table.num_rows
        sha = column("sha256").fill_null(pa.scalar(bytes(32), pa.binary(32)))
        raw = np.frombuffer(sha.buffers()[1], np.uint8)[sha.offset * 32 : (sha.offset + n) * 32]
        embedding, embedding_ok = _embeddings(
            column("sig_embedding")
            if "sig_embedding" in table.column_names  # (only --by embedding needs it)
            else pa.nulls(n, pa.list_(pa.float16()))
        )
        bands_col = column("caption_bands")
        caption_ok = bands_col.is_valid().to_numpy(zero_copy_only=False)
        bands = np.zeros((n, band_count), np.uint64)
        if caption_ok.any():
            flat = bands_col.flatten().to_numpy(zero_copy_only=False).astype(np.uint64)
            bands[caption_ok] = flat.reshape(-1, band_count)
        return cls(
            ids=column("id").cast(pa.string()),
            sha256=raw.reshape(n, 32).view(np.uint64).copy(),
            phash=numbers("phash", 0, np.uint64),
            mirror=numbers("phash_mirror", 0, np.uint64),
            pixels=numbers("pixels", -1, np.int64),
            image_ok=column("phash").is_valid().to_numpy(zero_copy_only=False),
            bands=bands,
            caption_ok=caption_ok,
            captions=column("caption").cast(pa.string()),
            reason=column("sig_reason"),
            message=column("sig_message"),
            reference=np.full(n, reference),
            embedding=embedding,
            embedding_ok=embedding_ok,
        )

    @classmethod
    def concat(cls, parts: list[Signatures]) -> Signatures:
        def join(name):
            values = [getattr(p, name) for p in parts]
            if isinstance(values[0], pa.Array):
                return pa.concat_arrays(values)
            if name == "embedding":
                values = _same_width(values)
            return np.concatenate(values)

        return cls(**{name: join(name) for name in cls.__dataclass_fields__})

    def __len__(self) -> int:
        return len(self.ids)


def _embeddings(column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A list<float16> column as a rows x D float16 matrix (zeros where null) and its mask."""
    n = len(column)
    ok = column.is_valid().to_numpy(zero_copy_only=False)
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)[ok]
    dim = int(lengths[0]) if len(lengths) else 0
    if (lengths != dim).any():
        raise MmtokError(
            f"embeddings of different lengths ({sorted(set(lengths.tolist()))[:4]})",
            hint="dedup one model's embeddings at a time",
        )
    matrix = np.zeros((n, dim), np.float16)
    if dim:
        values = column.filter(pa.array(ok)).flatten().to_numpy(zero_copy_only=False)
        matrix[ok] = values.astype(np.float16, copy=False).reshape(-1, dim)
    return matrix, ok


def _same_width(matrices: list[np.ndarray]) -> list[np.ndarray]:
    """Parts with no embedding (width 0) widened to the others' width; two widths: an error."""
    widths = {m.shape[1] for m in matrices} - {0}
    if len(widths) > 1:
        raise MmtokError(
            f"the inputs hold embeddings of different widths {sorted(widths)}",
            hint="dedup one model's embeddings at a time",
        )
    dim = widths.pop() if widths else 0
    return [m if m.shape[1] == dim else np.zeros((len(m), dim), np.float16) for m in matrices]


@dataclass(frozen=True)
class Settings:
    by: str = "image"  # image | caption | pair | embedding
    max_distance: int = 8
    mirror: bool = False
    caption_threshold: float = 0.8
    shingle_size: int = 1
    keep: str = "largest"
    embedding_threshold: float = 0.95  # cosine


# why a dropped row is a duplicate of its cluster's kept row (Clusters.kind holds the index)
KINDS = (None, "member", "exact", "near", "mirror", "caption", "transitive", "embedding")
MEMBER, EXACT, NEAR, MIRROR, CAPTION, TRANSITIVE, EMBEDDING = range(1, len(KINDS))


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
    cosine: np.ndarray  # embedding cosine with the kept row, nan when not applicable
    kind: np.ndarray  # int8 index into KINDS; 0 unless dropped

    def kind_names(self, rows: np.ndarray) -> list[str | None]:
        return [KINDS[k] for k in self.kind[rows].tolist()]


class _Components:
    """Connected components grown from chunks of pairs. A pair whose rows are already in one
    component cannot change them, so it is skipped before its (costly) check."""

    def __init__(self, n: int):
        self.label = np.arange(n)

    def add(self, a: np.ndarray, b: np.ndarray, check: Callable | None = None) -> None:
        apart = self.label[a] != self.label[b]
        a, b = a[apart], b[apart]
        if check is not None and len(a):
            passed = check(a, b)
            a, b = a[passed], b[passed]
        if len(a):
            self.label = components(len(self.label), a, b, self.label)


def _caption_components(
    sig: Signatures, sets: ShingleSets, threshold: float, joined: _Components, search: Search
) -> None:
    """Join rows whose captions are near-duplicates: candidates share an LSH band key, and
    each is verified. Rows with identical band keys (the same caption, mostly) are paired
    with the first of them only, so a caption repeated n times costs n checks, not n^2/2.
    A crowded band bucket is joined by `_crowded_pairs` instead, and left out of the search."""

    def similar(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return sets.jaccard(a, b) >= threshold

    rows = np.flatnonzero(sig.caption_ok)
    if len(rows) == 0:
        return
    same, reps = equal_pairs(_fold(sig.bands[rows]), rows)
    joined.add(same.a, same.b, similar)
    bands = sig.bands[reps]
    searched = np.ones(bands.shape, bool)  # (row, band) cells whose bucket the search gets
    for k in range(bands.shape[1]):
        for members in _crowded_buckets(bands[:, k]):
            if _crowded_pairs(reps[members], sets, threshold, joined, similar):
                searched[members, k] = False
    if searched.all():
        candidates = search.band_candidates(bands, reps)
    else:  # band by band, without the crowded buckets
        candidates = itertools.chain.from_iterable(
            search.band_candidates(bands[keep, k][:, None], reps[keep])
            for k, keep in enumerate(searched.T)
        )
    for a, b in rechunk(candidates):
        joined.add(a, b, similar)


def _crowded_buckets(keys: np.ndarray) -> Iterator[np.ndarray]:
    """The positions in `keys` of each bucket (equal keys) of more than `_CROWDED` rows."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    starts = np.flatnonzero(np.concatenate([[True], sorted_keys[1:] != sorted_keys[:-1]]))
    sizes = np.diff(np.concatenate([starts, [len(keys)]]))
    for start, size in zip(
        starts[sizes > _CROWDED].tolist(), sizes[sizes > _CROWDED].tolist(), strict=True
    ):
        yield order[start : start + size]


def _crowded_pairs(
    rows: np.ndarray,
    sets: ShingleSets,
    threshold: float,
    joined: _Components,
    similar: Callable,
) -> bool:
    """Join the rows of a crowded band bucket (every pair of them a candidate) exactly as
    checking every pair would, in O(groups x rows) instead of O(rows^2); False (nothing done)
    when the captions are too varied for that to pay.

    A shingle only one row of the bucket holds is shared with no other row, so the overlap of
    two rows is that of their shared parts (the shingles two or more rows hold). Rows with
    the same shared part form a group, and a row of group g overlaps any row of group h by
    ov(g, h) shingles. Jaccard = ov / (len a + len b - ov) falls as a length grows, so if a
    pair (a in g, b in h) passes, so do (s_g, b), (a, s_h) and (s_g, s_h), s being a group's
    shortest row: joining each group's shortest row with the rows it passes with joins the
    same components. Templated captions ("a photo of a dog on the beach 17") just under the
    threshold are thousands of rows in one or a few groups, whose n^2/2 checks all fail."""
    ids, length = sets.members(rows)
    m = len(rows)
    owner = np.repeat(np.arange(m), length)
    _, shingle, held_by = np.unique(ids, return_inverse=True, return_counts=True)
    shared = held_by[shingle] >= 2
    shingle, owner = shingle[shared], owner[shared]  # each row's shared part, in row order
    size = np.bincount(owner, minlength=m)
    ends = np.cumsum(size).tolist()
    names: dict[bytes, int] = {}
    group = np.fromiter(
        (
            names.setdefault(shingle[e - n : e].tobytes(), len(names))
            for e, n in zip(ends, size.tolist(), strict=True)
        ),
        np.int64,
        m,
    )
    groups = len(names)
    if groups * 2 > m:
        return False
    # each group's shortest row (then its first), and the shared part it holds
    order = np.lexsort((np.arange(m), length, group))
    shortest = order[
        np.flatnonzero(np.concatenate([[True], group[order][1:] != group[order][:-1]]))
    ]
    # inverted index: shingle -> groups holding it (each group's part counted once)
    mine = np.zeros(m, bool)
    mine[shortest] = True
    held = mine[owner]
    part_shingle, part_group = shingle[held], group[owner[held]]
    by_shingle = np.argsort(part_shingle, kind="stable")
    holders = part_group[by_shingle]
    first = np.searchsorted(part_shingle[by_shingle], np.arange(int(shingle.max(initial=-1)) + 2))
    found: list[np.ndarray] = []
    found_from: list[np.ndarray] = []
    pending = 0
    by_group = np.argsort(part_group, kind="stable")
    bounds = np.searchsorted(part_group[by_group], np.arange(groups + 1)).tolist()
    for g, s in enumerate(shortest.tolist()):
        own = part_shingle[by_group[bounds[g] : bounds[g + 1]]]
        starts, counts = first[own], first[own + 1] - first[own]
        at = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(int(counts.sum()))
        overlap = np.bincount(holders[at], minlength=groups)[group]  # with each row
        union = length[s] + length - overlap
        jaccard = np.divide(overlap, union, out=np.ones(m), where=union > 0)
        passing = np.flatnonzero(jaccard >= threshold)  # as `ShingleSets.jaccard` computes it
        passing = rows[passing[passing != s]]
        found.append(passing)
        found_from.append(np.full(len(passing), rows[s]))
        pending += len(passing)
        if pending >= _CHUNK or g == groups - 1:  # joined a chunk at a time: each join is O(n)
            joined.add(np.concatenate(found_from), np.concatenate(found), similar)
            found, found_from, pending = [], [], 0
    return True


def _fold(bands: np.ndarray) -> np.ndarray:
    """One 64-bit key per row of band keys: a multiply-add with fixed odd constants. Equal rows
    give equal keys; two unequal rows collide with odds of about 2**-64, and then the check of
    their pair fails and the second row sits out the band search."""
    constants = np.random.default_rng(0x6D6D746F6B).integers(1, 2**63, bands.shape[1], np.uint64)
    return (bands * (constants | np.uint64(1))).sum(axis=1, dtype=np.uint64)


def find_clusters(sig: Signatures, settings: Settings, search: Search | None = None) -> Clusters:
    """`search`: where candidate pairs are searched (default: here; see `Search`)."""
    search = search or Search()
    n = len(sig)
    sets = ShingleSets(sig.captions, settings.shingle_size)

    def similar(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return sets.jaccard(a, b) >= settings.caption_threshold

    joined = _Components(n)
    if settings.by in ("image", "pair"):
        rows = np.flatnonzero(sig.image_ok)
        exact = same_file_pairs(sig.sha256, rows)
        mirror = sig.mirror if settings.mirror else None
        near = image_pairs(sig.phash, mirror, sig.image_ok, settings.max_distance, search)
        pairs = Pairs.concat([exact, near])
        a, b = pairs.a, pairs.b
        if settings.by == "pair":  # the image pairs whose captions are near-duplicates too
            both = sig.caption_ok[a] & sig.caption_ok[b]
            a, b = a[both], b[both]
            for begin in range(0, len(a), _CHUNK):
                joined.add(a[begin : begin + _CHUNK], b[begin : begin + _CHUNK], similar)
        else:
            joined.add(a, b)
    if settings.by == "caption":
        _caption_components(sig, sets, settings.caption_threshold, joined, search)
    if settings.by == "embedding":
        from mmtok.models.semdedup import near_pairs as embedding_pairs  # imports Pairs from here

        rows = np.flatnonzero(sig.embedding_ok)
        pairs = embedding_pairs(sig.embedding[rows], settings.embedding_threshold)
        joined.add(rows[pairs.a], rows[pairs.b])
    label = joined.label
    size = np.bincount(label, minlength=n)[label]

    id_rank = np.empty(n, np.int64)
    id_rank[pc.sort_indices(sig.ids).to_numpy()] = np.arange(n)
    caption_len = pc.utf8_length(sig.captions).fill_null(0).to_numpy(zero_copy_only=False)
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
    rows = np.arange(n)
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
        caption_similarity[both_captions & (target == rows)] = 1.0
        others = np.flatnonzero(both_captions & (target != rows))
        caption_similarity[others] = sets.jaccard(others, target[others])

    cosine = np.full(n, np.nan)
    if settings.by == "embedding":
        both = np.flatnonzero((size > 1) & sig.embedding_ok & sig.embedding_ok[target])
        cosine[both] = _cosines(sig.embedding, both, target[both])

    same_file = both_images & (sig.sha256 == sig.sha256[target]).all(axis=1)
    if settings.by == "caption":
        similar_kind = np.where(caption_similarity >= settings.caption_threshold, CAPTION, 0)
    elif settings.by == "embedding":
        similar_kind = np.where(cosine >= settings.embedding_threshold, EMBEDDING, 0)
    else:
        within = (image_distance >= 0) & (image_distance <= settings.max_distance)
        similar_kind = np.where(within, np.where(plain <= settings.max_distance, NEAR, MIRROR), 0)
    kind = np.select(
        [target == rows, same_file, similar_kind > 0],  # target == row: --keep none
        [MEMBER, EXACT, similar_kind],
        TRANSITIVE,
    ).astype(np.int8)
    kind[~dropped] = 0
    return Clusters(label, size, kept, dropped, image_distance, caption_similarity, cosine, kind)


def _cosines(embedding: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of rows a[i] and b[i] in float32, as the pair search computes it (unit vectors
    first), 16,384 pairs at a time."""

    def unit(rows: np.ndarray) -> np.ndarray:
        x = embedding[rows].astype(np.float32)
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        return x / np.where(norms == 0, 1, norms)

    out = np.empty(len(a), np.float32)
    for start in range(0, len(a), 1 << 14):
        x, y = unit(a[start : start + (1 << 14)]), unit(b[start : start + (1 << 14)])
        out[start : start + len(x)] = np.einsum("nd,nd->n", x, y)
    return np.clip(out, -1, 1)  # a row with itself: 1.0000001 in float32
