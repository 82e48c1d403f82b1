"""`mmtok filter --min-clip-score`: over an existing `clip_score` column, and computed with
`--model` through the device stage runtime, on real image files.

Oracle for the computed scores: open_clip's own preprocessing, `encode_image` and
`encode_text(normalize=True)` in fp32 on the same files (as in test_embed_cli.py); the scores
are computed in float32 and agree within 1e-5.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import write_jsonl
from test_embed_cli import dataset, embed, images, model_dir, oracle  # noqa: F401 - fixtures
from typer.testing import CliRunner

from mmtok.cli.app import app
from mmtok.io.layout import SIDE_DIR

runner = CliRunner()


def run_filter(source, out, *args):
    result = runner.invoke(app, ["filter", str(source), "-o", str(out), "--json", "-w", "1", *args])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    parts = sorted(out.glob("part-*.parquet"))
    kept = pa.concat_tables(pq.read_table(p) for p in parts)
    rejects = {r["id"]: r for r in pq.read_table(out / SIDE_DIR / "rejects.parquet").to_pylist()}
    counts = doc["counts"]
    assert counts["in"] == counts["out"] + counts["rejected"] == kept.num_rows + len(rejects)
    return doc, kept, rejects


def median_score(scores: dict[str, float | None]) -> float:
    return round(float(np.median([v for v in scores.values() if v is not None])), 4)


def test_min_clip_score_on_an_existing_column(tmp_path, model_dir, images):  # noqa: F811
    source = dataset(tmp_path, images)
    model = ["--model", f"local-dir:{model_dir}", "--text", "-w", "1"]
    _, embedded, _ = embed(tmp_path, source, *model, out="emb")
    scores = dict(zip(*embedded.select(["id", "clip_score"]).to_pydict().values(), strict=True))
    limit = median_score(scores)

    doc, kept, rejects = run_filter(
        tmp_path / "emb", tmp_path / "good", "--min-clip-score", str(limit)
    )
    assert kept.column("id").to_pylist() == [
        i for i, v in scores.items() if v is not None and v >= limit
    ]
    low = {i for i, v in scores.items() if v is not None and v < limit}
    assert {i for i, r in rejects.items() if r["reason"] == "low_clip_score"} == low
    for i in low:
        assert rejects[i]["message"] == f"clip_score={scores[i]:.4f} < min_clip_score={limit:g}"
    assert rejects["r1"]["reason"] == "no_caption"  # embedded without a caption: no score
    assert doc["rules"] == {"min_clip_score": limit}
    assert kept.column("image_embedding").null_count == 0  # the input's columns go through


def test_a_row_with_a_caption_but_no_score_is_no_clip_score(tmp_path, images):  # noqa: F811
    folder, _, names = images
    rows = [
        {"id": "high", "image": str(folder / names[0]), "caption": "a", "clip_score": 0.31},
        {"id": "low", "image": str(folder / names[1]), "caption": "b", "clip_score": 0.12},
        {"id": "unscored", "image": str(folder / names[2]), "caption": "c", "clip_score": None},
        {"id": "no_caption", "image": str(folder / names[3]), "caption": " ", "clip_score": None},
        {"id": "at_limit", "image": str(folder / names[4]), "caption": "d", "clip_score": 0.25},
    ]
    source = write_jsonl(tmp_path / "scored.jsonl", rows)
    doc, kept, rejects = run_filter(source, tmp_path / "out", "--min-clip-score", "0.25")
    assert kept.column("id").to_pylist() == ["high", "at_limit"]
    assert {i: r["reason"] for i, r in rejects.items()} == {
        "low": "low_clip_score",
        "unscored": "no_clip_score",
        "no_caption": "no_caption",
    }
    assert rejects["low"]["message"] == "clip_score=0.1200 < min_clip_score=0.25"
    assert rejects["unscored"]["message"] == "clip_score=null, min_clip_score=0.25"
    # the other rules come first: a too-small image goes as too_small whatever its score
    _, kept, rejects = run_filter(
        source, tmp_path / "both", "--min-clip-score", "0.25", "--min-side", "400"
    )
    assert rejects["low"]["reason"] == "too_small"  # 300x500
    assert kept.column("id").to_pylist() == ["high"]


def test_min_clip_score_computed_with_model_equals_open_clip(tmp_path, model_dir, images):  # noqa: F811
    source = dataset(tmp_path, images)
    folder, _, names = images
    captions = [f"a photo called {n}" for n in names]
    image, text = oracle(f"local-dir:{model_dir}", [folder / n for n in names], captions)
    good = ["r0", "r1", "r3", "r4", "r7", "r8", "r9"]  # the readable images, in order
    cosine = dict(zip(good, np.einsum("nd,nd->n", image, text).tolist(), strict=True))
    cosine["r1"] = None  # no caption
    limit = median_score(cosine)
    model = ["--model", f"local-dir:{model_dir}", "--batch-size", "2", "--device", "cpu"]
    doc, kept, rejects = run_filter(
        source, tmp_path / "good", "--min-clip-score", str(limit), *model
    )

    passing = [i for i in good if cosine[i] is not None and cosine[i] >= limit]
    assert kept.column("id").to_pylist() == passing
    assert kept.schema.field("clip_score").type == pa.float32()
    assert "image_embedding" not in kept.column_names  # the score only: embeddings are embed's
    np.testing.assert_allclose(
        kept.column("clip_score").to_numpy(), [cosine[i] for i in passing], atol=1e-5
    )
    reasons = {i: r["reason"] for i, r in rejects.items()}
    assert reasons == {
        "r1": "no_caption",
        "r2": "truncated",  # unreadable images go with their own reason, before the model
        "r5": "missing_file",
        "r6": "not_image",
        **{i: "low_clip_score" for i in good if cosine[i] is not None and cosine[i] < limit},
    }
    low = next(i for i, r in reasons.items() if r == "low_clip_score")
    message = rejects[low]["message"]
    assert message.startswith("clip_score=") and message.endswith(f" < min_clip_score={limit:g}")
    assert float(message.split()[0].split("=")[1]) == pytest.approx(cosine[low], abs=1e-4)
    manifest = json.loads((tmp_path / "good" / SIDE_DIR / "manifest.json").read_text())
    scorer = next(s for s in manifest["stages"] if s["stage"] == "clip_score")
    assert scorer["min_clip_score"] == limit and scorer["model"] == f"local-dir:{model_dir}"


def fails(tmp_path, *args) -> str:
    source = write_jsonl(tmp_path / "one.jsonl", [{"image": "x.jpg", "caption": "c"}])
    out = tmp_path / "never"
    result = runner.invoke(app, ["filter", str(source), "-o", str(out), *args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and not out.exists()
    return result.output


def test_what_is_missing_is_said_in_one_line_before_any_row_is_read(tmp_path, model_dir):  # noqa: F811
    assert "no clip_score column" in fails(tmp_path, "--min-clip-score", "0.3")
    assert "--min-clip-score" in fails(
        tmp_path, "--model", f"local-dir:{model_dir}", "--min-side", "4"
    )
    assert "between -1 and 1" in fails(tmp_path, "--min-clip-score", "28")
    assert "not found" in fails(
        tmp_path, "--min-clip-score", "0.3", "--model", "ViT-B-32", "--checkpoint", "nope.pt"
    )
