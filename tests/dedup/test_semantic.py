"""`mmtok dedup --by embedding`: semantic near-duplicates on stored embeddings, through the CLI.

Two kinds of embeddings:
- a tiny random open_clip model (`mmtok embed`) on real photos with planted copies (re-encoded
  at quality 60, a 90% crop, a half-size copy) and distinct photos. A random model knows no
  photos, so the separation is asserted on the oracle first (open_clip's own `encode_image`,
  brute-force cosines) and the threshold set between; what is tested is that dedup removes
  exactly what brute force over open_clip's embeddings says;
- synthetic vectors built at chosen cosines, for the clusters, kinds and keep policies.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute
import pyarrow.parquet as pq
import pytest
from conftest import encode, photo, write_jsonl
from PIL import Image
from typer.testing import CliRunner

from mmtok.cli.app import app
from mmtok.models.tiny import write_local_dir

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "images"
DISTINCT = ["chelsea.jpg", "coffee.jpg", "rocket.jpg", "brick.jpg", "retina.jpg", "horse.png"]
DISTINCT += ["moon.png", "grass.webp"]
PLANTED = ["astro_q60", "astro_crop90", "astro_half"]
F16_COSINE = 5e-4  # cosines of float16-stored unit vectors against float32 ones (2^-11 each)
runner = CliRunner()


def dedup(source, out, *args):
    result = runner.invoke(
        app, ["dedup", str(source), "-o", str(out), "-w", "1", "--json", "--by", "embedding", *args]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    kept = pq.read_table(Path(out) / "part-00000.parquet").column("id").to_pylist()
    rejects = {
        r["id"]: r for r in pq.read_table(Path(out) / "__mmtok__/rejects.parquet").to_pylist()
    }
    clusters = pq.read_table(Path(out) / "__mmtok__/clusters.parquet").to_pylist()
    assert doc["counts"]["in"] == len(kept) + len(rejects) == doc["counts"]["out"] + len(rejects)
    return doc, kept, rejects, clusters


def groups_of(clusters) -> list[set[str]]:
    groups: dict[int, set] = {}
    for c in clusters:
        groups.setdefault(c["cluster_id"], set()).add(c["id"])
    return sorted(groups.values(), key=sorted)


def brute_force_groups(ids: list[str], vectors: np.ndarray, threshold: float) -> list[set[str]]:
    """Connected components of the pairs with cosine >= threshold, by a plain graph walk."""
    u = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    near = (u @ u.T) >= threshold
    seen, groups = set(), []
    for start in range(len(ids)):
        if start in seen:
            continue
        stack, group = [start], set()
        while stack:
            i = stack.pop()
            if i not in group:
                group.add(i)
                stack.extend(np.flatnonzero(near[i]).tolist())
        seen |= group
        if len(group) > 1:
            groups.append({ids[i] for i in group})
    return sorted(groups, key=sorted)


# --- a tiny open_clip model on real photos ----------------------------------------------------


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    astro = Image.open(EXAMPLES / "astronaut.jpg").convert("RGB")
    w, h = astro.size
    files = {"astro": d / "astro.jpg", "astro_q60": d / "astro_q60.jpg"}
    astro.save(files["astro"], quality=95)
    astro.save(files["astro_q60"], quality=60)
    files["astro_crop90"] = d / "astro_crop90.jpg"  # 90% of each side, centred
    astro.crop((w // 20, h // 20, w - w // 20, h - h // 20)).save(files["astro_crop90"])
    files["astro_half"] = d / "astro_half.jpg"
    astro.resize((w // 2, h // 2), Image.Resampling.BICUBIC).save(files["astro_half"])
    for name in DISTINCT:
        files[name.split(".")[0]] = d / f"{name.split('.')[0]}.jpg"
        Image.open(EXAMPLES / name).convert("RGB").save(files[name.split(".")[0]], quality=90)
    order = ["coffee", "astro_q60", "chelsea", "astro", "rocket", "astro_crop90", "brick"]
    order += ["astro_half", "retina", "horse", "moon", "grass"]
    rows = [{"id": i, "image": str(files[i]), "caption": f"a photo of {i}"} for i in order]
    return write_jsonl(d / "in.jsonl", rows), {i: files[i] for i in order}


@pytest.mark.slow  # embed, then dedup, then the open_clip oracle: about 10 s here
def test_planted_copies_found_by_the_tiny_model_equal_brute_force_over_open_clip(tmp_path, photos):
    import open_clip
    import torch

    source, files = photos
    # seed 2: among the seeds tried, the one whose random weights happen to set these copies
    # apart from the distinct photos (asserted below)
    model = write_local_dir(tmp_path / "tiny-clip", seed=2)
    result = runner.invoke(
        app, ["embed", str(source), "-o", str(tmp_path / "emb"), "--model", f"local-dir:{model}"]
    )
    assert result.exit_code == 0, result.output

    # the oracle: open_clip's own preprocessing and encode_image, fp32, brute-force cosines
    clip, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{model}")
    clip.eval()
    with torch.no_grad():
        x = torch.stack([preprocess(Image.open(p)) for p in files.values()])
        oracle = clip.encode_image(x, normalize=True).numpy()
    ids = list(files)
    cos = oracle @ oracle.T
    astro = ids.index("astro")
    planted = [ids.index(i) for i in PLANTED]
    copies = {astro, *planted}
    distinct_pairs = [cos[a, b] for a in range(len(ids)) for b in range(a) if not {a, b} <= copies]
    low, high = float(cos[astro, planted].min()), float(max(distinct_pairs))
    assert low - high > 4 * F16_COSINE, (low, high)  # the precondition of this test
    threshold = round((low + high) / 2, 4)

    doc, kept, rejects, clusters = dedup(
        tmp_path / "emb", tmp_path / "uniq", "--threshold", str(threshold)
    )
    assert groups_of(clusters) == brute_force_groups(ids, oracle, threshold)
    assert groups_of(clusters) == [{"astro", *PLANTED}]
    # --keep largest: astro and astro_q60 have the most pixels; the smaller id wins the tie
    assert kept == [i for i in ids if i not in PLANTED]
    for copy in PLANTED:
        message = rejects[copy]["message"]
        assert rejects[copy]["reason"] == "duplicate"
        assert message.startswith("duplicate_of=astro kind=embedding cosine=")
        stored = float(message.split("cosine=")[1].split()[0])
        assert stored == pytest.approx(cos[astro, ids.index(copy)], abs=F16_COSINE)
        assert stored >= threshold
    assert doc["removed_by_kind"] == {"embedding": 3}
    assert doc["settings"]["embedding_threshold"] == threshold


# --- synthetic embeddings at chosen cosines ---------------------------------------------------

DIM = 64
THRESHOLD = 0.95


def at_cosine(base: np.ndarray, cosine: float, rng: np.random.Generator) -> np.ndarray:
    """A unit vector whose cosine with the unit vector `base` is exactly `cosine`."""
    noise = rng.normal(size=base.shape)
    noise -= (noise @ base) * base
    noise /= np.linalg.norm(noise)
    return cosine * base + np.sqrt(1 - cosine**2) * noise


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """Rows with image files of known sizes, captions of known lengths and float16 embeddings:

    a  <- a_big (0.99), a_long (0.97):       one cluster
    b  <- b1 (0.97), b1 <- b2 (0.97), b2 is 0.88 from b: one cluster, b2 joins through b1
    c  <- c_near (0.93):                     below the threshold, both stay
    d, e, f: random (cosine near 0);  nothing: no embedding, nobody's duplicate
    """
    d = tmp_path_factory.mktemp("synthetic")
    rng = np.random.default_rng(7)

    def unit():
        v = rng.normal(size=DIM)
        return v / np.linalg.norm(v)

    v = {k: unit() for k in ("a", "b", "c", "d", "e", "f")}
    v["a_big"] = at_cosine(v["a"], 0.99, rng)
    v["a_long"] = at_cosine(v["a"], 0.97, rng)
    v["b1"] = at_cosine(v["b"], 0.97, rng)
    # b2: in the plane of b and b1, one step of arccos(0.97) beyond b1: 0.97 from b1 and
    # cos(2 arccos 0.97) = 0.88 from b
    step = np.arccos(0.97)
    ortho = (v["b1"] - 0.97 * v["b"]) / np.linalg.norm(v["b1"] - 0.97 * v["b"])
    v["b2"] = np.cos(2 * step) * v["b"] + np.sin(2 * step) * ortho
    v["c_near"] = at_cosine(v["c"], 0.93, rng)
    order = ["a", "b", "c_near", "a_big", "d", "b1", "c", "e", "a_long", "b2", "f", "nothing"]
    sizes = {"a_big": (300, 200), "b2": (250, 250), "b1": (40, 40)}
    captions = {"a_long": "a much longer caption than the others have", "b": "b, longest here"}
    rows = []
    for i in order:
        path = d / f"{i}.png"
        path.write_bytes(encode(photo(*sizes.get(i, (64, 48)), seed=len(rows)), "PNG"))
        rows.append({"id": i, "image": str(path), "caption": captions.get(i, i)})
    embedding = [v[i].astype(np.float16).tolist() if i in v else None for i in order]
    table = pa.Table.from_pylist(rows).append_column(
        "image_embedding", pa.array(embedding, pa.list_(pa.float16(), DIM))
    )
    pq.write_table(table, d / "embedded.parquet")
    vectors = np.array([v[i] if i in v else np.zeros(DIM) for i in order])
    return d / "embedded.parquet", order, vectors


A = {"a", "a_big", "a_long"}
B = {"b", "b1", "b2"}


@pytest.mark.parametrize(
    "keep, winners",
    [
        ("largest", {"a_big", "b2"}),  # most pixels
        ("first", {"a", "b"}),  # input order
        ("longest-caption", {"a_long", "b"}),
        ("none", set()),
    ],
)
def test_clusters_kinds_and_keep_policies_at_chosen_cosines(tmp_path, synthetic, keep, winners):
    source, order, vectors = synthetic
    doc, kept, rejects, clusters = dedup(
        source, tmp_path / keep, "--threshold", str(THRESHOLD), "--keep", keep
    )
    assert groups_of(clusters) == [A, B]
    has = [i for i, x in zip(order, vectors, strict=True) if x.any()]
    assert groups_of(clusters) == brute_force_groups(
        has, vectors[[order.index(i) for i in has]], THRESHOLD
    )
    losers = (A | B) - winners
    assert set(rejects) == losers and all(r["reason"] == "duplicate" for r in rejects.values())
    assert kept == [i for i in order if i not in losers]  # input order; c, c_near, nothing stay
    for row in clusters:
        assert row["kept"] == (row["id"] in winners)
    if keep == "none":
        assert all(r["message"].startswith("kept=none kind=") for r in rejects.values())
        return
    u = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)
    for loser in losers:
        target = next(iter(winners & (A if loser in A else B)))
        message = rejects[loser]["message"]
        assert message.startswith(f"duplicate_of={target} kind=")
        cosine = float(u[order.index(loser)] @ u[order.index(target)])
        assert float(message.split("cosine=")[1].split()[0]) == pytest.approx(
            cosine, abs=F16_COSINE
        )
        kind = "embedding" if cosine >= THRESHOLD else "transitive"
        assert f"kind={kind} " in message
        by_id = {c["id"]: c for c in clusters}
        assert by_id[loser]["cosine"] == pytest.approx(cosine, abs=F16_COSINE)
        assert by_id[loser]["kind"] == kind
    if keep == "first":  # b2 is 0.88 from b: in b's cluster only through b1
        assert "kind=transitive" in rejects["b2"]["message"]


def test_a_lower_threshold_joins_what_a_higher_one_keeps_apart(tmp_path, synthetic):
    source, _, _ = synthetic
    _, _, _, clusters = dedup(source, tmp_path / "low", "--threshold", "0.92")
    assert groups_of(clusters) == [A, B, {"c", "c_near"}]
    _, kept, _, clusters = dedup(source, tmp_path / "high", "--threshold", "0.98")
    assert groups_of(clusters) == [{"a", "a_big"}]


def test_against_reference_embeddings_drops_only_contaminated_inputs(tmp_path, synthetic):
    source, order, _ = synthetic
    table = pq.read_table(source)
    is_ref = pa.array([i == "a_big" for i in order])
    pq.write_table(table.filter(is_ref), tmp_path / "ref.parquet")
    pq.write_table(table.filter(pa.compute.invert(is_ref)), tmp_path / "train.parquet")
    doc, kept, rejects, clusters = dedup(
        tmp_path / "train.parquet", tmp_path / "out", "--against", str(tmp_path / "ref.parquet")
    )
    assert set(rejects) == {"a", "a_long"}  # b's cluster is within the input: left alone
    assert all("duplicate_of=a_big " in r["message"] for r in rejects.values())
    assert all(r["message"].endswith("in=reference cluster_size=3") for r in rejects.values())
    assert {c["id"] for c in clusters if c["reference"]} == {"a_big"}
    assert doc["counts"]["in"] == len(order) - 1


def test_inputs_without_embeddings_stop_before_any_pass(tmp_path):
    source = write_jsonl(tmp_path / "plain.jsonl", [{"image": "x.jpg", "caption": "c"}])
    result = runner.invoke(
        app, ["dedup", str(source), "-o", str(tmp_path / "never"), "--by", "embedding"]
    )
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "image_embedding" in result.output and "mmtok embed" in result.output
    assert not (tmp_path / "never").exists()
