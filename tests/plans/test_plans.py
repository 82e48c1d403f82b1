"""Commands are plans: the CLI modules run no pass and no global step; each command's plan has
the passes and global steps it should; the shared options are declared once and take the
engine; a recipe's dedup drops the same rows in any number of workers."""

from __future__ import annotations

import ast
import inspect
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import photo, write_jsonl
from typer.testing import CliRunner

import mmtok.cli
from mmtok.cli.app import app
from mmtok.commands import COMMANDS, build_plan, options_class
from mmtok.commands.options import DatasetOptions, OptionError, check
from mmtok.engine.pipeline import run_pipeline

runner = CliRunner()
CLI = Path(mmtok.cli.__file__).parent
# what running a pass or a global step looks like in code
RUNS = {
    "run_pipeline",
    "run_local",
    "find_clusters",
    "publish_output",
    "run_pass",
    "Signatures",
    "finished_output",
}


@pytest.mark.parametrize(
    "name",
    [
        "probe",
        "filter",
        "dedup",
        "tile",
        "budget",
        "embed",
        "run",
        "sample_frames",
        "tokenize_images",
        "detokenize",
    ],
)
def test_no_cli_module_runs_a_pass_or_a_global_step(name):
    tree = ast.parse((CLI / f"{name}.py").read_text())
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    used |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    used |= {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert not used & RUNS, used & RUNS


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("plans")
    rows = []
    for i, (w, h) in enumerate([(320, 240), (640, 480), (200, 900), (90, 90)]):
        photo(w, h, seed=10 + i).save(d / f"img{i}.jpg", quality=90)
        rows.append({"image": str(d / f"img{i}.jpg"), "caption": f"photo {i}"})
    rows += [dict(rows[0], caption="again"), dict(rows[2], caption="and again")] * 3
    rows.append({"image": str(d / "gone.jpg"), "caption": "no file"})
    return write_jsonl(d / "pairs.jsonl", rows)


def kinds(plan) -> list[str]:
    return [type(s).__name__ for s in plan.steps]


def test_plans_have_their_passes_and_global_steps(pairs, tmp_path):
    def plan(command, **kw):
        return build_plan(options_class(command)(inputs=[str(pairs)], **kw))

    assert kinds(plan("probe")) == ["Pass", "GlobalStep"]
    assert kinds(plan("filter", min_side=64, dry_run=True)) == ["Pass", "GlobalStep"]
    assert kinds(plan("estimate-budget", preset=["qwen2-vl"])) == ["Pass", "GlobalStep"]
    dedup = plan("dedup", output=str(tmp_path / "u"), against=[str(pairs)])
    assert kinds(dedup) == ["GlobalStep", "Pass", "Pass", "GlobalStep", "Pass", "GlobalStep"]
    names = [s.description for s in dedup.steps]
    assert names[1:5] == ["signatures", f"signatures of {pairs}", "clustering", "writing"]
    assert dedup.steps[4].output is not None and dedup.steps[1].output is not None  # resumable
    assert not (tmp_path / "u").exists()  # building a plan writes nothing


def test_every_dataset_command_declares_the_shared_options_once():
    group = __import__("typer").main.get_command(app)
    shared = {"--image-col", "--workers", "--row-timeout", "--engine", "--ray-address", "--json"}
    for name in COMMANDS:
        flags = {f for p in group.commands[name].params for f in p.opts}
        if name == "sample-frames":  # reads videos: --video-col, and --timeout per video
            assert {"--video-col", "--timeout"} <= flags
            assert not {"--image-col", "--image-bytes"} & flags
            flags |= {"--image-col"}
        assert shared <= flags, name
        fields = {f.replace("_", "-") for f in options_class(name).own()}
        own = {p.name.replace("_", "-") for p in group.commands[name].params}
        assert fields <= own, (name, fields - own)  # every option field is a flag
    modules = [COMMANDS[name][0].rsplit(".", 1)[1] for name in COMMANDS]  # cli/ names alike
    source = "".join((CLI / f"{m}.py").read_text() for m in modules)
    for block in ("ImageColOpt", "RowTimeoutOpt", "WorkersOpt", "QuietOpt", "InputsArg"):
        assert block not in source, block


def test_options_check_names_the_field():
    opts = options_class("dedup")(inputs=["a"], max_distance=17)
    with pytest.raises(OptionError, match="max_distance: must be at most 16, not 17"):
        check(opts)
    with pytest.raises(OptionError, match="workers: 'two' is not a whole number"):
        check(DatasetOptions(inputs=["a"], workers="two"))


@pytest.mark.skipif(
    "engine" in inspect.signature(run_pipeline).parameters, reason="the Ray engine is here"
)
def test_engine_ray_without_the_engine_is_one_line_before_any_work(pairs, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["probe", str(pairs), "-o", str(out), "--engine", "ray"])
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1, result.output
    assert "Ray" in result.stderr and not out.exists()


def test_ray_address_needs_engine_ray(pairs, tmp_path):
    result = runner.invoke(app, ["probe", str(pairs), "--ray-address", "head:6379"])
    assert result.exit_code == 2, result.output
    assert "--ray-address goes with --engine ray" in result.stderr


def rows_and_rejects(folder: Path) -> tuple[pa.Table, set]:
    rows = pa.concat_tables(pq.read_table(p) for p in sorted(folder.glob("part-*.parquet")))
    t = pq.read_table(folder / "__mmtok__" / "rejects.parquet")
    rejects = set(zip(*(t.column(c).to_pylist() for c in ("id", "reason", "message")), strict=True))
    return rows, rejects


def test_a_recipe_dedup_in_two_workers_drops_what_dedup_drops(pairs, tmp_path):
    result = runner.invoke(app, ["dedup", str(pairs), "-o", str(tmp_path / "cmd"), "--json"])
    assert result.exit_code == 0, result.output
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        f'inputs = ["{pairs}"]\noutput = "{tmp_path / "run"}"\nworkers = 2\n'
        '[[steps]]\ncommand = "dedup"\n'
    )
    ran = runner.invoke(app, ["run", str(recipe), "--json"])
    assert ran.exit_code == 0, ran.output
    rows, rejects = rows_and_rejects(tmp_path / "cmd")
    assert rows_and_rejects(tmp_path / "run") == (rows, rejects)
    doc, step = json.loads(result.stdout), json.loads(ran.stdout)["steps"][0]
    assert step["duplicates_removed"] == doc["duplicates_removed"] >= 6
    clusters = pq.read_table(tmp_path / "run" / "__mmtok__" / "clusters.parquet")
    assert clusters.equals(pq.read_table(tmp_path / "cmd" / "__mmtok__" / "clusters.parquet"))


