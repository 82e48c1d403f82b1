"""Summaries computed in the workers (`Observer.summary`): the same --json document for any
worker count, in this process or not, with or without an output; no observed column reaches
the main process; a killed and resumed run summarises as an uninterrupted one.

The samples' capacities are made small (`small_samples`) so that bottom-k drops values: the
documents then depend on which rows the samples keep, not only on the totals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import encode, photo, received_tables, write_jsonl
from PIL import Image
from typer.testing import CliRunner

from mmtok.cli.app import app
from mmtok.engine.local import StageChain
from mmtok.stats import PercentileSample, RowSample

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()
ROWS = 1_500  # 6 batches of 256: several slices, several batches per slice


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    """1,500 rows over 24 images of different sizes, formats and EXIF rotations, every 97th
    row a missing file (a reject, so kept rows are not input rows)."""
    folder = tmp_path_factory.mktemp("mixed")
    paths = []
    for i in range(24):
        w, h = 40 + 37 * i, 900 - 31 * i
        im = photo(w, h, seed=i)
        if i % 3 == 0:
            data = encode(im, "PNG")
        elif i % 3 == 1:
            exif = Image.Exif()
            exif[0x0112] = 6 if i % 2 else 1
            data = encode(im, "JPEG", exif=exif.tobytes())
        else:
            data = encode(im, "WEBP")
        path = folder / f"{i:02d}.img"
        path.write_bytes(data)
        paths.append(str(path))
    rows = [
        {
            "image": "missing.jpg" if i % 97 == 5 else paths[(i * 7) % 24],
            "caption": "word " * ((i * 13) % 300),
        }
        for i in range(ROWS)
    ]
    return write_jsonl(folder / "rows.jsonl", rows)


@pytest.fixture
def small_samples(monkeypatch):
    """Capacities below the row count (this process: the workers only fill parts)."""
    monkeypatch.setattr(PercentileSample.__init__, "__defaults__", (300, 0))
    monkeypatch.setattr(RowSample.__init__, "__defaults__", (200, 0))


def document(*args: str) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    for key in ("timing", "output"):
        doc.pop(key, None)
    doc.get("counts", {}).pop("seconds", None)
    return doc


def each_way(monkeypatch, tmp_path, *args: str, output: bool = True) -> list[dict]:
    """The document with 1 and 2 workers, with one worker in this process, and with 2 workers
    writing an output."""
    docs = [document(*args, "-w", "1"), document(*args, "-w", "2")]
    with monkeypatch.context() as m:
        m.setattr(StageChain, "isolate", property(lambda self: False))
        docs.append(document(*args, "-w", "1"))
    if output:
        docs.append(document(*args, "-w", "2", "-o", str(tmp_path / "out")))
    return docs


def test_probe_document_whatever_the_workers(mixed, tmp_path, monkeypatch, small_samples):
    docs = each_way(monkeypatch, tmp_path, "probe", str(mixed))
    assert docs[0]["counts"]["rejected"] == 16 and not docs[0]["percentiles_exact"]
    assert docs[0]["formats"] == {"png": 495, "jpeg": 495, "webp": 494}
    for doc in docs[1:]:
        assert doc == docs[0]


def test_budget_document_whatever_the_workers(mixed, tmp_path, monkeypatch, small_samples):
    args = ["estimate-budget", str(mixed), "-p", "qwen2-vl", "-p", "llama3-336"]
    docs = each_way(monkeypatch, tmp_path, *args, "--context", "2000", "--suggest")
    entry = docs[0]["presets"]["qwen2-vl"]
    assert entry["images"] == ROWS - 16 and not entry["percentiles_exact"]
    assert entry["suggest"]["value"] and entry["bytes_per_token_cv"] > 0
    for doc in docs[1:]:
        assert doc == docs[0]


def test_sampled_budget_whatever_the_workers(mixed, tmp_path, monkeypatch, small_samples):
    args = ["estimate-budget", str(mixed), "-p", "qwen2-vl", "--sample", "700", "--seed", "2"]
    # (not with -o: a sampled run cannot write an output yet, SampledInputs has no sources)
    docs = each_way(monkeypatch, tmp_path, *args, output=False)
    assert docs[0]["presets"]["qwen2-vl"]["ci95"]
    for doc in docs[1:]:
        assert doc == docs[0]


def test_the_main_process_receives_no_observed_column(mixed, worker_messages):
    """Workers send each slice's summary parts with its end, and its batches as a row count:
    the tables that reach this process hold only a row count and reject reasons, never the
    probed or budget columns (nor, with --sample, where this process reads the batches, the
    rows)."""
    document("probe", str(mixed), "-w", "2")
    document("estimate-budget", str(mixed), "-p", "qwen2-vl", "--context", "900", "--suggest",
             "-w", "2")  # fmt: skip
    document("estimate-budget", str(mixed), "-p", "qwen2-vl", "--sample", "600", "-w", "2")
    messages = [m for m in worker_messages if isinstance(m, tuple)]
    # reject reasons, and the row counts of the sampled batches (read here, run as batches)
    tables = received_tables(messages) + [m[1][0] for m in messages if m[0] == "done"]
    assert {c for t in tables for c in t.column_names} == {"rows", "reason"}
    parts = {
        (m[0], type(p).__name__)
        for m in worker_messages
        if isinstance(m, tuple) and m[0] in ("end", "done") and m[-1] is not None
        for p in m[-1]
    }
    assert {("end", "ProbeSummary"), ("end", "BudgetSummary"), ("done", "BudgetSummary"),
            ("done", "VideoSummary")} <= parts  # fmt: skip
    batches = [m for m in worker_messages if isinstance(m, tuple) and m[0] == "batch"]
    assert len(batches) >= 12
    # a slice's batch: its kept rows' count and no parts (they come with the slice's end)
    assert all(type(m[1]) is int and m[-1] == [] for m in batches)
    assert sum(m[1] for m in batches) == 2 * (ROWS - 16)  # probe's and the budget's


SCRIPT = """
import sys
from mmtok.stats import PercentileSample, RowSample
PercentileSample.__init__.__defaults__ = (300, 0)
RowSample.__init__.__defaults__ = (200, 0)
if __name__ == "__main__":
    from mmtok.cli.app import app
    app(sys.argv[1:], prog_name="mmtok")
