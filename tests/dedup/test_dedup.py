"""mmtok dedup on real near-duplicates: re-encoded, resized, cropped, PNG and byte copies of real
photos, mirrored copies, reworded captions, and unrelated rows that must stay apart."""

import json
import shutil
from pathlib import Path

import imagehash
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import write_jsonl
from PIL import Image, ImageOps
from typer.testing import CliRunner

from mmtok.cli.app import app
from mmtok.duplicates import _CHUNK, band_candidates, components, hamming_pairs, rechunk
from mmtok.images.phash import phash_image
from mmtok.text.caption import jaccard, shingles
from mmtok.text.minhash import CaptionBands
from mmtok.text.shingle_sets import ShingleSets

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "images"
BASES = ["astronaut.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg", "brick.jpg", "retina.jpg"]
runner = CliRunner()


def save(im: Image.Image, path: Path, **kw) -> str:
    im.save(path, **kw)
    return str(path)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Rows named by what they are; `CLUSTERS` is the truth for --by image."""
    d = tmp_path_factory.mktemp("dedup")
    astro = Image.open(EXAMPLES / "astronaut.jpg").convert("RGB")
    cat = Image.open(EXAMPLES / "chelsea.jpg").convert("RGB")
    w, h = astro.size
    files = {
        "astro": save(astro, d / "astro.jpg", quality=95),
        "astro_q60": save(astro, d / "astro_q60.jpg", quality=60),
        "astro_half": save(astro.resize((w // 2, h // 2), Image.Resampling.BICUBIC), d / "a2.jpg"),
        "astro_crop": save(astro.crop((4, 4, w - 5, h - 3)), d / "astro_crop.jpg", quality=90),
        "astro_png": save(astro, d / "astro.png"),
        "astro_mirror": save(ImageOps.mirror(astro), d / "astro_mirror.jpg", quality=95),
        "cat": save(cat, d / "cat.jpg", quality=95),
        "cat_half": save(cat.resize((cat.width // 2, cat.height // 2)), d / "cat_half.jpg"),
    }
    shutil.copy(files["cat"], d / "cat_copy_other_name.jpg")
    files["cat_copy"] = str(d / "cat_copy_other_name.jpg")
    for name in BASES[2:]:
        im = Image.open(EXAMPLES / name).convert("RGB")
        files[name.split(".")[0]] = save(im, d / f"u_{name.split('.')[0]}.jpg", quality=90)
    files["missing"] = str(d / "nope.jpg")
    captions = {
        "astro": "An astronaut in an orange suit, in front of the flag.",
        "astro_q60": "an astronaut in an orange suit in front of the flag",
        "astro_half": "An astronaut in an orange suit in front of a flag!",
        "astro_crop": "Portrait of a woman smiling",
        "astro_png": "An astronaut in an orange suit, in front of the flag",
        "astro_mirror": "An astronaut in an orange suit, in front of the flag.",
        "cat": "A tabby cat looking to the side.",
        "cat_half": "A tabby cat looking to the side",
        "cat_copy": "A striped cat on a chair",
        "coffee": "A cup of coffee with latte art.",
        "rocket": "A rocket on the launch pad.",
        "brick": "A brick wall.",
        "retina": "A tabby cat looking to the left side.",
        "missing": "An astronaut in an orange suit in front of the flag",
    }
    rows = [
        {"id": name, "image": files[name], "caption": captions[name]}
        for name in [
            "coffee", "astro_q60", "cat", "astro", "rocket", "astro_half", "cat_half",
            "astro_crop", "brick", "astro_png", "cat_copy", "astro_mirror", "retina", "missing",
        ]
    ]  # fmt: skip
    return write_jsonl(d / "in.jsonl", rows), rows


def run(source, out, *args, workers="1"):
    result = runner.invoke(
        app, ["dedup", str(source), "-o", str(out), "-w", workers, "--json", *args]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    kept = pq.read_table(Path(out) / "part-00000.parquet").column("id").to_pylist()
    rejects = {
        r["id"]: r for r in pq.read_table(Path(out) / "__mmtok__" / "rejects.parquet").to_pylist()
    }
    clusters = pq.read_table(Path(out) / "__mmtok__" / "clusters.parquet").to_pylist()
    groups: dict[int, set] = {}
    for c in clusters:
        groups.setdefault(c["cluster_id"], set()).add(c["id"])
    assert doc["counts"]["in"] == len(kept) + len(rejects)
    return doc, kept, rejects, sorted(groups.values(), key=sorted), clusters


ASTRO = {"astro", "astro_q60", "astro_half", "astro_crop", "astro_png"}
CAT = {"cat", "cat_half", "cat_copy"}


def test_image_clusters_and_kept_rows_for_each_policy(dataset, tmp_path):
    source, rows = dataset
    order = [r["id"] for r in rows]
    expected_kept = {"largest": {"astro", "cat"}, "first": {"astro_q60", "cat"}}
    for keep, winners in expected_kept.items():
        doc, kept, rejects, groups, _ = run(source, tmp_path / keep, "--keep", keep)
        assert groups == sorted([ASTRO, CAT], key=sorted)
        losers = (ASTRO | CAT) - winners
        assert set(kept) == set(order) - losers - {"missing"}
        assert kept == [i for i in order if i in set(kept)]  # input order
        assert {i for i, r in rejects.items() if r["reason"] == "duplicate"} == losers
        assert rejects["missing"]["reason"] == "missing_file"
        for loser in losers:
            target = next(iter(winners & (ASTRO if loser in ASTRO else CAT)))
            assert rejects[loser]["message"].startswith(f"duplicate_of={target} ")
        assert doc["duplicates_removed"] == len(losers)
    assert "kind=exact" in rejects["cat_copy"]["message"]  # same bytes, another name
    assert "kind=near" in rejects["astro_crop"]["message"]
    # --keep none drops every member of a cluster
    _, kept, rejects, _, _ = run(source, tmp_path / "none", "--keep", "none")
    assert not (ASTRO | CAT) & set(kept)
    # longest-caption: the longest caption of each cluster
    _, kept, _, _, _ = run(source, tmp_path / "long", "--keep", "longest-caption")
    assert {"astro", "cat"} & set(kept) == {"astro", "cat"}


def test_mirror_only_with_the_flag(dataset, tmp_path):
    source, _ = dataset
    _, _, _, groups, _ = run(source, tmp_path / "plain")
    assert all("astro_mirror" not in g for g in groups)
    _, _, rejects, groups, _ = run(source, tmp_path / "mirror", "--mirror")
    assert ASTRO | {"astro_mirror"} in groups
    assert "kind=mirror" in rejects["astro_mirror"]["message"]


def test_same_output_with_one_and_two_workers(dataset, tmp_path):
    source, _ = dataset
    outputs = []
    for workers in ("1", "2"):
        out = tmp_path / f"w{workers}"
        run(source, out, "--by", "pair", workers=workers)
        outputs.append(
            [
                pq.read_table(out / name).drop_columns([]).to_pylist()
                for name in (
                    "part-00000.parquet",
                    "__mmtok__/rejects.parquet",
                    "__mmtok__/clusters.parquet",
                )
            ]
        )
    assert outputs[0] == outputs[1]


def test_caption_and_pair_modes(dataset, tmp_path):
    source, _ = dataset
    _, _, rejects, groups, _ = run(source, tmp_path / "caption", "--by", "caption")
    # punctuation and case changes merge; a one-word rewording at 0.8 merges, others do not
    assert groups == sorted(
        [
            {"astro", "astro_q60", "astro_half", "astro_png", "astro_mirror"},
            {"cat", "cat_half", "retina"},
        ],
        key=sorted,
    )
    assert "missing" in rejects and rejects["missing"]["reason"] == "missing_file"
    _, _, _, groups, _ = run(source, tmp_path / "pair", "--by", "pair")
    # both image and caption: the cropped astronaut has another caption, the cat copy too
    assert groups == sorted(
        [{"astro", "astro_q60", "astro_half", "astro_png"}, {"cat", "cat_half"}], key=sorted
    )


def test_against_reference_drops_only_contaminated_inputs(dataset, tmp_path):
    source, rows = dataset
    ref = write_jsonl(tmp_path / "ref.jsonl", [r for r in rows if r["id"] in ("astro_half",)])
    train = write_jsonl(tmp_path / "train.jsonl", [r for r in rows if r["id"] != "astro_half"])
    doc, kept, rejects, _, clusters = run(train, tmp_path / "out", "--against", str(ref))
    dropped = {i for i, r in rejects.items() if r["reason"] == "duplicate"}
    assert dropped == ASTRO - {"astro_half"}
    assert "cat_half" in kept and "cat" in kept  # duplicates within the input stay
    assert all("in=reference" in rejects[i]["message"] for i in dropped)
    assert doc["counts"]["in"] == len(rows) - 1


def test_phash_is_imagehash_bit_for_bit():
    for name in BASES:
        im = Image.open(EXAMPLES / name).convert("RGB")
        ours, mirrored = phash_image(im)
        assert ours == int(str(imagehash.phash(im)), 16), name
        assert mirrored == int(str(imagehash.phash(ImageOps.mirror(im))), 16), name


def test_multi_index_search_matches_brute_force():
    rng = np.random.default_rng(3)
    h = rng.integers(0, 2**63, 1500, dtype=np.int64).astype(np.uint64) << np.uint64(1)
    for i in range(0, 400, 2):  # plant pairs at 0..11 bits
        bits = rng.choice(64, int(rng.integers(0, 12)), replace=False)
        h[i + 1] = h[i] ^ np.uint64(int(sum(1 << int(b) for b in bits)))
    # crowded block values: 300 hashes share their low 16 bits, 100 more are one bit off them
    h[400:700] = (h[400:700] & ~np.uint64(0xFFFF)) | np.uint64(0x1234)
    h[700:800] = (h[700:800] & ~np.uint64(0xFFFF)) | np.uint64(0x1234 ^ 0x40)
    h[800:850] = h[400:450] ^ np.uint64(0b1011 << 20)  # 3 bits away, the crowded block equal
    d = np.bitwise_count(h[:, None] ^ h[None, :])
    iu = np.triu_indices(len(h), 1)
    for k in (0, 3, 7):
        found = hamming_pairs(h, h, k, same=True)
        truth = set(zip(*(x[d[iu] <= k].tolist() for x in iu), strict=True))
        assert len(found) == len(truth) and (found.a < found.b).all()
        assert set(zip(found.a.tolist(), found.b.tolist(), strict=True)) == truth
        assert (found.distance == d[found.a, found.b]).all()
    queries = h[::3] ^ np.uint64(0b101)  # another table: every (query, row) pair within k
    d = np.bitwise_count(queries[:, None] ^ h[None, :])
    for k in (0, 3, 7):
        found = hamming_pairs(h, queries, k, same=False)
        truth = set(zip(*(x.tolist() for x in np.nonzero(d <= k)), strict=True))
        assert set(zip(found.a.tolist(), found.b.tolist(), strict=True)) == truth
        assert (found.distance == d[found.a, found.b]).all()


def test_components_are_transitive_and_labelled_by_first_row():
    label = components(7, np.array([5, 1, 3, 6]), np.array([6, 3, 0, 4]))
    assert label.tolist() == [0, 0, 2, 0, 4, 4, 4]


def test_components_grow_from_chunks_as_from_all_pairs_at_once():
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 500, 300), rng.integers(0, 500, 300)
    label = None
    for begin in range(0, 300, 37):
        label = components(500, a[begin : begin + 37], b[begin : begin + 37], label)
    assert (label == components(500, a, b)).all()


def test_a_crowded_band_bucket_comes_in_bounded_chunks_with_every_pair_once():
    size = 800  # 319,600 pairs: more than one chunk, and one bucket alone exceeds it
    assert size * (size - 1) // 2 > _CHUNK
    keys = np.zeros((size + 2, 1), np.uint64)
    keys[-2:] = [[1], [2]]  # two rows alone in their buckets
    rows = np.arange(size + 2) * 10
    chunks = list(rechunk(band_candidates(keys, rows)))
    assert len(chunks) > 1 and all(len(a) <= 2 * _CHUNK for a, _ in chunks)
    codes = np.concatenate([a * 10_000 + b for a, b in chunks])
    assert len(codes) == len(np.unique(codes)) == size * (size - 1) // 2
    assert all((a < b).all() and (a % 10 == 0).all() and b.max() < size * 10 for a, b in chunks)


def test_shingle_sets_give_the_exact_jaccard_of_the_caption_sets():
    captions = pa.array(
        [
            "A red car parked on the street.",
            "a red car, parked on the street",
            "a blue car parked on a street",
            "夕暮れの犬と猫",
            "夕暮れの犬",
            None,
            "Привет, мир! Привет",
        ]
    )
    rows = np.arange(len(captions))
    a, b = (x.ravel() for x in np.meshgrid(rows, rows))
    texts = captions.to_pylist()
    for size in (1, 2):
        sets = ShingleSets(captions, size)
        expected = [
            jaccard(shingles(texts[i] or "", size), shingles(texts[j] or "", size))
            for i, j in zip(a.tolist(), b.tolist(), strict=True)
        ]
        assert sets.jaccard(a, b).tolist() == expected
    assert ShingleSets(captions).jaccard(np.array([0]), np.array([2])).tolist() == [5 / 8]


def test_caption_bands_find_near_duplicates_and_not_strangers():
    bands = CaptionBands().setup()
    texts = [
        "A red car parked on the street.",
        "a red car, parked on the street",
        "Two dogs playing in the snow",
        "A bowl of soup on a wooden table",
    ]
    keys = np.array([bands.keys(t) for t in texts], np.uint64)
    (a, b), *more = rechunk(band_candidates(keys, np.arange(len(texts))))
    assert not more and set(zip(a.tolist(), b.tolist(), strict=True)) == {(0, 1)}
    assert jaccard(shingles(texts[0]), shingles(texts[1])) == 1.0
    assert bands.keys("") is None and bands.keys("!!!") is None
    assert shingles("夕暮れの犬", 1) == {"夕", "暮", "れ", "の", "犬"}


def test_dedup_needs_an_output(dataset):
    source, _ = dataset
    result = runner.invoke(app, ["dedup", str(source)])
    assert result.exit_code == 2 and "give -o" in result.output


def test_stdin_is_read_for_both_passes(dataset, tmp_path):
    source, _ = dataset
    out = tmp_path / "piped"
    result = runner.invoke(
        app, ["dedup", "-", "-o", str(out), "-w", "1", "--json"], input=source.read_text()
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["counts"]["in"] == 14 and doc["duplicates_removed"] == len(ASTRO | CAT) - 2


def test_a_16_bit_or_transparent_copy_of_a_photo_is_its_duplicate(tmp_path):
    """Pixel-mode policy: a 16-bit grey PNG of a photo and a PNG whose margin is transparent
    (over black) are duplicates of the photo and of its flattened JPEG, where imagehash's grey
    conversion clips the 16-bit copy to white and shows the margin black."""
    rgb = Image.open(EXAMPLES / "chelsea.jpg").convert("RGB")
    grey = np.asarray(rgb.convert("L")).astype(np.uint16)
    low = np.random.default_rng(0).integers(0, 256, grey.shape).astype(np.uint16)
    wide = np.where(grey == 255, 65535, grey * 257 + low)
    rgba = rgb.convert("RGBA")
    margin = np.asarray(rgba).copy()
    margin[:, : rgb.width // 4] = 0  # transparent black
    flattened = margin[..., :3].copy()
    flattened[:, : rgb.width // 4] = 255
    files = {
        "photo": save(rgb, tmp_path / "photo.jpg", quality=95),
        "photo_16bit": save(Image.fromarray(wide), tmp_path / "photo_16bit.png"),
        "cutout": save(Image.fromarray(margin, "RGBA"), tmp_path / "cutout.png"),
        "cutout_flat": save(Image.fromarray(flattened), tmp_path / "cutout_flat.jpg", quality=95),
        "coffee": save(Image.open(EXAMPLES / "coffee.jpg").convert("RGB"), tmp_path / "c.jpg"),
    }
    assert Image.open(files["photo_16bit"]).mode == "I;16"
    source = write_jsonl(
        tmp_path / "in.jsonl", [{"id": k, "image": v, "caption": k} for k, v in files.items()]
    )
    _, kept, rejects, groups, _ = run(source, tmp_path / "out", "--keep", "first")
    assert groups == [{"cutout", "cutout_flat"}, {"photo", "photo_16bit"}]
    assert set(kept) == {"photo", "cutout", "coffee"}
    assert rejects["photo_16bit"]["message"].startswith("duplicate_of=photo ")