def test_a_recipe_dedup_refuses_repeated_ids(tmp_path, pairs):
    rows = [json.loads(line) | {"id": "same"} for line in pairs.read_text().splitlines()]
    source = write_jsonl(tmp_path / "ids.jsonl", rows)
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'inputs = ["{source}"]\noutput = "{tmp_path / "o"}"\n')
    recipe.write_text(recipe.read_text() + '[[steps]]\ncommand = "dedup"\n')
    result = runner.invoke(app, ["run", str(recipe)])
    assert result.exit_code == 2, result.output
    assert "unique row ids" in result.stderr and not (tmp_path / "o").exists()


def test_settings_are_built_from_the_options_of_the_same_name():
    from mmtok.budget import Options
    from mmtok.commands.options import same_fields
    from mmtok.duplicates import Settings

    opts = options_class("dedup")(inputs=["a"], by="pair", mirror=True, threshold=0.9, keep="first")
    assert opts.settings() == Settings(
        by="pair", mirror=True, keep="first", embedding_threshold=0.9
    )
    budget = options_class("estimate-budget")(inputs=["a"], preset=["x"], context=4096, gpus=8)
    made = same_fields(Options, budget, text_bytes_per_token=2)
    assert (made.context, made.gpus, made.text_bytes_per_token) == (4096, 8, 2)


def test_sample_frames_removes_its_temporary_folder_however_the_plan_ends(
    tmp_path, tmp_path_factory, monkeypatch
):
    import tempfile

    import mmtok
    from tests.video.fixtures import session_corpus

    video = session_corpus(tmp_path_factory)["h264"].path
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    doc = mmtok.sample_frames(video, str(tmp_path / "out"), num_frames=2, workers=1)
    assert doc["counts"]["frames_out"] == 2
    with pytest.raises(mmtok.MmtokError, match="--resume"):  # refused once the part is built
        mmtok.sample_frames(video, num_frames=2, resume=True)
    assert not list(tmp_path.glob("mmtok-decord-attempts-*"))
