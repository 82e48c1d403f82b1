"""sample-frames' temporary folder (the markers of decord attempts, mmtok.stages.frames): made
when its plan runs, not when it is built, and removed however the run ends."""

from __future__ import annotations

import os
import stat
import tempfile

import pytest

from mmtok import recipes
from mmtok.commands import build_plan, options_class
from mmtok.commands.plan import Executor, GlobalStep, Pass
from mmtok.engine.pipeline import Observer
from mmtok.errors import MmtokError
from tests.video.fixtures import session_corpus

PREFIX = "mmtok-decord-attempts-"


@pytest.fixture
def temp(tmp_path, monkeypatch):
    """tempfile's folder for this test alone: what sample-frames leaves there is seen."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture
def video(tmp_path_factory):
    return str(session_corpus(tmp_path_factory)["h264"].path)


def options(video, output, **changes):
    values = {"inputs": [video], "output": str(output), "num_frames": 2, "workers": 1}
    return options_class("sample-frames")(**(values | changes))


def attempts_dir(plan) -> str:
    (stage,) = next(s for s in plan.steps if isinstance(s, Pass)).stages
    return stage.attempts_dir


def seen_while_running(plan, temp, seen: list) -> None:
    """A first step that records what the run's temporary folder is like by then."""

    def look() -> None:
        path = attempts_dir(plan)
        seen.append((sorted(os.listdir(temp)), os.path.isdir(path), os.stat(path).st_mode))

    plan.steps.insert(0, GlobalStep("looking", look))


def test_a_plan_built_but_never_run_leaves_no_folder(temp, video, tmp_path):
    plan = build_plan(options(video, tmp_path / "out"))
    assert attempts_dir(plan).startswith(str(temp / PREFIX))
    assert os.listdir(temp) == []
    recipe = recipes.load(
        {"inputs": [video], "output": str(tmp_path / "r"), "steps": [{"command": "sample-frames"}]}
    )
    recipes.plan(recipe)
    assert os.listdir(temp) == []


def test_the_folder_is_there_while_the_plan_runs_and_gone_after(temp, video, tmp_path):
    plan = build_plan(options(video, tmp_path / "out"))
    seen: list = []
    seen_while_running(plan, temp, seen)
    doc = Executor(workers=1).run(plan)
    assert doc["counts"]["frames_out"] == 2
    ((names, is_dir, mode),) = seen
    assert names == [os.path.basename(attempts_dir(plan))] and is_dir
    assert stat.S_IMODE(mode) == 0o700  # as tempfile.mkdtemp makes it: the user's alone
    assert os.listdir(temp) == []


def test_a_recipe_makes_and_removes_it_too(temp, video, tmp_path):
    recipe = recipes.load(
        {
            "inputs": [video],
            "output": str(tmp_path / "r"),
            "steps": [{"command": "sample-frames", "num_frames": 2}],
        }
    )
    doc, problems = recipes.run(recipe)
    assert doc["steps"][0]["counts"]["frames_out"] == 2 and not problems
    assert os.listdir(temp) == []


def failing(plan, how: str) -> None:
    """The plan made to fail during its run, in one of three ways."""
    if how == "code error in the pass":  # an observer of the data pass raises (a bug)

        def broken(batch):
            raise RuntimeError("a bug in an observer")

        plan.steps[0].observers.append(Observer(["id"], broken))
        return

    def interrupted() -> None:  # Ctrl-C with a marker left by a decoder that hung
        open(os.path.join(attempts_dir(plan), "marker"), "w").close()
        raise KeyboardInterrupt

    plan.steps.insert(0 if how == "interrupt before the pass" else 1, GlobalStep("x", interrupted))


@pytest.mark.parametrize(
    "how", ["code error in the pass", "interrupt before the pass", "interrupt after the pass"]
)
def test_the_folder_is_removed_when_the_run_fails(temp, video, tmp_path, how):
    plan = build_plan(options(video, tmp_path / "out"))
    failing(plan, how)
    with pytest.raises((RuntimeError, KeyboardInterrupt)):
        Executor(workers=1).run(plan)
    assert os.listdir(temp) == []


def test_the_folder_is_removed_when_the_output_is_refused(temp, video, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("not mmtok's")
    plan = build_plan(options(video, out))
    with pytest.raises(MmtokError):  # refused when the run starts: a folder with other files
        Executor(workers=1).run(plan)
    assert os.listdir(temp) == [] and (out / "mine.txt").exists()


def test_a_folder_already_there_is_never_adopted(temp, video, tmp_path):
    plan = build_plan(options(video, tmp_path / "out"))
    os.mkdir(attempts_dir(plan))
    (temp / os.path.basename(attempts_dir(plan)) / "theirs").write_text("")
    with pytest.raises(FileExistsError):
        Executor(workers=1).run(plan)
    assert os.listdir(attempts_dir(plan)) == ["theirs"]  # not removed: mmtok did not make it
