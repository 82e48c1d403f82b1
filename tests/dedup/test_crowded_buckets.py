"""Crowded caption band buckets (`mmtok.duplicates._crowded_pairs`): templated captions just
under the threshold share band keys by the thousand, and checking their pairs one by one is
quadratic. The grouped join must give exactly the components of checking every pair."""

from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest

from mmtok import duplicates
from mmtok.duplicates import Search, _caption_components, _Components, _crowded_pairs, components
from mmtok.text.minhash import CaptionBands
from mmtok.text.shingle_sets import ShingleSets

WORDS = [f"w{i}" for i in range(400)]


def captions(rng: np.random.Generator, n: int) -> list[str | None]:
    """Rows of one to three templates (fixed words and 1-3 varying slots, each a word of its
    own or one of a few), with extra words now and then, repeats, near-empty captions and
    unrelated ones: what a crowded band bucket holds."""
    templates = [
        list(rng.choice(WORDS[:60], rng.integers(2, 12), replace=False))
        for _ in range(rng.integers(1, 4))
    ]
    few = WORDS[60 : 60 + int(rng.integers(2, 6))]
    out: list[str | None] = []
    for i in range(n):
        kind = rng.random()
        if kind < 0.03:
            out.append(rng.choice(["", "!!!", None]))
        elif kind < 0.1 and out:
            out.append(out[rng.integers(len(out))])  # a repeat
        elif kind < 0.15:
            out.append(" ".join(rng.choice(WORDS, rng.integers(1, 15))))
        else:
            words = list(templates[rng.integers(len(templates))])
            for slot in range(rng.integers(1, 4)):
                word = f"n{i}x{slot}" if rng.random() < 0.7 else rng.choice(few)
                words.insert(rng.integers(len(words) + 1), word)
            if rng.random() < 0.15:
                words.append(rng.choice(few))
            out.append(" ".join(words))
    return out


def every_pair(sets: ShingleSets, n: int, rows: np.ndarray, threshold: float) -> np.ndarray:
    a, b = np.triu_indices(len(rows), 1)
    a, b = rows[a], rows[b]
    keep = sets.jaccard(a, b) >= threshold
    return components(n, a[keep], b[keep])


def test_a_crowded_bucket_joins_exactly_what_checking_every_pair_joins():
    grouped = declined = joins = 0
    for seed in range(120):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(70, 400))
        texts = pa.array(captions(rng, n))
        rows = np.sort(rng.choice(n, int(rng.integers(65, n + 1)), replace=False))
        threshold = float(rng.choice([0.5, 0.7, 0.75, 0.8, 0.9, 1.0]))
        size = int(rng.choice([1, 1, 2]))
        sets = ShingleSets(texts, size)
        expected = every_pair(sets, n, rows, threshold)
        joined = _Components(n)

        def similar(a, b, sets=sets, threshold=threshold):
            return sets.jaccard(a, b) >= threshold

        if not _crowded_pairs(rows, sets, threshold, joined, similar):
            declined += 1
            continue
        grouped += 1
        joins += int((expected != np.arange(n)).sum())
        assert (joined.label == expected).all(), seed
    # both ways were taken, and the grouped way joined rows (the comparison has teeth)
    assert grouped >= 40 and declined >= 5 and joins > 1000, (grouped, declined, joins)


class CountingSets(ShingleSets):
    checked = 0

    def jaccard(self, a, b):
        CountingSets.checked += len(a)
        return super().jaccard(a, b)


def caption_labels(texts: list[str], crowded: int, monkeypatch) -> tuple[np.ndarray, int]:
    monkeypatch.setattr(duplicates, "_CROWDED", crowded)
    bands = CaptionBands().setup()
    keys = [bands.keys(t) for t in texts]
    sig = SimpleNamespace(
        caption_ok=np.array([k is not None for k in keys]),
        bands=np.array([k for k in keys if k is not None], np.uint64),
    )
    assert sig.caption_ok.all()
    CountingSets.checked = 0
    sets = CountingSets(pa.array(texts))
    joined = _Components(len(texts))
    _caption_components(sig, sets, 0.8, joined, Search())
    return joined.label, CountingSets.checked


@pytest.mark.parametrize("words", [7, 8, 9])
def test_templated_captions_cluster_as_with_a_check_per_pair_in_linear_checks(words, monkeypatch):
    """Captions of one template and a number: with 7 fixed words their Jaccard is 7/9 (under
    0.8, all apart), with 9 it is 9/11 (over: one cluster); a second template's rows join
    among themselves. Every pair shares band keys often, so the pairwise search checks
    ~n^2/2 pairs; the grouped one a few per row, and joins the same rows."""
    fixed = ["a", "photo", "of", "the", "dog", "on", "beach", "at", "dawn"][:words]
    other = ["stock", "image", "number"]
    texts = [" ".join([*fixed, str(i)]) for i in range(900)]
    texts += [" ".join([*other, str(i % 40)]) for i in range(300)]
    pairwise, pairwise_checks = caption_labels(texts, 10**9, monkeypatch)
    grouped, grouped_checks = caption_labels(texts, 64, monkeypatch)
    assert (grouped == pairwise).all()
    assert len(np.unique(pairwise[:900])) == (900 if words == 7 else 1)
    assert len(np.unique(pairwise[900:])) == 40  # repeats of each number join; numbers apart
    assert pairwise_checks > 50_000 and grouped_checks < 5 * len(texts), (
        pairwise_checks,
        grouped_checks,
    )
