"""The signature pass decodes identical bytes once per worker (a bounded LRU keyed by sha256)."""

import shutil
from pathlib import Path

import pyarrow as pa
import pytest

import mmtok.stages.signature as signature
from mmtok.stages.signature import SignatureStage

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "images"


@pytest.fixture
def decodes(monkeypatch):
    """Counts the real decodes the stage makes (the decoder itself still runs)."""
    calls = []
    real = signature.decode_for_hash

    def counted(image, exif_transpose=True):
        calls.append(image.size)
        return real(image, exif_transpose)

    monkeypatch.setattr(signature, "decode_for_hash", counted)
    return calls


def rows_of(images: list[dict]) -> pa.Table:
    return pa.table(
        {
            "image": images,
            "caption": [None] * len(images),
            "id": [str(i) for i in range(len(images))],
        }
    )


def test_identical_bytes_are_decoded_once_and_give_the_same_signature(tmp_path, decodes):
    copies = []
    for k in range(5):  # the same file under five names, as a crawl repeats a logo
        copies.append(str(shutil.copy(EXAMPLES / "coffee.jpg", tmp_path / f"logo{k}.jpg")))
    data = (EXAMPLES / "coffee.jpg").read_bytes()
    images = [{"path": p, "bytes": None} for p in copies] + [{"path": None, "bytes": data}] * 3
    images.append({"path": str(EXAMPLES / "rocket.jpg"), "bytes": None})
    stage = SignatureStage(images=True, captions=None)
    stage.setup()
    kept = stage.process(rows_of(images)).kept.to_pylist()
    assert len(decodes) == 2  # coffee once, rocket once
    first = {k: kept[0][k] for k in ("sha256", "phash", "phash_mirror", "pixels")}
    assert all({k: r[k] for k in first} == first for r in kept[:8])
    assert kept[8]["phash"] != first["phash"]
    fresh = SignatureStage(images=True, captions=None)
    fresh.setup()
    assert fresh.process(rows_of(images[:1])).kept.to_pylist()[0]["phash"] == first["phash"]


def test_a_bad_file_repeated_gives_its_reason_every_time(decodes):
    cut = (EXAMPLES / "coffee.jpg").read_bytes()[:2000]
    stage = SignatureStage(images=True, captions=None)
    stage.setup()
    kept = stage.process(rows_of([{"path": None, "bytes": cut}] * 3)).kept.to_pylist()
    assert [r["sig_reason"] for r in kept] == ["truncated"] * 3
    assert len({r["sig_message"] for r in kept}) == 1 and len(decodes) == 1


def test_the_memory_of_recent_files_is_bounded(monkeypatch, decodes):
    monkeypatch.setattr(signature, "RECENT_FILES", 2)
    blobs = [(EXAMPLES / n).read_bytes() for n in ("coffee.jpg", "rocket.jpg", "brick.jpg")]
    stage = SignatureStage(images=True, captions=None)
    stage.setup()
    order = [0, 1, 0, 2, 0, 1]  # 1 is evicted by 2 (0 was used more recently), then decoded again
    stage.process(rows_of([{"path": None, "bytes": blobs[i]} for i in order]))
    assert len(decodes) == 4 and len(stage.recent) == 2
