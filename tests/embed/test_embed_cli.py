"""`mmtok embed` through the real CLI on real image files, against open_clip itself.

Oracle: `open_clip.create_model_and_transforms` (open_clip 3.3.0) with its own preprocess, then
`encode_image` / `encode_text(normalize=True)` in fp32 on the same files. Stored embeddings are
float16, so they agree within 1e-3 (float16 spacing below 1 is at most 2^-11 ~ 4.9e-4);
`clip_score` is computed in float32 before the cast and agrees within 1e-5.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import encode, photo, write_jsonl
from PIL import Image
from tiny_models import image_folder, tiny_clip
from typer.testing import CliRunner

from mmtok.cli.app import app
from mmtok.engine.pipeline import OutputOptions, run_pipeline
from mmtok.io.layout import SIDE_DIR
from mmtok.io.sources import Inputs, ReadOptions
from mmtok.models.clip import sha256_of
from mmtok.models.tiny import random_weights, register_arch, tiny_model_cfg
from mmtok.stages.embed import ClipScoreFilterStage

runner = CliRunner()
F16_TOL = 1e-3


def side(out, name):
    """A side file of an output folder (under __mmtok__/)."""
    return out / SIDE_DIR / name


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_clip(tmp_path_factory.mktemp("tiny"), seed=1)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Real photos of several sizes and formats, and three bad files in the middle."""
    folder = tmp_path_factory.mktemp("images")
    good = {
        "photo_640x480.jpg": encode(photo(640, 480, seed=1), "JPEG", quality=90),
        "photo_300x500.png": encode(photo(300, 500, seed=2), "PNG"),
        "photo_64x64.jpg": encode(photo(64, 64, seed=3), "JPEG"),
        "strip_1000x200.webp": encode(photo(1000, 200, seed=4), "WEBP"),
        "gray_120x90.png": encode(photo(120, 90, seed=5).convert("L"), "PNG"),
        "photo_33x17.jpg": encode(photo(33, 17, seed=6), "JPEG"),
        "photo_500x375.jpg": encode(photo(500, 375, seed=7), "JPEG", quality=80),
    }
    order, names = image_folder(folder, good)
    return folder, order, names


def dataset(tmp_path, images, *, captions=True):
    folder, order, _ = images
    rows = [
        {
            "id": f"r{i}",
            "image": str(folder / n),
            "caption": f"a photo called {n}" if captions else None,
        }
        for i, n in enumerate(order)
    ]
    rows[1]["caption"] = None  # a row without a caption keeps its image embedding
    return write_jsonl(tmp_path / "in.jsonl", rows)


def embed(tmp_path, source, *args, out="out"):
    result = runner.invoke(app, ["embed", str(source), "-o", str(tmp_path / out), "--json", *args])
    assert result.exit_code == 0, result.output
    parts = sorted((tmp_path / out).glob("part-*.parquet"))
    return json.loads(result.stdout), pa.concat_tables(pq.read_table(p) for p in parts), parts


def oracle(model_name, paths, captions, **kwargs):
    import open_clip
    import torch

    model, _, preprocess = open_clip.create_model_and_transforms(model_name, **kwargs)
    model.eval()
    with torch.no_grad():
        x = torch.stack([preprocess(Image.open(p)) for p in paths])
        image = model.encode_image(x, normalize=True).numpy()
        text = None
        if captions is not None:
            tokens = open_clip.get_tokenizer(model_name)(captions)
            text = model.encode_text(tokens, normalize=True).numpy()
    return image, text


def vectors(table, column):
    return np.array(table.column(column).to_pylist(), np.float32)