"""


def test_a_killed_budget_run_resumes_to_the_same_document(mixed, tmp_path):
    """SIGKILL once some shards are published; --resume re-reads them into the summaries (in
    this process) and the workers summarise the rest: the document is the uninterrupted one's."""
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    # one worker: slow enough to kill part-way
    args = [sys.executable, str(script), "estimate-budget", str(mixed), "-p", "qwen2-vl",
            "-p", "kimi-vl", "--context", "2000", "--suggest", "--decode", "--shard-rows", "256",
            "-w", "1", "--json"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def finished(out: Path, *more: str) -> dict:
        result = subprocess.run(
            [*args, "-o", str(out), *more], check=True, env=env, capture_output=True, text=True
        )
        doc = json.loads(result.stdout)
        for key in ("timing", "output"):
            doc.pop(key)
        return doc

    reference = finished(tmp_path / "ref")
    out = tmp_path / "out"
    staging = tmp_path / ".out.mmtok-staging"
    proc = subprocess.Popen([*args, "-o", str(out)], env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        state = staging / "state.json"
        if state.exists() and len(json.loads(state.read_text())["parts"]) >= 2:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it was killed: make it slower"
    proc.kill()  # its workers die with it (PR_SET_PDEATHSIG)
    proc.wait()
    done = json.loads((staging / "state.json").read_text())["records_done"]
    assert 0 < done < ROWS, "killed too late: make the run slower"
    resumed = finished(out, "--resume")
    assert resumed["counts"] == reference["counts"]
    assert not resumed["presets"]["qwen2-vl"]["percentiles_exact"]
    assert resumed == reference


@pytest.mark.parametrize("part_rows", [None, 6], ids=["parts-at-end", "parts-every-2-batches"])
@pytest.mark.parametrize("output", [True, False, "sampled"], ids=["written", "counted", "sampled"])
def test_a_batch_retried_row_by_row_summarises_as_the_rows_kept(
    tmp_path, image_files, output, part_rows, monkeypatch, worker_messages
):
    """Row 37 kills its worker: its batch runs row by row, its slice again with that result
    (`_rerun_slice`), and the parts come from the workers as for any batch: the summary is that
    of the rows kept, in order, with and without -o, for 1 and 2 workers. "sampled": batches
    read here (`run_local`, every row sampled), the parts of the retried rows merged in order.
    `part_rows` 6: a slice's parts are also sent with its batches (`SliceParts`), at batches
    a slice run again sends again, and still merged once."""
    from poison_stages import PoisonProbe

    from mmtok.engine import pipeline
    from mmtok.engine.pipeline import Observer, OutputOptions, run_pipeline

    if part_rows:
        worker_output = pipeline._worker_output

        def small_parts(*args):
            spec = worker_output(*args)
            if spec is not None:
                spec.part_rows = part_rows
            return spec

        monkeypatch.setattr(pipeline, "_worker_output", small_parts)
    from mmtok.io.sample import SampledInputs
    from mmtok.io.sources import Inputs, ReadOptions
    from mmtok.stages.probe import ProbeSummary

    names = sorted(n for n in image_files if n.endswith((".jpg", ".png", ".webp", ".gif")))
    rows = [{"id": f"r{i:03d}", "image": str(image_files[names[i % len(names)]]),
             "caption": "#kill" if i == 37 else f"row {i}"} for i in range(160)]  # fmt: skip
    summaries = []
    for workers, data in ((1, rows), (2, rows), (2, rows[:37] + rows[38:])):
        summary = ProbeSummary()
        for sample in summary.samples.values():
            sample.capacity = 40
        out = OutputOptions(str(tmp_path / f"w{len(summaries)}")) if output is True else None
        inputs = Inputs([str(write_jsonl(tmp_path / "in.jsonl", data))], ReadOptions(batch_rows=4))
        if output == "sampled":
            inputs = SampledInputs(inputs, len(data))
        manifest = run_pipeline(
            inputs,
            [PoisonProbe()],
            out,
            workers=workers,
            observers=[Observer(ProbeSummary.columns, summary=summary)],
        )
        crashes = manifest["counts"]["rejected_by_reason"].get("decoder_crash", 0)
        assert crashes == (len(data) == len(rows))
        summaries.append(summary.to_dict())
    # the last: the input without row 37 (other slices and batches; the same kept rows)
    assert summaries[0]["percentiles_exact"] is False
    assert summaries[0] == summaries[1] == summaries[2]
    sent = [m for m in worker_messages if isinstance(m, tuple) and m[0] == "batch" and m[-1]]
    assert bool(sent) == (part_rows is not None and output != "sampled")
