"""`mmtok dedup` on synthetic rows with known duplicates: rate of each pass, peak memory, and
precision / recall of the duplicate pairs found against the planted ones.

  python benchmarks/dedup.py             # 200,000 rows (files generated once, a few minutes)
  python benchmarks/dedup.py --quick     # 20,000 rows
  python benchmarks/dedup.py --memory 1000000   # only the clustering pass's memory per row
  python benchmarks/dedup.py --scaling 100000,300000,1000000 --baseline /path/to/old/checkout
      # the image clustering pass alone at each size: numba and numpy kernels (and an older
      # mmtok, when given), rows/s, CPU seconds, memory per row and the scaling exponent;
      # --kernels auto,numpy,faiss adds the search alone against faiss-cpu's multi-hash index
  python benchmarks/dedup.py --templated 2000,5000,20000,200000
      # templated captions (crowded band buckets): the caption clustering pass grouped against a
      # check per candidate pair (skipped past 20,000 rows: quadratic), and the whole command

Rows: random multi-octave "photos" (128 px, so 200k files generate in minutes), a fifth of them with
planted copies: re-encoded at JPEG quality 60, resized to half, cropped by 3 px, converted to
PNG, byte copies under another name, and mirrored (a duplicate only with --mirror). Captions:
10 words from a 5,000-word vocabulary; copies get a punctuation change or one word replaced.

Per-core rates, each next to a reference measured in the same run:
- image signatures on 512 px JPEGs (sha256 + perceptual hash + mirror hash), against
  `imagehash.phash` on the same bytes;
- caption band keys, against datasketch `MinHash(num_perm=128)` updated word by word;
- the clustering pass over the signatures of all rows, against `datasketch.MinHashLSH`
  insert + query for the captions.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import resource
import subprocess
import sys
import tempfile
import time
from itertools import combinations
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

KINDS = ["q60", "half", "crop", "png", "copy", "mirror"]


def smooth_photo(rng: np.random.Generator, side: int) -> Image.Image:
    """Random noise in five octaves, amplitude falling with frequency (about 1/f, as in
    photographs): one flat octave would make every crop move the hash far more than a photo's."""
    acc = np.full((side, side, 3), 128.0)
    for cells, amplitude in ((3, 70), (6, 40), (12, 25), (24, 15), (48, 9)):
        coarse = rng.normal(0, amplitude, (cells, cells, 3)).astype(np.float32)
        for k in range(3):
            layer = Image.fromarray(coarse[..., k], "F").resize(
                (side, side), Image.Resampling.BICUBIC
            )
            acc[..., k] += np.asarray(layer)
    acc += rng.normal(0, 4, acc.shape)
    return Image.fromarray(acc.clip(0, 255).astype(np.uint8))


