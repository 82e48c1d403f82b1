"""dedup's output (issue 13.4): checked before the signature pass, resumable, and its
clusters.parquet inside the commit."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import encode, photo, write_jsonl
from typer.testing import CliRunner

from mmtok.cli.app import app
from mmtok.io import sink as sink_module
from mmtok.io.layout import MANIFEST_FILE, SIDE_DIR
from mmtok.stages.signature import SignatureStage

runner = CliRunner()


@pytest.fixture
def rows_jsonl(tmp_path) -> Path:
    """600 rows (3 batches of the writing pass) over 20 photos, each repeated 30 times."""
    paths = []
    for i in range(20):
        paths.append(tmp_path / f"p{i}.jpg")
        paths[-1].write_bytes(encode(photo(64, 48, seed=i), "JPEG"))
    rows = [{"image": str(paths[i // 30]), "caption": f"row {i}"} for i in range(600)]
    return write_jsonl(tmp_path / "rows.jsonl", rows)


def dedup(*args: str):
    return runner.invoke(
        app, ["dedup", *args, "-w", "1", "-q", "--shard-rows", "2"], catch_exceptions=False
    )


def read(out: Path):
    manifest = json.loads((out / SIDE_DIR / MANIFEST_FILE).read_text())
    rows = [
        r
        for f in manifest["files"]
        if f["kind"] == "rows"
        for r in pq.read_table(out / f["name"]).to_pylist()
    ]
    side = {f["name"] for f in manifest["files"] if f["kind"] != "rows"}
    rejects = pq.read_table(out / SIDE_DIR / "rejects.parquet").to_pylist()
    clusters = pq.read_table(out / SIDE_DIR / "clusters.parquet").to_pylist()
    return rows, rejects, clusters, manifest["counts"], side


def test_an_existing_output_is_refused_before_the_signature_pass(rows_jsonl, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert dedup(str(rows_jsonl), "-o", str(out)).exit_code == 0
    calls = {"n": 0}
    original = SignatureStage.process

    def counted(self, rows):
        calls["n"] += 1
        return original(self, rows)

    monkeypatch.setattr(SignatureStage, "process", counted)
    monkeypatch.setattr(SignatureStage, "isolate", False)  # counted in this process
    result = dedup(str(rows_jsonl), "-o", str(out))
    assert result.exit_code == 2 and "already exists" in result.output
    result = dedup(str(rows_jsonl), "-o", str(rows_jsonl.parent), "--overwrite")
    assert result.exit_code == 2 and "input" in result.output
    assert calls["n"] == 0


@pytest.mark.parametrize(
    ("hit", "signed_on_resume"),
    [(1, 600 - 256), (5, 0)],
    ids=["in-the-signature-pass", "in-the-writing-pass"],
)
def test_an_interrupted_dedup_resumes_to_the_same_output(
    rows_jsonl, tmp_path, monkeypatch, hit, signed_on_resume
):
    """Ctrl-C after the first batch of the signature pass (its commit 1 of 4), or of the
    writing pass (commit 5): --resume signs only the rows not yet signed, and ends with the
    output of an uninterrupted run."""
    assert dedup(str(rows_jsonl), "-o", str(tmp_path / "ref")).exit_code == 0
    reference = read(tmp_path / "ref")
    assert len(reference[0]) == 20 and {f"{SIDE_DIR}/clusters.parquet"} <= reference[4]
    assert not list(tmp_path.glob(".ref.mmtok-*"))  # staging and signatures cleared

    hits = {"n": 0}

    def interrupt(step: str) -> None:
        if step == "committed":
            hits["n"] += 1
            if hits["n"] == hit:
                raise KeyboardInterrupt

    monkeypatch.setattr(sink_module, "crash_point", interrupt)
    result = dedup(str(rows_jsonl), "-o", str(tmp_path / "out"))
    assert result.exit_code == 130 and "--resume" in result.output
    monkeypatch.undo()
    assert not (tmp_path / "out").exists()
    result = dedup(str(rows_jsonl), "-o", str(tmp_path / "out"))
    assert result.exit_code == 2 and "unfinished" in result.output and "--resume" in result.output

    signed = {"rows": 0}
    original = SignatureStage.process

    def counted(self, rows):
        signed["rows"] += rows.num_rows
        return original(self, rows)

    monkeypatch.setattr(SignatureStage, "process", counted)
    # in this process, so the count is seen (one worker would otherwise isolate it in a child)
    monkeypatch.setattr(SignatureStage, "isolate", False)
    result = dedup(str(rows_jsonl), "-o", str(tmp_path / "out"), "--resume")
    assert result.exit_code == 0, result.output
    assert signed["rows"] == signed_on_resume
    rows, rejects, clusters, counts, side = read(tmp_path / "out")
    assert (rows, rejects, clusters, counts, side) == reference
    assert not list(tmp_path.glob(".out.mmtok-*"))
