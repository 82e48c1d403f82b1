"""`mmtok tokenize-images` through the real CLI on real image files.

Oracle: the tokenizer run directly (`mmtok.models.vq`: build_model + load_checkpoint, the
family's `preprocess` on `Image.open(file)`, `encode_ids` in fp32, one image at a time). The
stored ids must be equal, in row order, whatever the batch size and the number of workers.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tiny_models import tiny_tokenizer
from vq_fixtures import (
    dataset,
    direct_ids,
    image_folder,
    mmtok,
    read_rows,
    run_json,
)

from mmtok.io.layout import SIDE_DIR
from mmtok.vq_stream import write_stream

KILL_DRIVER = Path(__file__).with_name("kill_driver.py")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vq")
    config, checkpoint = tiny_tokenizer(folder)
    images = folder / "images"
    images.mkdir()
    order, names = image_folder(images)
    source = dataset(images, order, folder / "in.jsonl")
    expected = direct_ids(config, checkpoint, [images / n for n in names])
    return {
        "config": config,
        "checkpoint": checkpoint,
        "source": source,
        "names": names,
        "expected": expected,
        "folder": folder,
    }


def tokenize(files, out, *args):
    return run_json(
        "tokenize-images",
        files["source"],
        "-o",
        out,
        "--config",
        files["config"],
        "--checkpoint",
        files["checkpoint"],
        *args,
    )


def stored_ids(table: pa.Table) -> np.ndarray:
    return np.array(table.column("vq_ids").to_pylist(), np.int64)


@pytest.fixture(scope="module")
def tokenized(files, tmp_path_factory):
    """One run shared by the tests that only read its output."""
    out = tmp_path_factory.mktemp("tokenized") / "out"
    doc = tokenize(files, out, "-w", "1", "--batch-size", "3", "--emit", "bin")
    return doc, out


def test_ids_equal_the_model_run_directly_and_bad_images_are_rejects(files, tokenized):
    doc, out = tokenized
    assert (doc["counts"]["in"], doc["counts"]["out"], doc["counts"]["rejected"]) == (10, 7, 3)
    table = read_rows(out)
    assert table.column("id").to_pylist() == ["r0", "r1", "r3", "r4", "r7", "r8", "r9"]
    assert table.column("caption").to_pylist() == files["names"]
    ids = stored_ids(table)
    np.testing.assert_array_equal(ids, files["expected"])
    assert len(np.unique(ids)) > 8  # the codebook is drawn at the latents' scale: many codes
    grid = doc["grid"][0]
    assert ids.shape[1] == grid * grid == doc["tokens_per_image"]
    assert set(table.column("vq_grid_h").to_pylist()) == {grid}
    assert set(table.column("vq_grid_w").to_pylist()) == {grid}
    assert set(table.column("vq_codebook_size").to_pylist()) == {doc["codebook_size"]}
    assert table.schema.field("vq_ids").type == pa.list_(pa.uint16())
    assert doc["tokens"] == 7 * grid * grid
    rejects = pq.read_table(out / SIDE_DIR / "rejects.parquet").to_pylist()
    assert {r["id"]: (r["stage"], r["reason"]) for r in rejects} == {
        "r2": ("vq_input", "truncated"),
        "r5": ("vq_input", "missing_file"),
        "r6": ("vq_input", "not_image"),
    }


def test_tokenizer_and_checkpoint_are_in_the_metadata_and_manifest(files, tokenized):
    _, out = tokenized
    sha = hashlib.sha256(files["checkpoint"].read_bytes()).hexdigest()
    schema = pq.read_schema(next(out.glob("part-*.parquet")))
    field = schema.field("vq_ids").metadata
    tokenizer = json.loads(files["config"].read_text())
    assert field[b"checkpoint_sha256"].decode() == sha
    assert json.loads(field[b"tokenizer"])["codebook_size"] == tokenizer["codebook_size"]
    assert field[b"precision"] == b"fp32"
    manifest = json.loads((out / SIDE_DIR / "manifest.json").read_text())
    for recorded in (json.loads(schema.metadata[b"mmtok_stages"]), manifest["stages"]):
        info = next(s for s in recorded if s["stage"] == "tokenize_images")
        assert info["checkpoint_sha256"] == sha
        assert info["tokenizer"]["codebook_size"] == tokenizer["codebook_size"]
        assert info["precision"] == "fp32"


def test_one_and_two_workers_give_the_same_output(files, tokenized, tmp_path):
    tokenize(files, tmp_path / "two", "-w", "2", "--batch-size", "3", "--emit", "bin")
    assert read_rows(tmp_path / "two").equals(read_rows(tokenized[1]))  # bit for bit, in order
    for name in ("tokens.bin", "offsets.npy"):
        stream = Path(SIDE_DIR) / "vq_stream" / name
        assert (tmp_path / "two" / stream).read_bytes() == (tokenized[1] / stream).read_bytes()


def wrapped(ids: np.ndarray, boi: int | None, eoi: int | None) -> list[list[int]]:
    return [
        [*([boi] if boi is not None else []), *r, *([eoi] if eoi is not None else [])] for r in ids
    ]


def assert_stream(out: Path, rows: list[list[int]], width: int) -> None:
    stream = out / SIDE_DIR / "vq_stream"
    # the 5-line reader of the README
    with open(stream / "stream.json") as f:
        info = json.load(f)
    tokens = np.memmap(stream / "tokens.bin", dtype=info["dtype"], mode="r")
    offsets = np.load(stream / "offsets.npy", mmap_mode="r")
    assert len(offsets) == len(rows) + 1 and offsets[0] == 0
    for i, row in enumerate(rows):
        assert tokens[offsets[i] : offsets[i + 1]].tolist() == row
    assert info["dtype"] == ("<u4" if width == 4 else "<u2")
    assert (stream / "tokens.bin").stat().st_size == width * sum(map(len, rows))  # exactly


def test_the_bin_stream_reads_back_to_the_parquet_ids(tokenized):
    doc, out = tokenized
    ids = stored_ids(read_rows(out))
    assert_stream(out, wrapped(ids, None, None), 2)
    assert doc["stream"]["tokens"] == ids.size
    manifest = json.loads((out / SIDE_DIR / "manifest.json").read_text())
    listed = {f["name"]: f["sha256"] for f in manifest["files"]}
    for name in ("tokens.bin", "offsets.npy", "stream.json"):
        digest = hashlib.sha256((out / SIDE_DIR / "vq_stream" / name).read_bytes()).hexdigest()
        assert listed[f"{SIDE_DIR}/vq_stream/{name}"] == digest


def test_the_readme_reader_reads_the_stream(tokenized):
    """The README's reader, run as written on the shared output."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    blocks = [b.split("```")[0] for b in readme.split("```python\n")[1:]]
    (reader,) = [b for b in blocks if "vq_stream/tokens.bin" in b]
    assert len(reader.strip().splitlines()) == 5
    scope: dict = {}
    exec(reader.replace('"tok/', f'"{tokenized[1]}/'), scope)
    assert scope["ids_of_image_3"].tolist() == stored_ids(read_rows(tokenized[1]))[3].tolist()