def variant(im: Image.Image, kind: str) -> tuple[bytes, str]:
    buf = io.BytesIO()
    w, h = im.size
    if kind == "q60":
        im.save(buf, "JPEG", quality=60)
    elif kind == "half":
        im.resize((w // 2, h // 2), Image.Resampling.BICUBIC).save(buf, "JPEG", quality=90)
    elif kind == "crop":
        im.crop((3, 3, w - 3, h - 3)).save(buf, "JPEG", quality=90)
    elif kind == "png":
        im.save(buf, "PNG", compress_level=1)
        return buf.getvalue(), "png"
    elif kind == "mirror":
        ImageOps.mirror(im).save(buf, "JPEG", quality=90)
    return buf.getvalue(), "jpg"


def reword(rng, words: list[str], vocab: list[str]) -> str:
    words = list(words)
    if rng.random() < 0.5:
        return " ".join(words).capitalize() + "."  # punctuation and case
    words[int(rng.integers(len(words)))] = vocab[int(rng.integers(len(vocab)))]
    return " ".join(words)


def make_dataset(folder: Path, rows: int, seed: int = 0):
    """Writes the files and rows.jsonl; returns (rows.jsonl, group per row, kind per row)."""
    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(5000)]
    groups, kinds, lines = [], [], []
    base = 0
    while len(lines) < rows:
        im = smooth_photo(rng, 128)
        words = [vocab[int(i)] for i in rng.integers(0, len(vocab), 10)]
        path = folder / f"{base}.jpg"
        im.save(path, quality=90)
        members = [("base", path, " ".join(words))]
        if rng.random() < 0.2:
            for kind in KINDS:
                if kind == "copy":
                    data, ext = path.read_bytes(), "jpg"
                else:
                    data, ext = variant(im, kind)
                vpath = folder / f"{base}_{kind}.{ext}"
                vpath.write_bytes(data)
                members.append((kind, vpath, reword(rng, words, vocab)))
        for kind, p, caption in members:
            lines.append(json.dumps({"id": f"r{len(lines)}", "image": str(p), "caption": caption}))
            groups.append(base)
            kinds.append(kind)
        base += 1
    lines, groups, kinds = lines[:rows], groups[:rows], kinds[:rows]
    (folder / "rows.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "rows.jsonl", np.array(groups), kinds


def signature_rate(folder: Path) -> tuple[float, float, float, float]:
    """(mmtok images/s, imagehash images/s) on one core, 512 px JPEGs; then (images/s with the
    per-worker memory of recent files, without it) on 300 rows of 40 distinct files."""
    import imagehash

    from mmtok.stages import signature
    from mmtok.stages.signature import SignatureStage

    rng = np.random.default_rng(1)
    blobs = []
    for _ in range(300):
        buf = io.BytesIO()
        smooth_photo(rng, 512).save(buf, "JPEG", quality=90)
        blobs.append(buf.getvalue())

    def rate(rows: list[bytes]) -> float:
        stage = SignatureStage(images=True, captions=None)
        stage.setup()
        t0 = time.perf_counter()
        for data in rows:
            stage.process_row({"image": {"path": None, "bytes": data}, "caption": None})
        return len(rows) / (time.perf_counter() - t0)

    ours = rate(blobs)
    t0 = time.perf_counter()
    for data in blobs:
        imagehash.phash(Image.open(io.BytesIO(data)))
    reference = len(blobs) / (time.perf_counter() - t0)
    repeated = [blobs[int(i)] for i in rng.integers(0, 40, 300)]
    remembered = rate(repeated)
    kept, signature.RECENT_FILES = signature.RECENT_FILES, 0  # every row decoded, as before
    forgotten = rate(repeated)
    signature.RECENT_FILES = kept
    return ours, reference, remembered, forgotten


def caption_rates(captions: list[str]) -> tuple[float, float, float]:
    """(band keys/s, datasketch MinHash/s, datasketch MinHashLSH insert+query rows/s)."""
    from datasketch import MinHash, MinHashLSH

    from mmtok.text.minhash import CaptionBands

    bands = CaptionBands().setup()
    sample = captions[:20000]
    t0 = time.perf_counter()
    for c in sample:
        bands.keys(c)
    ours = len(sample) / (time.perf_counter() - t0)
    ref_sample = sample[:5000]
    t0 = time.perf_counter()
    hashes = []
    for c in ref_sample:
        m = MinHash(num_perm=128)
        for word in set(c.lower().split()):
            m.update(word.encode())
        hashes.append(m)
    ref = len(ref_sample) / (time.perf_counter() - t0)
    lsh = MinHashLSH(threshold=0.8, num_perm=128)
    t0 = time.perf_counter()
    for i, m in enumerate(hashes):
        lsh.query(m)
        lsh.insert(str(i), m)
    return ours, ref, len(hashes) / (time.perf_counter() - t0)


def run_dedup(rows: Path, out: Path, *args: str) -> tuple[dict, float]:
    cmd = [sys.executable, "-m", "mmtok", "dedup", str(rows), "-o", str(out), "--overwrite"]
    cmd += ["--json", "-w", "2", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, check=True)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return json.loads(result.stdout), peak


def found_pairs(out: Path) -> set[tuple[int, int]]:
    import pyarrow.parquet as pq

    table = pq.read_table(
        out / "__mmtok__" / "clusters.parquet", columns=["cluster_id", "id"]
    ).to_pylist()
    clusters: dict[int, list[int]] = {}
    for r in table:
        clusters.setdefault(r["cluster_id"], []).append(int(r["id"][1:]))
    return {(a, b) for members in clusters.values() for a, b in combinations(sorted(members), 2)}


def score(found: set, groups: np.ndarray, kinds: list[str], counted: set[str]):
    """Precision over all found pairs; recall per kind over the planted (base, kind) pairs."""
    truth = set()
    for g in np.unique(groups[np.array([k != "base" for k in kinds])]):
        members = [int(i) for i in np.flatnonzero(groups == g) if kinds[i] in counted | {"base"}]
        truth |= set(combinations(sorted(members), 2))
    precision = len(found & truth) / len(found) if found else 1.0
    base_of = {int(g): int(np.flatnonzero(groups == g)[0]) for g in np.unique(groups)}
    recall = {}
    for kind in sorted(counted):
        planted = [(base_of[int(groups[i])], i) for i, k in enumerate(kinds) if k == kind]
        recall[kind] = sum((a, b) in found for a, b in planted) / max(len(planted), 1)
    return precision, recall


def synthetic_signatures(rows: int, path: Path, seed: int = 2) -> None:
    """The signature columns of `rows` rows without any file: random 64-bit hashes and
    10-word captions, a fifth of them with six copies (0-6 hash bits flipped, caption
    reworded). Written to Parquet, as the signature pass hands them to the clustering pass."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mmtok.text.minhash import CaptionBands

    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(5000)]
    bands = CaptionBands().setup()
    hashes, captions = [], []
    while len(hashes) < rows:
        h = int(rng.integers(0, 2**63)) << 1
        words = [vocab[int(i)] for i in rng.integers(0, len(vocab), 10)]
        hashes.append(h)
        captions.append(" ".join(words))
        for _ in range(6 if rng.random() < 0.2 else 0):
            flips = rng.choice(64, int(rng.integers(0, 7)), replace=False)
            hashes.append(h ^ sum(1 << int(f) for f in flips))
            captions.append(reword(rng, words, vocab))
    hashes, captions = hashes[:rows], captions[:rows]
    sha = [hashlib.sha256(str(h).encode()).digest() for h in hashes]
    pq.write_table(
        pa.table(
            {
                "id": [f"r{i}" for i in range(rows)],
                "caption": captions,
                "sha256": pa.array(sha, pa.binary(32)),
                "phash": pa.array(hashes, pa.uint64()),
                "phash_mirror": pa.array([h ^ 0x5555 for h in hashes], pa.uint64()),
                "pixels": pa.array(rng.integers(10_000, 1_000_000, rows)),
                "caption_bands": pa.array(map(bands.keys, captions), pa.list_(pa.uint64())),
                "sig_reason": pa.nulls(rows, pa.string()),
                "sig_message": pa.nulls(rows, pa.string()),
            }
        ),
        path,
        row_group_size=65536,
    )


def clustering_memory(path: Path, by: str) -> None:
    """Run in a fresh process: peak RSS of the clustering pass over the signatures at `path`
    (turned columnar batch by batch as the signature pass delivers them, the clusters,
    clusters.parquet's table), less the process's size after imports. Prints JSON."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mmtok.cli.dedup import cluster_table, summary
    from mmtok.duplicates import Settings, Signatures, find_clusters

    def peak() -> float:  # VmHWM: ru_maxrss would count the parent this process forked from
        status = Path("/proc/self/status").read_text()
        return float(status.split("VmHWM:")[1].split()[0]) * 1024

    base = peak()
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    parts = []
    for batch in pq.ParquetFile(path).iter_batches(4096):  # batch by batch, as the CLI
        table = pa.Table.from_batches([batch])
        if by == "image":
            table = table.drop_columns(["caption_bands"]).append_column(
                "caption_bands", pa.nulls(table.num_rows, pa.list_(pa.uint64()))
            )
        parts.append(Signatures.from_table(table, False, 0 if by == "image" else 16))
    sig = Signatures.concat(parts)
    del parts
    pa.default_memory_pool().release_unused()  # as the CLI does
    clusters = find_clusters(sig, Settings(by=by))
    cluster_table(sig, clusters)
    summary(sig, clusters)
    seconds = time.perf_counter() - t0
    doc = {"rows": len(sig), "seconds": seconds, "cpu_seconds": time.process_time() - cpu0}
    doc["clusters"] = int((np.bincount(clusters.label) > 1).sum())
    doc["dropped"] = int(clusters.dropped.sum())
    print(json.dumps({**doc, "base": base, "peak": peak()}))


def synthetic_image_signatures(rows: int, path: Path, seed: int = 2) -> None:
    """Image signatures only, made with numpy (10M rows in seconds): random 63-bit hashes, a
    fifth of them with six copies up to 6 bits away (a copy 0 bits away has the same file
    sha256), as `synthetic_signatures` plants them; no captions."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    bases = rng.integers(0, 2**63, rows, dtype=np.int64).astype(np.uint64) << np.uint64(1)
    copies = np.where(rng.random(rows) < 0.2, 6, 0)
    base_of = np.repeat(np.arange(rows), 1 + copies)[:rows]
    first = np.concatenate([[True], base_of[1:] != base_of[:-1]])
    flips = np.where(first, 0, rng.integers(0, 7, rows))
    masks = np.zeros(rows, np.uint64)
    for step in range(6):  # up to `flips` random bits (a bit drawn twice cancels)
        bit = np.uint64(1) << rng.integers(0, 64, rows).astype(np.uint64)
        masks ^= np.where(step < flips, bit, np.uint64(0))
    hashes = bases[base_of] ^ masks
    salt = rng.integers(0, 2**63, 4, dtype=np.int64).astype(np.uint64)
    sha = (hashes[:, None] ^ salt[None, :]).view(np.uint8).reshape(rows * 32)
    sha_array = pa.FixedSizeBinaryArray.from_buffers(pa.binary(32), rows, [None, pa.py_buffer(sha)])
    ids = pa.array(np.char.add("r", np.arange(rows).astype(str)).astype(object), pa.string())
    pq.write_table(
        pa.table(
            {
                "id": ids,
                "caption": pa.nulls(rows, pa.string()),
                "sha256": sha_array,
                "phash": pa.array(hashes, pa.uint64()),
                "phash_mirror": pa.array(hashes ^ np.uint64(0x5555), pa.uint64()),
                "pixels": pa.array(rng.integers(10_000, 1_000_000, rows)),
                "caption_bands": pa.nulls(rows, pa.list_(pa.uint64())),
                "sig_reason": pa.nulls(rows, pa.string()),
                "sig_message": pa.nulls(rows, pa.string()),
            }
        ),
        path,
        row_group_size=65536,
    )


def faiss_comparison(rows: int) -> None:
    """The near-hash search alone on `rows` random hashes (a pair planted every 50 rows):
    mmtok.hamming against faiss's IndexBinaryMultiHash set up to be exact at distance 8 (3
    tables of 21 bits, 2 flipped bits), CPU seconds, and a check that both find the same pairs.
    faiss-cpu is not a dependency of mmtok: `pip install faiss-cpu` to run this."""
    import faiss

    from mmtok.hamming import near_pairs

    rng = np.random.default_rng(0)
    h = np.unique(rng.integers(0, 2**63, rows, dtype=np.int64).astype(np.uint64) << np.uint64(1))
    h[1::50] = h[::50][: len(h[1::50])] ^ np.uint64(0b10110011001)
    near_pairs(h[:1000], h[:1000], 8, True)  # load the kernel
    c0 = time.process_time()
    a, b = near_pairs(h, h, 8, True)
    ours = time.process_time() - c0
    c0 = time.process_time()
    index = faiss.IndexBinaryMultiHash(64, 3, 21)
    index.nflip = 2
    index.add(h.view(np.uint8).reshape(-1, 8))
    lims, _, found = index.range_search(h.view(np.uint8).reshape(-1, 8), 9)  # distance < 9
    theirs = time.process_time() - c0
    q = np.repeat(np.arange(len(h)), np.diff(lims).astype(np.int64))
    same = set(zip(q[q < found].tolist(), found[q < found].tolist(), strict=True)) == set(
        zip(a.tolist(), b.tolist(), strict=True)
    )
    print(f"  {len(h):,} hashes, {len(a):,} pairs within 8 bits: mmtok.hamming {ours:.1f} CPU s, "
          f"faiss IndexBinaryMultiHash {theirs:.1f} CPU s ({theirs / ours:.0f}x); "
          f"same pairs: {same}")  # fmt: skip


def scaling(sizes: list[int], baseline: str | None, kernels: list[str]) -> None:
    """The image clustering pass at each size, per kernel, each in a fresh process; the scaling
    exponent is the slope of log CPU seconds against log rows (CPU time, not wall time: this
    machine may be shared)."""
    import os

    here = str(Path(__file__).resolve().parents[1])
    variants = {
        "auto": {"PYTHONPATH": here},  # numba from 100k distinct hashes
        "numpy": {"PYTHONPATH": here, "MMTOK_NO_NUMBA": "1"},
    }
    variants = {name: env for name, env in variants.items() if name in kernels}
    if "faiss" in kernels:
        print("near-hash search alone, against faiss (exact at 8 bits):")
        for rows in sizes:
            faiss_comparison(rows)
    if baseline:
        variants[f"baseline {baseline}"] = {"PYTHONPATH": str(Path(baseline).resolve())}
    results: dict[str, list[dict]] = {name: [] for name in variants}
    if not variants:
        return
    with tempfile.TemporaryDirectory() as tmp:
        for rows in sizes:
            path = Path(tmp) / f"{rows}.parquet"
            synthetic_image_signatures(rows, path)
            print(f"\n{rows:,} synthetic image signatures, clustering pass alone (--by image, "
                  "--max-distance 8):")  # fmt: skip
            for name, env in variants.items():
                cmd = [sys.executable, __file__, "--clustering-only", str(path), "image"]
                done = subprocess.run(
                    cmd, capture_output=True, text=True, env={**os.environ, **env}, check=True
                )
                doc = json.loads(done.stdout)
                results[name].append(doc)
                grown = doc["peak"] - doc["base"]
                print(f"  {name:<10} {rows / doc['seconds']:>9,.0f} rows/s wall, "
                      f"{rows / doc['cpu_seconds']:>9,.0f} rows per CPU second; "
                      f"{grown / rows:,.0f} bytes per row (MB per million rows); "
                      f"{doc['clusters']:,} clusters, {doc['dropped']:,} rows dropped")  # fmt: skip
        if len(sizes) > 1:
            print("\nscaling exponent (CPU seconds ~ rows^k), smallest to largest size:")
            logs = np.log(sizes)
            for name, docs in results.items():
                slope = np.polyfit(logs, np.log([d["cpu_seconds"] for d in docs]), 1)[0]
                wall = np.polyfit(logs, np.log([d["seconds"] for d in docs]), 1)[0]
                print(f"  {name:<10} k = {slope:.2f} (wall time: {wall:.2f})")
            first = next(iter(results.values()))
            for name, docs in list(results.items())[1:]:
                ratios = ", ".join(
                    f"{d['cpu_seconds'] / f['cpu_seconds']:.1f}x at {f['rows']:,}"
                    for f, d in zip(first, docs, strict=True)
                )
                print(f"  {name} CPU time / auto: {ratios}")


def memory_per_row(rows: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "signatures.parquet"
        t0 = time.perf_counter()
        synthetic_signatures(rows, path)
        print(f"\nclustering pass alone on {rows:,} synthetic signatures "
              f"(made in {time.perf_counter() - t0:.0f} s):")  # fmt: skip
        for by in ("image", "caption"):
            cmd = [sys.executable, __file__, "--clustering-only", str(path), by]
            doc = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
            grown = doc["peak"] - doc["base"]
            print(f"  --by {by:<8} {rows / doc['seconds']:>9,.0f} rows/s (from reading the "
                  f"signatures to clusters.parquet's table); peak RSS {doc['peak'] / 1e6:,.0f} MB, "
                  f"{grown / 1e6:,.0f} MB over the process after imports = "
                  f"{grown / rows:,.0f} bytes per row, i.e. MB per million rows")  # fmt: skip


def templated_captions(rows: int) -> list[str]:
    """Half one template and a number (word Jaccard 7/9, just under 0.8: every pair shares
    band keys often, none passes), a quarter another template with 50 numbers (repeats), a
    quarter random 10-word captions."""
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(5000)]
    out = []
    for i in range(rows):
        kind = i % 4
        if kind < 2:
            out.append(f"a photo of the dog on beach {i}")
        elif kind == 2:
            out.append(f"stock image of a cat number {i % 50}")
        else:
            out.append(" ".join(rng.choice(vocab, 10).tolist()))
    return out


def templated(sizes: list[int]) -> None:
    from types import SimpleNamespace

    import pyarrow as pa

    from mmtok import duplicates
    from mmtok.text.minhash import CaptionBands
    from mmtok.text.shingle_sets import ShingleSets

    bands = CaptionBands(0.8).setup()
    print("caption clustering on templated captions (threshold 0.8), one core, in process;")
    print("whole command: mmtok dedup --by caption -w 2 from start to exit")
    print(
        f"{'rows':>9} {'grouped s':>10} {'per pair s':>11} {'ratio':>7} {'command s':>10} {'rows/s':>9}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for rows in sizes:
            texts = templated_captions(rows)
            keys = np.array([bands.keys(t) for t in texts], np.uint64)
            sig = SimpleNamespace(caption_ok=np.ones(rows, bool), bands=keys)
            seconds = {}
            for label, crowded in (("grouped", duplicates._CROWDED), ("pairwise", 10**12)):
                if label == "pairwise" and rows > 20_000:
                    continue
                old, duplicates._CROWDED = duplicates._CROWDED, crowded
                try:
                    joined = duplicates._Components(rows)
                    t0 = time.process_time()
                    duplicates._caption_components(
                        sig, ShingleSets(pa.array(texts)), 0.8, joined, duplicates.Search()
                    )
                    seconds[label] = time.process_time() - t0
                    labels = seconds.setdefault("labels", joined.label)
                    assert (labels == joined.label).all(), "the two ways disagree"
                finally:
                    duplicates._CROWDED = old
            source = Path(tmp) / "rows.jsonl"
            image = str(Path(__file__).resolve().parents[1] / "examples/images/astronaut.jpg")
            source.write_text(
                "".join(json.dumps({"image": image, "caption": t}) + "\n" for t in texts)
            )
            t0 = time.perf_counter()
            doc, _ = run_dedup(source, Path(tmp) / "out", "--by", "caption")
            wall = time.perf_counter() - t0
            expected = rows - len(np.unique(seconds["labels"]))
            assert doc["duplicates_removed"] == expected, (doc["duplicates_removed"], expected)
            pairwise = seconds.get("pairwise")
            print(f"{rows:>9,} {seconds['grouped']:>10.2f} "
                  + (f"{pairwise:>11.2f} {pairwise / seconds['grouped']:>6.0f}x" if pairwise else f"{'-':>11} {'-':>7}")
                  + f" {wall:>10.1f} {rows / wall:>9,.0f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--memory", type=int, metavar="ROWS", help="only the clustering memory")
    parser.add_argument(
        "--scaling", metavar="ROWS,ROWS,...", help="the image clustering pass alone"
    )
    parser.add_argument("--baseline", metavar="CHECKOUT", help="with --scaling: an older mmtok")
    parser.add_argument(
        "--kernels", default="auto,numpy", help="with --scaling: auto, numpy, faiss (search alone)"
    )
    parser.add_argument("--templated", metavar="ROWS,ROWS,...", help="crowded caption buckets")
    parser.add_argument("--clustering-only", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.templated:
        return templated([int(r) for r in args.templated.split(",")])
    if args.scaling:
        sizes = [int(r) for r in args.scaling.split(",")]
        return scaling(sizes, args.baseline, args.kernels.split(","))
    if args.clustering_only:
        return clustering_memory(Path(args.clustering_only[0]), args.clustering_only[1])
    if args.memory:
        return memory_per_row(args.memory)
    rows = 20_000 if args.quick else 200_000
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        source, groups, kinds = make_dataset(work, rows)
        print(f"{rows:,} rows generated in {time.perf_counter() - t0:.0f} s "
              f"({sum(k != 'base' for k in kinds):,} planted copies)")  # fmt: skip
        sig, phash_ref, remembered, forgotten = signature_rate(work)
        print(f"image signatures, 512 px JPEG, one core: {sig:,.0f} images/s "
              f"= {sig / phash_ref:.2f}x imagehash.phash ({phash_ref:,.0f}/s)")  # fmt: skip
        print(f"  300 rows of 40 distinct files: {remembered:,.0f} rows/s, "
              f"{remembered / forgotten:.1f}x decoding every row ({forgotten:,.0f}/s)")  # fmt: skip
        captions = [json.loads(line)["caption"] for line in source.read_text().splitlines()]
        bands, minhash_ref, lsh_ref = caption_rates(captions)
        print(f"caption band keys, one core: {bands:,.0f} captions/s "
              f"= {bands / minhash_ref:.2f}x datasketch MinHash word by word ({minhash_ref:,.0f}/s)")  # fmt: skip

        image_kinds = {"q60", "half", "crop", "png", "copy"}
        for label, extra, counted in (
            ("--by image", [], image_kinds),
            ("--by image --mirror", ["--mirror"], image_kinds | {"mirror"}),
            ("--by caption", ["--by", "caption"], set(KINDS)),
        ):
            out = work / "out"
            doc, peak = run_dedup(source, out, *extra)
            t = doc["timing"]
            n = doc["counts"]["in"]
            precision, recall = score(found_pairs(out), groups, kinds, counted)
            print(f"\n{label}: {n:,} rows, 2 workers; peak RSS {peak:,.0f} MB (largest process)")
            print(f"  signature pass  {n / t['signature_seconds']:>9,.0f} rows/s")
            print(f"  clustering pass {n / t['clustering_seconds']:>9,.0f} rows/s"
                  + (f" = {n / t['clustering_seconds'] / lsh_ref:.1f}x datasketch MinHashLSH "
                     f"insert+query ({lsh_ref:,.0f}/s)" if "caption" in label else ""))  # fmt: skip
            print(f"  writing pass    {n / t['writing_seconds']:>9,.0f} rows/s")
            print(f"  clusters {doc['clusters']:,}, removed {doc['duplicates_removed']:,} "
                  f"{doc['removed_by_kind']}")  # fmt: skip
            print(f"  precision {precision:.4f}; recall "
                  + ", ".join(f"{k} {v:.3f}" for k, v in recall.items()))  # fmt: skip
    memory_per_row(100_000 if args.quick else 1_000_000)


if __name__ == "__main__":
    main()
