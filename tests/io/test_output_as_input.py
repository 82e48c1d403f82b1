"""An mmtok output folder is an input for every command, in the old layout (manifest and rejects
at the top) and the new one (`__mmtok__/`, `mmtok.io.layout`). Columns a stage adds replace
the ones of the same name that an earlier run wrote (estimate-budget on its own output used to
fail with `Field "rgb_bytes" exists 2 times`)."""

import json
import shutil

import pyarrow.parquet as pq
import pytest
from conftest import write_jsonl
from typer.testing import CliRunner

from mmtok.cli.app import app
from mmtok.io.layout import MANIFEST_FILE, REJECTS_FILE, SIDE_DIR
from mmtok.io.sources import Inputs, output_folder_parts

runner = CliRunner()
COMMANDS = {
    "probe": ["probe"],
    "filter": ["filter", "--min-side", "2"],
    "tile": ["tile", "--preset", "qwen2-vl"],
    "estimate-budget": ["estimate-budget", "--preset", "qwen2-vl"],
    "dedup": ["dedup"],
}


def run(command: str, source, out) -> dict:
    args = [*COMMANDS[command], str(source), "-o", str(out), "-w", "1", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, f"{command} on {source}: {result.output}"
    return json.loads(result.stdout)


def kept_rows(folder):
    return sum(pq.ParquetFile(p).metadata.num_rows for p in output_folder_parts(folder))


@pytest.fixture(scope="module")
def outputs(tmp_path_factory, image_files):
    """Each command's output on the same small input (two rows are rejects)."""
    root = tmp_path_factory.mktemp("outputs")
    names = ["rgb_640x480.png", "baseline_640x480.jpg", "photo_100x50.webp", "empty.jpg"]
    rows = [{"image": str(image_files[n]), "caption": f"caption {n}"} for n in names]
    rows.append({"image": str(image_files["baseline_640x480.jpg"]), "caption": "a copy"})
    source = write_jsonl(root / "in.jsonl", rows)
    made = {}
    for command in COMMANDS:
        made[command] = root / f"by-{command}"
        run(command, source, made[command])
    return made


@pytest.mark.parametrize("producer", list(COMMANDS))
def test_every_command_reads_every_commands_output(outputs, producer, tmp_path):
    folder = outputs[producer]
    rows_in = kept_rows(folder)
    assert rows_in > 0
    for consumer in COMMANDS:
        out = tmp_path / f"{consumer}-on-{producer}"
        counts = run(consumer, folder, out)["counts"]
        assert counts["in"] == rows_in == counts["out"] + counts["rejected"], consumer
        schema = pq.read_schema(output_folder_parts(out)[0])
        assert len(schema.names) == len(set(schema.names)), (consumer, schema.names)
        if consumer == producer == "estimate-budget":
            assert schema.names.count("rgb_bytes") == 1


def relayout(folder, dest, new: bool):
    """A copy of an output folder in the new layout (side outputs under `__mmtok__/`) or the
    old one (at the top), whichever the sink of this branch writes."""
    shutil.copytree(folder, dest)
    side = dest / SIDE_DIR
    manifest_path = side / MANIFEST_FILE if side.exists() else dest / MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text())
    manifest_path.unlink()
    side.mkdir(exist_ok=True)
    for entry in manifest["files"]:
        if entry["kind"] != "rows":
            name = entry["name"].removeprefix(f"{SIDE_DIR}/")
            old, moved = (dest / entry["name"]), (side / name if new else dest / name)
            old.rename(moved)
            entry["name"] = str(moved.relative_to(dest))
    (side / MANIFEST_FILE if new else dest / MANIFEST_FILE).write_text(json.dumps(manifest))
    if not new:
        side.rmdir()
    return dest


def test_new_layout_is_read_as_its_kept_rows_only(outputs, tmp_path):
    folder = relayout(outputs["probe"], tmp_path / "new", new=True)
    assert (folder / SIDE_DIR / REJECTS_FILE).exists() and not (folder / REJECTS_FILE).exists()
    inputs = Inputs([str(folder)])
    assert [s.kind for s in inputs.sources] == ["parquet"]  # the shards, not the rejects
    assert inputs.count_rows() == kept_rows(outputs["probe"])
    counts = run("estimate-budget", folder, tmp_path / "budget")["counts"]
    assert counts["in"] == kept_rows(outputs["probe"])


def test_old_layout_is_still_read(outputs, tmp_path):
    folder = relayout(outputs["probe"], tmp_path / "old", new=False)
    assert (folder / MANIFEST_FILE).exists() and (folder / REJECTS_FILE).exists()
    inputs = Inputs([str(folder)])
    assert [s.kind for s in inputs.sources] == ["parquet"]
    rows = [r for b in inputs.batches() for r in b.rows.to_pylist()]
    assert len(rows) == kept_rows(outputs["probe"])
    assert all(r["source"].endswith("in.jsonl") for r in rows)  # lineage from the first run


def test_budget_on_its_own_output(outputs, tmp_path):
    """The reported failure, on its own (not marked slow)."""
    doc = run("estimate-budget", outputs["estimate-budget"], tmp_path / "again")
    assert doc["counts"]["in"] == kept_rows(outputs["estimate-budget"])