def test_embeddings_and_clip_score_equal_open_clip(tmp_path, model_dir, images):
    source = dataset(tmp_path, images)
    folder, _, names = images
    doc, table, parts = embed(
        tmp_path,
        source,
        "--model",
        f"local-dir:{model_dir}",
        "--text",
        "-w",
        "1",
        "--batch-size",
        "3",
    )
    assert (doc["counts"]["in"], doc["counts"]["out"], doc["counts"]["rejected"]) == (10, 7, 3)
    assert table.column("id").to_pylist() == ["r0", "r1", "r3", "r4", "r7", "r8", "r9"]
    assert table.schema.field("image_embedding").type == pa.list_(pa.float16(), 32)
    captions = [f"a photo called {n}" for n in names]
    image, text = oracle(f"local-dir:{model_dir}", [folder / n for n in names], captions)
    np.testing.assert_allclose(vectors(table, "image_embedding"), image, atol=F16_TOL, rtol=0)
    stored_text = table.column("text_embedding").to_pylist()
    assert stored_text[1] is None and table.column("clip_score")[1].as_py() is None
    has_text = [0, 2, 3, 4, 5, 6]
    np.testing.assert_allclose(
        np.array([stored_text[i] for i in has_text], np.float32), text[has_text], atol=F16_TOL
    )
    cosine = np.einsum("nd,nd->n", image, text)[has_text]
    scores = np.array([table.column("clip_score")[i].as_py() for i in has_text])
    np.testing.assert_allclose(scores, cosine, atol=1e-5)
    assert doc["clip_score"]["scored"] == 6
    assert doc["clip_score"]["mean"] == pytest.approx(cosine.mean(), abs=1e-5)

    rejects = pq.read_table(side(tmp_path / "out", "rejects.parquet")).to_pylist()
    assert {r["id"]: r["reason"] for r in rejects} == {
        "r2": "truncated",
        "r5": "missing_file",
        "r6": "not_image",
    }
    assert {r["stage"] for r in rejects} == {"model_input"}


def test_metadata_and_manifest_hold_the_model_and_its_preprocessing(tmp_path, model_dir, images):
    source = dataset(tmp_path, images)
    _, _, parts = embed(tmp_path, source, "--model", f"local-dir:{model_dir}", "-w", "1")
    metadata = pq.read_schema(parts[0]).metadata
    stages = json.loads(metadata[b"mmtok_stages"])
    manifest = json.loads(side(tmp_path / "out", "manifest.json").read_text())
    for recorded in (stages, manifest["stages"]):
        info = next(s for s in recorded if s["stage"] == "embed")
        assert info["model"] == f"local-dir:{model_dir}"
        assert info["checkpoint_sha256"] == sha256_of(model_dir / "open_clip_model.safetensors")
        assert info["precision"] == "fp32"
        assert info["preprocess"] == {
            "size": [64, 64],
            "mean": [0.48145466, 0.4578275, 0.40821073],
            "std": [0.26862954, 0.26130258, 0.27577711],
            "interpolation": "bicubic",
            "resize_mode": "shortest",
            "fill_color": 0,
        }
        assert info["preprocess_source"] == "open_clip_config.json"


def test_one_and_two_workers_give_the_same_output(tmp_path, model_dir, images):
    source = dataset(tmp_path, images)
    model = ["--model", f"local-dir:{model_dir}", "--text", "--batch-size", "2"]
    _, one, _ = embed(tmp_path, source, *model, "-w", "1", out="one")
    _, two, _ = embed(tmp_path, source, *model, "-w", "2", out="two")
    assert one.equals(two)  # bit for bit: the same batches whichever worker decoded them


def test_a_bare_siglip_like_checkpoint_gets_squash_and_half_mean(tmp_path, images):
    """open_clip with `pretrained=FILE` would silently use OpenAI mean/std + shortest side."""
    import open_clip  # noqa: F401 - registers the tiny architecture below

    arch = register_arch("Tiny-SigLIP", tmp_path)
    checkpoint = random_weights(tiny_model_cfg(), tmp_path / "tiny-siglip.bin", seed=2)
    folder, _, names = images
    source = dataset(tmp_path, images)
    model = ["--model", arch, "--checkpoint", str(checkpoint), "--pretrained-tag", "webli"]
    doc, table, _ = embed(tmp_path, source, *model, "-w", "1")
    p = doc["model"]["preprocess"]
    assert (p["mean"], p["std"], p["resize_mode"]) == ([0.5] * 3, [0.5] * 3, "squash")
    kw = dict(image_mean=(0.5,) * 3, image_std=(0.5,) * 3, image_resize_mode="squash")
    image, _ = oracle(arch, [folder / n for n in names], None, pretrained=str(checkpoint), **kw)
    np.testing.assert_allclose(vectors(table, "image_embedding"), image, atol=F16_TOL, rtol=0)
    plain, _ = oracle(arch, [folder / n for n in names], None, pretrained=str(checkpoint))
    assert np.abs(plain - image).max() > 10 * F16_TOL  # the trap mmtok avoids is real


