import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import encode, photo, write_jsonl
from typer.testing import CliRunner

from mmtok.cli.app import app

runner = CliRunner()
MMTOK = [sys.executable, "-m", "mmtok"]


@pytest.fixture
def small_jsonl(tmp_path, image_files):
    rows = [{"image": str(p), "caption": n} for n, p in sorted(image_files.items())]
    rows.append({"image": "does/not/exist.jpg", "caption": "missing"})
    return write_jsonl(tmp_path / "small.jsonl", rows)


def test_version_and_help():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip().startswith("mmtok ")
    result = runner.invoke(app, ["probe", "--help"])
    assert result.exit_code == 0 and "--decode-check" in result.output


def test_probe_json_summary_accounts_for_every_row(small_jsonl, tmp_path):
    result = runner.invoke(
        app,
        [
            "probe",
            str(small_jsonl),
            "-o",
            str(tmp_path / "out"),
            "--decode-check",
            "--json",
            "-w",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    counts = doc["counts"]
    assert counts["in"] == 20 == counts["out"] + counts["rejected"]
    assert counts["rejected_by_reason"] == {
        "bomb": 1,
        "empty_file": 1,
        "missing_file": 1,
        "not_image": 3,
        "truncated": 1,
    }
    assert doc["formats"] == {"jpeg": 5, "png": 5, "webp": 1, "gif": 1, "tiff": 1}
    assert doc["percentiles_exact"] is True
    # pixel and byte counts have percentiles that occur, never 172.5 px
    for name in ("width", "height", "file_bytes"):
        assert all(type(v) is int for v in doc["percentiles"][name].values()), doc["percentiles"]
    manifest = json.loads((tmp_path / "out" / "__mmtok__" / "manifest.json").read_text())
    assert manifest["counts"] == counts and manifest["stages"][0]["decode_check"] is True


def test_probe_without_output_prints_summary_only(small_jsonl, tmp_path):
    result = runner.invoke(app, ["probe", str(small_jsonl), "-w", "1"])
    assert result.exit_code == 0
    assert "rows in" in result.stdout and "missing_file" in result.stdout
    assert not list(tmp_path.glob("*.parquet"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["probe", "nothing-here.jsonl"], "input not found"),
        (["probe", "{small}", "-o", "{out}", "--shard-bytes", "lots"], "not a size"),
        (["probe", "{small}", "--resume"], "need an output folder"),
        (["probe", "{small}", "--image-col", "picture"], "no image column 'picture'"),
    ],
)
def test_bad_usage_is_a_message_not_a_traceback(small_jsonl, tmp_path, args, message):
    args = [a.format(small=small_jsonl, out=tmp_path / "o") for a in args]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.stderr and "Traceback" not in result.stderr + result.stdout


def test_bad_flag_value_is_rejected_by_the_parser(small_jsonl):
    result = runner.invoke(app, ["probe", str(small_jsonl), "--workers", "0"])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_pipe_through_stdout(small_jsonl, tmp_path):
    first = subprocess.run(
        [
            *MMTOK,
            "probe",
            str(small_jsonl),
            "-o",
            "-",
            "--rejects",
            str(tmp_path / "rejects.jsonl"),
        ],
        capture_output=True,
        check=True,
    )
    lines = first.stdout.decode().splitlines()
    assert len(lines) == 14 and all(json.loads(line)["width"] for line in lines)
    second = subprocess.run(
        [*MMTOK, "probe", "-", "-o", str(tmp_path / "out"), "--json"],
        input=first.stdout,
        capture_output=True,
        check=True,
    )
    doc = json.loads(second.stdout)
    assert doc["counts"]["in"] == doc["counts"]["out"] == 14
    ids = pq.read_table(tmp_path / "out" / "part-00000.parquet").column("id").to_pylist()
    assert ids == [json.loads(line)["id"] for line in lines]  # ids survive the pipe
    rejects = [json.loads(r) for r in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert len(rejects) == 6 and {r["reason"] for r in rejects} >= {"missing_file", "bomb"}


def test_stdout_rows_carry_bytes_as_data_uris(tmp_path, image_files):
    import pyarrow as pa

    data = image_files["tiny_1x1.png"].read_bytes()
    pq.write_table(pa.table({"image": pa.array([data], pa.binary())}), tmp_path / "b.parquet")
    out = subprocess.run(
        [*MMTOK, "probe", str(tmp_path / "b.parquet"), "-o", "-"], capture_output=True, check=True
    ).stdout
    row = json.loads(out)
    assert row["image"].startswith("data:") and row["width"] == 1
    back = subprocess.run(
        [*MMTOK, "probe", "-", "-o", "-"], input=out, capture_output=True, check=True
    )
    assert json.loads(back.stdout)["file_bytes"] == len(data)


def test_help_does_not_import_torch():
    code = (
        "import sys; from typer.testing import CliRunner; from mmtok.cli.app import app; "
        "r = CliRunner(); r.invoke(app, ['--help']); r.invoke(app, ['probe', '--help']); "
        "heavy = [m for m in ('torch', 'open_clip', 'decord', 'ray') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def many_rows(tmp_path):
    """3,000 rows over 20 small JPEGs: slow enough to interrupt part-way with --decode-check."""
    paths = []
    for i in range(20):
        path = tmp_path / f"img_{i}.jpg"
        path.write_bytes(encode(photo(320, 240, seed=i), "JPEG"))
        paths.append(path)
    rows = [{"image": str(paths[i % 20]), "caption": f"row {i}"} for i in range(3000)]
    rows[1234]["image"] = "missing.jpg"
    return write_jsonl(tmp_path / "many.jsonl", rows)


def _dataset_rows(out: Path):
    manifest = json.loads((out / "__mmtok__" / "manifest.json").read_text())
    rows = [
        r
        for f in manifest["files"]
        if f["kind"] == "rows"
        for r in pq.read_table(out / f["name"]).to_pylist()
    ]
    return rows, pq.read_table(out / "__mmtok__" / "rejects.parquet").to_pylist(), manifest


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_killed_run_resumes_to_the_same_rows(many_rows, tmp_path, sig):
    args = [
        *MMTOK,
        "probe",
        str(many_rows),
        "--decode-check",
        "--shard-rows",
        "200",
        "-w",
        "1",
        "-q",
    ]
    subprocess.run([*args, "-o", str(tmp_path / "ref")], check=True)

    out = tmp_path / "out"
    state = tmp_path / ".out.mmtok-staging" / "state.json"
    proc = subprocess.Popen([*args, "-o", str(out)])
    deadline = time.monotonic() + 60
    # three slices published (state.json records them at most once a second, so watch the
    # shards themselves); a SIGKILL may land before their state is written: resume redoes them
    while time.monotonic() < deadline:
        if len(list(state.parent.glob("**/part-*.parquet"))) >= 3:
            break
        time.sleep(0.02)
    os.kill(proc.pid, sig)
    code = proc.wait()
    assert code == (130 if sig == signal.SIGINT else -signal.SIGKILL)
    assert not out.exists(), "a killed run must not leave a finished-looking output"
    done = json.loads(state.read_text())["records_done"]
    assert done < 3000 and (done > 0 or sig == signal.SIGKILL)

    subprocess.run([*args, "-o", str(out), "--resume"], check=True)
    rows, rejects, manifest = _dataset_rows(out)
    ref_rows, ref_rejects, ref_manifest = _dataset_rows(tmp_path / "ref")
    assert manifest["resumed"] == 1 and manifest["counts"] == ref_manifest["counts"]
    assert manifest["command"].startswith("mmtok probe ") and manifest["command"].endswith(
        "--resume"
    )
    assert rows == ref_rows and rejects == ref_rejects
    assert len({r["id"] for r in rows}) == 2999