@pytest.mark.parametrize(
    ("boi", "eoi", "width"), [(64, 65, 2), (None, 70000, 4), (8197, None, 2), (None, None, 2)]
)
def test_markers_wrap_each_image(tokenized, tmp_path, boi, eoi, width):
    """write_stream itself over the shards of the shared run (the CLI's --boi is in the kill
    test below); a marker over 65,535 makes the stream uint32."""
    doc, out = tokenized
    for part in out.glob("part-*.parquet"):
        shutil.copy(part, tmp_path / part.name)
    write_stream(tmp_path, codebook_size=doc["codebook_size"], boi=boi, eoi=eoi)
    assert_stream(tmp_path, wrapped(stored_ids(read_rows(out)), boi, eoi), width)


def test_stdout_output_carries_the_ids(files):
    result = mmtok(
        "tokenize-images",
        files["source"],
        "-o",
        "-",
        "--config",
        files["config"],
        "--checkpoint",
        files["checkpoint"],
        "-w",
        "1",
        "--rejects",
        os.devnull,
    )
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["id"] for r in rows] == ["r0", "r1", "r3", "r4", "r7", "r8", "r9"]
    np.testing.assert_array_equal(np.array([r["vq_ids"] for r in rows]), files["expected"])


def test_every_tool_reads_the_output(files, tokenized, tmp_path, monkeypatch):
    import datasets
    import duckdb
    import pandas
    import polars

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    out = tokenized[1]
    expected = files["expected"].tolist()
    hf = datasets.load_dataset(str(out), split="train")
    assert hf["vq_ids"] == expected
    assert isinstance(hf.features["image"], datasets.Image)
    assert pandas.read_parquet(out)["vq_ids"].map(list).tolist() == expected
    assert polars.scan_parquet(f"{out}/*.parquet").collect()["vq_ids"].to_list() == expected
    rows = duckdb.sql(f"select vq_ids from read_parquet('{out}/*.parquet')").fetchall()
    assert [list(r[0]) for r in rows] == expected
    # and mmtok reads its own output: the next command sees the same rows
    mmtok("probe", out, "-o", tmp_path / "again", "-w", "1", "-q")
    again = read_rows(tmp_path / "again")
    assert again.column("id").equals(read_rows(out).column("id"))
    assert again.column("vq_ids").to_pylist() == expected