def test_openai_weights_get_quick_gelu(tmp_path, images):
    arch = register_arch("Tiny-CLIP", tmp_path)
    import torch

    checkpoint = random_weights(tiny_model_cfg(), tmp_path / "tiny-openai.pt", seed=3)
    # MLP pre-activations near 1, where GELU and QuickGELU part ways, and a louder MLP output
    scale = {"mlp.c_fc.weight": 3, "mlp.c_proj.weight": 50}
    state = torch.load(checkpoint)
    state = {k: v * next((f for s, f in scale.items() if s in k), 1) for k, v in state.items()}
    torch.save(state, checkpoint)
    folder, _, names = images
    source = dataset(tmp_path, images)
    model = ["--model", arch, "--checkpoint", str(checkpoint), "--pretrained-tag", "openai"]
    doc, table, _ = embed(tmp_path, source, *model, "-w", "1")
    assert doc["model"]["quick_gelu"] is True
    paths = [folder / n for n in names]
    quick, _ = oracle(arch, paths, None, pretrained=str(checkpoint), force_quick_gelu=True)
    gelu, _ = oracle(arch, paths, None, pretrained=str(checkpoint))
    stored = vectors(table, "image_embedding")
    np.testing.assert_allclose(stored, quick, atol=F16_TOL, rtol=0)
    assert np.abs(stored - gelu).mean() > 3 * np.abs(stored - quick).mean()


