"""Inputs that can be read only once: a shell's `<(zcat rows.jsonl.gz)` (/dev/fd/63) and named
pipes give the rows their file gives (a named pipe hung mmtok forever: the read after the scan
waited for a second writer; /dev/fd/63 was "cannot tell the format"), in every format, with
stable ids, a resumable output and no temporary copy left behind."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmtok.io.sources import Inputs, ReadOptions
from mmtok.io.sources.spool import spool

MMTOK = [sys.executable, "-m", "mmtok"]


@pytest.fixture()
def data(tmp_path, image_files) -> Path:
    """rows in every format, naming images by paths relative to the data folder."""
    folder = tmp_path / "data"
    folder.mkdir()
    names = ["baseline_640x480.jpg", "rgb_640x480.png", "photo_100x50.webp", "empty.jpg"]
    for name in names:
        (folder / name).write_bytes(image_files[name].read_bytes())
    rows = [{"image": n, "caption": f"c{i}"} for i, n in enumerate(names)]
    lines = "".join(f'{{"image": "{r["image"]}", "caption": "{r["caption"]}"}}\n' for r in rows)
    (folder / "rows.jsonl").write_text(lines)
    (folder / "rows.jsonl.gz").write_bytes(gzip.compress(lines.encode()))
    csv = "image,caption\n" + "".join(f"{r['image']},{r['caption']}\n" for r in rows)
    (folder / "rows.csv").write_text(csv)
    (folder / "rows.csv.gz").write_bytes(gzip.compress(csv.encode()))
    pq.write_table(pa.Table.from_pylist(rows), folder / "rows.parquet")
    with tarfile.open(folder / "shard.tar", "w") as tar:
        for i, name in enumerate(names[:3]):
            for member, payload in (
                (f"s{i}.{name.rsplit('.', 1)[1]}", (folder / name).read_bytes()),
                (f"s{i}.txt", f"c{i}".encode()),
            ):
                info = tarfile.TarInfo(member)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return folder


def run(args: list[str], cwd: Path, tmp: Path, shell: str | None = None):
    env = {**os.environ, "TMPDIR": str(tmp)}  # where the copies go: checked empty after
    if shell is not None:  # bash for its process substitution
        return subprocess.run(
            ["bash", "-c", shell], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
        )
    return subprocess.run([*MMTOK, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def rows_of(out: Path) -> list[tuple]:
    table = pq.read_table(out)
    return sorted(zip(*(table.column(c).to_pylist() for c in ("caption", "width")), strict=True))


@pytest.mark.parametrize(
    "name", ["rows.jsonl", "rows.jsonl.gz", "rows.csv", "rows.csv.gz", "rows.parquet", "shard.tar"]
)
def test_process_substitution_reads_like_the_file(data, tmp_path, name):
    spools = tmp_path / "spools"
    spools.mkdir()
    direct = run(["probe", name, "-o", str(tmp_path / "direct")], data, spools)
    assert direct.returncode == 0, direct.stderr
    mmtok = " ".join(MMTOK)
    piped = run([], data, spools, shell=f"{mmtok} probe <(cat {name}) -o {tmp_path / 'piped'}")
    assert piped.returncode == 0, piped.stderr
    assert rows_of(tmp_path / "piped") == rows_of(tmp_path / "direct")
    assert list(spools.iterdir()) == []  # the copy went with the run


def writer(path: Path, payload: bytes) -> threading.Thread:
    """A writer for the named pipe `path`: it waits for mmtok to open it."""

    def write() -> None:
        with open(path, "wb") as f:
            f.write(payload)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("name", ["rows.jsonl", "rows.csv", "rows.jsonl.gz"])
def test_a_named_pipe_is_read_once(data, tmp_path, name):
    spools = tmp_path / "spools"
    spools.mkdir()
    pipe = data / f"pipe-{name}"
    os.mkfifo(pipe)
    payload = (data / name).read_bytes()
    out = tmp_path / "out"
    writer(pipe, payload)
    first = run(["probe", pipe.name, "-o", str(out)], data, spools)
    assert first.returncode == 0, first.stderr
    table = pq.read_table(out)
    assert table.num_rows == 3 and set(table.column("source").to_pylist()) == {pipe.name}
    direct = run(["probe", name, "-o", str(tmp_path / "direct")], data, spools)
    assert rows_of(out) == rows_of(tmp_path / "direct")
    # a second run into a new folder gives the same ids: they hash the pipe's name
    writer(pipe, payload)
    other = run(["probe", pipe.name, "-o", str(tmp_path / "other")], data, spools)
    assert other.returncode == 0, other.stderr
    assert sorted(pq.read_table(tmp_path / "other").column("id").to_pylist()) == sorted(
        table.column("id").to_pylist()
    )
    assert list(spools.iterdir()) == [] and direct.returncode == 0


def test_a_pipe_named_as_an_image_is_refused(tmp_path):
    pipe = tmp_path / "photo.jpg"
    os.mkfifo(pipe)
    done = run(["probe", str(pipe)], tmp_path, tmp_path)
    assert done.returncode == 2 and "is a pipe" in done.stderr, done
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("payload", "ending"),
    [
        (b'{"image": "a.jpg"}\n', ".jsonl"),
        (gzip.compress(b'{"image": "a.jpg"}\n'), ".jsonl.gz"),
        (b"PAR1" + b"\0" * 20, ".parquet"),
        (b"\0" * 257 + b"ustar" + b"\0" * 300, ".tar"),
        (gzip.compress(b"\0" * 257 + b"ustar" + b"\0" * 300), ".tar.gz"),
        (b"", ".jsonl"),
        (b"image,caption\na.jpg,x\n", ".csv"),
        (b"\xef\xbb\xbfimage\tcaption\na.jpg\tx\n", ".tsv"),
        (gzip.compress(b"image,caption\na.jpg,x\n"), ".csv.gz"),
        # a damaged first line before JSON objects: JSON Lines, the line one reject
        (b'"image": "a.jpg", "caption"\n{"image": "b.jpg"}\n', ".jsonl"),
        (b"\n\n  [1, 2]\n", ".jsonl"),
        (b"just words\n", ".jsonl"),
    ],
)
def test_an_unnamed_stream_is_told_by_its_first_bytes(tmp_path, monkeypatch, payload, ending):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    copy = spool(io.BytesIO(payload), "63")
    assert copy.endswith(ending) and Path(copy).read_bytes() == payload
    named = spool(io.BytesIO(payload), "rows.csv")  # a name that says: kept, whatever the bytes
    assert named.endswith(".csv")


def test_a_resumed_run_knows_the_same_data_by_its_content(data, tmp_path, monkeypatch):
    """A pipe's copy is new each run: `--resume` compares the inputs' fingerprints, which for
    a copy are its content's digest under the pipe's name."""
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    pipe = tmp_path / "pipe.jsonl"
    os.mkfifo(pipe)
    payload = (data / "rows.jsonl").read_bytes()
    prints = []
    for content in (payload, payload, payload + b'{"image": "more.jpg"}\n'):
        writer(pipe, content)
        inputs = Inputs([str(pipe)], ReadOptions())
        prints.append(inputs.fingerprint())
        copy = inputs.sources[0].path
        del inputs
        assert not os.path.exists(copy)  # removed with its source
    assert prints[0] == prints[1] != prints[2]
    assert prints[0][1][0]["path"] == str(pipe)