def killed(files, out: Path, step: str, nth: int, *args: str) -> None:
    """The command, SIGKILLed at the `nth` time the sink reaches `step`."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run(
        [sys.executable, str(KILL_DRIVER), step, str(nth), *args],
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert run.returncode == -9, run.stderr.decode()
    assert not out.exists()  # nothing published: a killed run leaves only its staging folder


@pytest.mark.slow
def test_resume_after_kills_gives_the_same_rows_and_stream(files, tokenized, tmp_path):
    """Killed after the second shard, then killed again (resumed) while writing the stream,
    then resumed to the end: the same rows as one clean run, and the stream is complete."""
    out = tmp_path / "out"
    args = ["tokenize-images", str(files["source"]), "-o", str(out)]
    args += ["--config", str(files["config"]), "--checkpoint", str(files["checkpoint"])]
    args += ["-w", "1", "--batch-size", "2", "--shard-rows", "2", "-q"]
    args += ["--emit", "bin", "--boi", "99"]
    killed(files, out, "committed", 2, *args)
    killed(files, out, "side-written", 1, *args, "--resume")
    mmtok(*args, "--resume")
    manifest = json.loads((out / SIDE_DIR / "manifest.json").read_text())
    assert manifest["resumed"] == 2
    assert len([f for f in manifest["files"] if f["kind"] == "rows"]) > 2  # shards of ~2 rows
    assert read_rows(out).equals(read_rows(tokenized[1]))
    assert_stream(out, wrapped(files["expected"], 99, None), 2)


def one_line_error(result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert "Traceback" not in text
    for word in words:
        assert word in text, text


def test_user_errors_are_one_line_before_any_data_is_read(files, tmp_path):
    from vq_fixtures import runner

    from mmtok.cli.app import app

    def run(*args):
        return runner.invoke(app, ["tokenize-images", *map(str, args)])

    # an input that does not exist is never reached: the checkpoint is checked first
    missing = run("nowhere.jsonl", "-o", tmp_path / "o", "--config", files["config"],
                  "--checkpoint", tmp_path / "none.ckpt")  # fmt: skip
    one_line_error(missing, "none.ckpt", "no such file")
    assert not (tmp_path / "o").exists()

    import torch

    state = torch.load(files["checkpoint"], weights_only=True)
    state = state.get("state_dict", state)
    dropped = sorted(k for k in state if k.startswith("encoder."))[:1]
    partial = tmp_path / "partial.pt"
    torch.save({k: v for k, v in state.items() if k not in dropped}, partial)
    base = [files["source"], "-o", tmp_path / "o", "--config", files["config"]]
    one_line_error(run(*base, "--checkpoint", partial), dropped[0])
    assert not (tmp_path / "o").exists()

    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"<!doctype html>not a checkpoint")
    one_line_error(run(*base, "--checkpoint", garbage), "garbage.ckpt")
    assert not (tmp_path / "o").exists()

    good = [*base, "--checkpoint", files["checkpoint"]]
    if not torch.cuda.is_available():
        one_line_error(run(*good, "--device", "cuda"), "no CUDA GPU")
    one_line_error(run(*good, "--boi", "1"), "--emit bin")
    one_line_error(run(*good, "--emit", "bin", "--boi", "3"), "--boi 3", "codebook")
    one_line_error(run(*good, "--emit", "bin", "--boi", "99", "--eoi", "99"), "same id")
    stdout = [files["source"], "-o", "-", "--config", files["config"]]
    one_line_error(run(*stdout, "--checkpoint", files["checkpoint"], "--emit", "bin"), "-o DIR")
    one_line_error(
        run(files["source"], "-o", tmp_path / "o", "--checkpoint", files["checkpoint"]),
        "no tokenizer",
    )
    assert not (tmp_path / "o").exists()