def fails(tmp_path, *args):
    source = write_jsonl(tmp_path / "one.jsonl", [{"image": "x.jpg"}])
    out = tmp_path / "never"
    result = runner.invoke(app, ["embed", str(source), "-o", str(out), *args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and not out.exists()
    return result.output


def test_what_is_missing_is_named_in_one_line_before_any_data_is_read(tmp_path, model_dir):
    assert "not found" in fails(tmp_path, "--model", "ViT-B-32", "--checkpoint", "nope.pt")
    assert "which weights" in fails(tmp_path, "--model", "ViT-B-32")
    assert "never downloads" in fails(
        tmp_path, "--model", "ViT-B-32", "--pretrained-tag", "laion2b_s34b_b79k"
    )
    assert "open_clip_config.json" in fails(tmp_path, "--model", f"local-dir:{tmp_path}")
    empty = tmp_path / "no-weights"
    empty.mkdir()
    (empty / "open_clip_config.json").write_text(json.dumps({"model_cfg": tiny_model_cfg()}))
    assert "no weights" in fails(tmp_path, "--model", f"local-dir:{empty}")
    assert "unknown open_clip architecture" in fails(tmp_path, "--model", "ViT-Nope")
    weights = str(model_dir / "open_clip_model.safetensors")
    arch = register_arch("Tiny-Bare", tmp_path)
    assert "does not say how" in fails(tmp_path, "--model", arch, "--checkpoint", weights)
    assert "--preprocess" in fails(
        tmp_path, "--model", arch, "--checkpoint", weights, "--pretrained-tag", "mystery"
    )


def test_a_checkpoint_of_another_architecture_names_the_mismatched_keys(tmp_path, model_dir):
    arch = register_arch("Tiny-Wide", tmp_path, tiny_model_cfg(embed_dim=48))
    weights = str(model_dir / "open_clip_model.safetensors")
    message = fails(tmp_path, "--model", arch, "--checkpoint", weights, "--preprocess", "clip")
    assert "does not fit Tiny-Wide" in message and "text_projection" in message


def test_cuda_without_a_gpu_is_a_clear_error(tmp_path, model_dir):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    message = fails(tmp_path, "--model", f"local-dir:{model_dir}", "--device", "cuda")
    assert "no CUDA GPU" in message


def test_min_clip_score_rejects_low_scores_with_the_value(tmp_path, model_dir, images):
    source = dataset(tmp_path, images)
    model = ["--model", f"local-dir:{model_dir}", "--text", "-w", "1"]
    _, everything, _ = embed(tmp_path, source, *model, out="all")
    scores = {r["id"]: r["clip_score"] for r in everything.select(["id", "clip_score"]).to_pylist()}
    limit = float(np.median([v for v in scores.values() if v is not None]))
    doc, kept, _ = embed(tmp_path, source, *model, "--min-clip-score", str(limit), out="cut")
    assert kept.column("id").to_pylist() == [i for i, v in scores.items() if v and v >= limit]
    rejects = pq.read_table(side(tmp_path / "cut", "rejects.parquet")).to_pylist()
    by_id = {r["id"]: r for r in rejects if r["stage"] == "embed"}
    assert by_id["r1"]["reason"] == "no_caption"
    low = {i for i, v in scores.items() if v is not None and v < limit}
    assert {i for i, r in by_id.items() if r["reason"] == "low_clip_score"} == low
    some = by_id[sorted(low)[0]]
    assert some["message"] == f"clip_score={scores[sorted(low)[0]]:.4f} < min_clip_score={limit:g}"
    counts = doc["counts"]
    assert counts["in"] == counts["out"] + counts["rejected"] == 10

    # the same rule over an existing clip_score column (for `mmtok filter --min-clip-score`)
    inputs = Inputs([str(tmp_path / "all")], ReadOptions())
    stages = [ClipScoreFilterStage(limit)]
    manifest = run_pipeline(inputs, stages, OutputOptions(str(tmp_path / "refilter")), workers=1)
    again = pq.read_table(tmp_path / "refilter" / "part-00000.parquet")
    assert again.column("id").to_pylist() == kept.column("id").to_pylist()
    assert manifest["counts"]["rejected_by_reason"] == {"low_clip_score": len(low), "no_caption": 1}


def test_emit_npy_writes_clip_retrievals_layout_in_row_order(tmp_path, model_dir, images):
    source = dataset(tmp_path, images)
    model = ["--model", f"local-dir:{model_dir}", "--text", "-w", "1", "--shard-rows", "4"]
    model += ["--batch-size", "2"]  # shards close between batches
    doc, table, parts = embed(tmp_path, source, *model, "--emit", "npy")
    assert len(parts) == 2
    folder = tmp_path / "out" / SIDE_DIR / "clip_retrieval"
    assert doc["clip_retrieval"] == str(folder)
    img = np.concatenate([np.load(p) for p in sorted((folder / "img_emb").glob("*.npy"))])
    txt = np.concatenate([np.load(p) for p in sorted((folder / "text_emb").glob("*.npy"))])
    meta = pa.concat_tables(pq.read_table(p) for p in sorted((folder / "metadata").glob("*")))
    assert img.dtype == np.float16 and img.shape == (7, 32)
    assert np.array_equal(img, vectors(table, "image_embedding").astype(np.float16))
    assert meta.column("id").to_pylist() == table.column("id").to_pylist()
    assert meta.column_names == ["image_path", "caption", "id", "clip_score"]
    assert not txt[1].any() and txt[0].any()  # row r1 has no caption
    # written before the folder was published, and listed in its manifest with checksums
    manifest = json.loads((tmp_path / "out" / SIDE_DIR / "manifest.json").read_text())
    listed = {f["name"] for f in manifest["files"] if f["kind"] == "clip_retrieval"}
    on_disk = {p.relative_to(tmp_path / "out").as_posix() for p in folder.rglob("*.*")}
    assert listed == on_disk and len(listed) == 6


def test_the_cli_imports_no_torch_until_a_model_runs():
    import subprocess
    import sys

    code = (
        "import sys, mmtok.cli.app, mmtok.cli.embed, mmtok.stages.embed, mmtok.models.runtime;"
        "print(sorted(m for m in ('torch', 'open_clip', 'torchvision') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "[]", done.stderr
    result = runner.invoke(app, ["embed", "--help"])
    assert result.exit_code == 0 and "--min-clip-score" in result.output


def test_a_tag_already_in_the_hugging_face_cache_is_used_without_a_download(tmp_path, monkeypatch):
    """The cache layout huggingface_hub writes: refs/main names the snapshot holding the file."""
    from mmtok.models.clip import resolve_model

    cache = tmp_path / "hub"
    repo = cache / "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K"  # the tag's hf_hub
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    (snapshot / "open_clip_model.safetensors").write_bytes(b"weights")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    resolved = resolve_model("ViT-B-32", pretrained_tag="laion2b_s34b_b79k")
    assert resolved.checkpoint == str(snapshot / "open_clip_model.safetensors")
    assert resolved.preprocess.size == (224, 224) and not resolved.quick_gelu
    assert resolved.preprocess_source == "pretrained tag laion2b_s34b_b79k"
