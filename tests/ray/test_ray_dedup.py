"""Dedup's candidate searches on a real Ray cluster give exactly the local engine's clusters:
planted near-duplicate images (within and beyond the distance, mirrored, exact copies),
near-duplicate captions, among random signatures."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from ray_cluster import ray_address, ray_driver  # noqa: F401 (fixtures)

pytest.importorskip("ray")

from mmtok.duplicates import Settings, Signatures, find_clusters  # noqa: E402
from mmtok.engine.ray_dedup import find_clusters_on_ray, ray_search, search_blocks  # noqa: E402
from mmtok.hamming import near_pairs  # noqa: E402
from mmtok.text.minhash import CaptionBands  # noqa: E402

pytestmark = pytest.mark.ray

WORDS = [
    "red",
    "blue",
    "green",
    "cat",
    "dog",
    "bird",
    "tree",
    "house",
    "car",
    "boat",
    "sun",
    "moon",
    "sky",
    "sea",
    "road",
    "city",
]


def flip_bits(h: np.uint64, count: int, rng) -> np.uint64:
    for bit in rng.choice(64, count, replace=False).tolist():
        h ^= np.uint64(1 << bit)
    return h


def mirror_of(h: np.ndarray) -> np.ndarray:
    """A stand-in mirror hash: the bits reversed (any fixed bijection serves the search)."""
    bits = np.unpackbits(h.view(np.uint8)).reshape(-1, 64)[:, ::-1]
    return np.packbits(bits).view(np.uint64)


def planted_signatures(n: int, seed: int = 0) -> Signatures:
    rng = np.random.default_rng(seed)
    phash = rng.integers(0, 2**63, n, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    for i in range(0, n - 10, 10):  # near copies at 0..12 bits: inside and outside distance 8
        phash[i + 1] = flip_bits(phash[i], int(rng.integers(0, 13)), rng)
        phash[i + 2] = phash[i]  # an exact hash copy
    mirror = mirror_of(phash)
    for i in range(5, n - 10, 40):  # a mirrored picture, a few bits off
        phash[i] = flip_bits(mirror[i - 3], int(rng.integers(0, 6)), rng)
    mirror = mirror_of(phash)
    sha = rng.integers(0, 2**63, (n, 4), dtype=np.uint64)
    sha[3::17] = sha[0]  # the same file many times
    captions = [" ".join(rng.choice(WORDS, 8).tolist()) for _ in range(n)]
    for i in range(0, n - 10, 7):  # a caption with one word changed, and an exact copy
        words = captions[i].split()
        words[int(rng.integers(0, 8))] = "changed"
        captions[i + 1] = " ".join(words)
        captions[i + 4] = captions[i]
    captions[9] = None
    bands = CaptionBands(0.5).setup()
    keys = [bands.keys(c) for c in captions]
    band_array = np.zeros((n, bands.bands), np.uint64)
    ok = np.array([k is not None for k in keys])
    band_array[ok] = np.array([k for k in keys if k is not None], np.uint64)
    image_ok = np.ones(n, bool)
    image_ok[7::50] = False  # images that could not be read
    return Signatures(
        ids=pa.array([f"row{i:05d}" for i in range(n)]),
        sha256=sha,
        phash=np.where(image_ok, phash, 0).astype(np.uint64),
        mirror=np.where(image_ok, mirror, 0).astype(np.uint64),
        pixels=rng.integers(100, 10_000, n),
        image_ok=image_ok,
        bands=band_array,
        caption_ok=ok,
        captions=pa.array(captions, pa.string()),
        reason=pa.nulls(n, pa.string()),
        message=pa.nulls(n, pa.string()),
        reference=np.zeros(n, bool),
        embedding=np.zeros((n, 0), np.float16),
        embedding_ok=np.zeros(n, bool),
    )


@pytest.fixture(scope="module")
def planted():
    return planted_signatures(3000)


SETTINGS = [
    Settings(by="image", max_distance=8, mirror=True, keep="first"),
    Settings(by="caption", caption_threshold=0.5, keep="longest-caption"),
    Settings(by="pair", max_distance=10, caption_threshold=0.5),
]


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: f"{s.by}-d{s.max_distance}")
def test_clusters_on_ray_equal_the_local_clusters(planted, settings, ray_driver):
    local = find_clusters(planted, settings)
    ray = find_clusters_on_ray(planted, settings, ray_driver)
    assert (local.size > 1).sum() > 100  # the planted duplicates are found
    for field in local.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(ray, field), getattr(local, field), err_msg=field)


@pytest.mark.parametrize("kernel", ["numba", "numpy"])
@pytest.mark.parametrize("max_distance", [2, 13])
def test_hamming_pairs_on_ray_are_the_local_pairs(max_distance, kernel, ray_driver, monkeypatch):
    """Both searches: the numba kernel cut into tasks, and the pigeonhole groups without it."""
    if kernel == "numba":
        pytest.importorskip("numba")
    else:
        monkeypatch.setenv("MMTOK_NO_NUMBA", "1")  # read in the driver, which picks the search
    rng = np.random.default_rng(max_distance)
    h = rng.integers(0, 2**63, 2000, dtype=np.uint64)
    for i in range(0, 2000, 4):
        h[i + 1] = flip_bits(h[i], int(rng.integers(0, max_distance + 3)), rng)
    search = ray_search(ray_driver)
    pairs = search.hamming_pairs(h, h, max_distance, True)
    a, b = near_pairs(h, h, max_distance, True)
    assert len(a) > 0
    assert sorted(zip(pairs.a.tolist(), pairs.b.tolist(), strict=True)) == sorted(
        zip(a.tolist(), b.tolist(), strict=True)
    )  # each pair once, none missing
    queries = mirror_of(h)
    pairs = search.hamming_pairs(h, queries, max_distance, False)
    a, b = near_pairs(h, queries, max_distance, False)
    assert sorted(zip(pairs.a.tolist(), pairs.b.tolist(), strict=True)) == sorted(
        zip(a.tolist(), b.tolist(), strict=True)
    )


def test_search_blocks_cover_every_distance():
    """Pigeonhole: a pair within d bits agrees exactly on at least one searched block."""
    for d in range(17):
        blocks = search_blocks(d)
        assert len(blocks) >= d + 1 and all(b.radius == 0 and b.bits <= 11 for b in blocks)


@pytest.mark.parametrize("same", [True, False])
def test_a_group_is_searched_alike_small_or_large(same):
    """A small group is compared pair by pair, a large one by the multi-index search: the
    same pairs (each once, a < b within one table) either way."""
    from mmtok.engine.ray_dedup import BRUTE_FORCE_CELLS, _group_pairs

    rng = np.random.default_rng(5)
    h = rng.integers(0, 2**63, 1200, dtype=np.uint64)
    h[1::2] = [flip_bits(x, int(rng.integers(0, 12)), rng) for x in h[::2]]
    queries = h if same else h[::-1].copy()
    assert len(h) ** 2 > BRUTE_FORCE_CELLS  # the multi-index branch
    large = set(zip(*(x.tolist() for x in _group_pairs(h, queries, 9, same)), strict=True))
    small = set()
    for lo in range(0, len(h), 200):  # the same pairs, piece by piece through the small branch
        for qlo in range(0, len(h), 200):
            a, b = _group_pairs(h[lo : lo + 200], queries[qlo : qlo + 200], 9, False)
            small |= {(qa + qlo, tb + lo) for qa, tb in zip(a.tolist(), b.tolist(), strict=True)}
    if same:
        small = {(min(p), max(p)) for p in small if p[0] != p[1]}
    assert large == small and len(large) > 100


@pytest.mark.parametrize("same", [True, False])
def test_a_large_group_uses_the_numba_kernel_with_the_same_pairs(same, monkeypatch):
    """Groups of NUMBA_FROM_ROWS hashes and more go to the numba kernel (loaded once per Ray
    worker): the pairs are those of the numpy kernel."""
    pytest.importorskip("numba")
    import mmtok.hamming
    from mmtok.engine.ray_dedup import NUMBA_FROM_ROWS, _group_pairs

    kernels = []
    search = mmtok.hamming.near_pairs
    monkeypatch.setattr(
        "mmtok.engine.ray_dedup.near_pairs",
        lambda *args: kernels.append(args[-1]) or search(*args),
    )
    rng = np.random.default_rng(6)
    h = rng.integers(0, 2**63, NUMBA_FROM_ROWS, dtype=np.uint64)
    h[1::2] = [flip_bits(x, int(rng.integers(0, 12)), rng) for x in h[::2]]
    queries = h if same else h[::-1].copy()
    a, b = _group_pairs(h, queries, 9, same)
    want_a, want_b = search(h, queries, 9, same, "numpy")
    assert kernels == ["numba"]
    assert sorted(zip(a.tolist(), b.tolist(), strict=True)) == sorted(
        zip(want_a.tolist(), want_b.tolist(), strict=True)
    )
    assert len(a) > 1000


def test_the_writing_pass_runs_in_ray_tasks_and_survives_a_killed_one(
    tmp_path, ray_driver, monkeypatch
):
    """dedup --engine ray: the writing pass runs in Ray tasks (one is SIGKILLed in the 2nd
    slice; its batch runs again row by row, each row at its place in the slice) and writes
    the local engine's files, byte for byte."""
    import json
    import os
    from pathlib import Path

    from dedup_stages import KillOnceDedup
    from PIL import Image

    import mmtok
    import mmtok.stages.dedup

    image = tmp_path / "one.png"
    Image.new("RGB", (8, 8), (200, 30, 30)).save(image)
    words = ["red cat", "blue dog", "green bird", "red cat on a tree", "a house by the sea"]
    rows = [{"id": f"r{i:04d}", "image": str(image), "caption": f"{words[i % 5]} {i % 7}"}
            for i in range(800)]  # fmt: skip
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    local = mmtok.dedup(source, tmp_path / "local", by="caption", shard_rows=256, workers=2)
    marker = tmp_path / "killed"

    def stage(decisions, settings):
        return KillOnceDedup(decisions, settings, str(marker), victim="r0300")

    monkeypatch.setattr(mmtok.stages.dedup, "DedupStage", stage)
    ray = mmtok.dedup(
        source,
        tmp_path / "ray",
        by="caption",
        shard_rows=256,
        engine="ray",
        ray_address=ray_driver,
    )
    assert int(marker.read_text()) != os.getpid()  # a Ray task's process, killed

    def files(out: Path) -> dict[str, bytes]:
        names = [*sorted(out.glob("part-*")), *sorted((out / "__mmtok__").glob("*.parquet"))]
        return {p.name: p.read_bytes() for p in names}

    assert files(tmp_path / "ray") == files(tmp_path / "local")
    assert ray["counts"] == local["counts"] and ray["counts"]["rejected_by_reason"]["duplicate"]


def test_crowded_caption_buckets_on_ray_cluster_as_locally(planted, ray_driver):
    """Templated captions crowd band buckets: they are joined by groups in the driver, and the
    search on the cluster gets the rest band by band."""
    import dataclasses

    n = len(planted.ids)
    fixed = ["a", "photo", "of", "the", "dog", "on", "beach"]
    captions = [" ".join([*fixed, str(i)]) for i in range(n // 2)]  # Jaccard 7/9 < 0.8
    captions += [
        " ".join(["stock", "image", "of", "a", "cat", str(i % 50)]) for i in range(n - n // 2)
    ]
    bands = CaptionBands(0.8).setup()
    keys = np.array([bands.keys(c) for c in captions], np.uint64)
    sig = dataclasses.replace(
        planted, captions=pa.array(captions), bands=keys, caption_ok=np.ones(n, bool)
    )
    settings = Settings(by="caption", caption_threshold=0.8)
    local = find_clusters(sig, settings)
    ray = find_clusters_on_ray(sig, settings, ray_driver)
    assert len(np.unique(local.label[: n // 2])) == n // 2  # the template's rows stay apart
    assert len(np.unique(local.label[n // 2 :])) == 50
    for field in local.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(ray, field), getattr(local, field), err_msg=field)
