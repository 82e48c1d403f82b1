"""`make demo` installs only what the demo needs; `make test` everything; their stamps never
confuse each other (checked with `make -n`, which prints what would run)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "torchvision", "open_clip", "transformers", "decord", "ray")


def would_run(venv: Path, target: str) -> str:
    done = subprocess.run(
        ["make", "-n", "-C", str(ROOT), target, f"VENV={venv}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


@pytest.fixture
def venv(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    (tmp_path / "venv" / "bin" / "python").touch()  # an existing venv, as make sees it
    return tmp_path / "venv"


def mark_done(venv: Path, *stamps: str) -> None:
    later = time.time() + 5  # newer than pyproject.toml
    for stamp in stamps:
        path = venv / stamp
        path.touch()
        os.utime(path, (later, later))


def test_demo_installs_the_plot_extra_only(venv):
    plan = would_run(venv, "demo")
    assert "-e '.[plot]'" in plan and ".[dev]" not in plan


def test_demo_finds_mmtok_in_a_venv_given_by_absolute_path(venv):
    mark_done(venv, ".mmtok-demo")
    assert f'PATH="{venv}/bin:$PATH" bash examples/budget.sh' in would_run(venv, "demo")


def test_demo_then_test_installs_everything(venv):
    mark_done(venv, ".mmtok-demo")
    assert "-e '.[dev]'" in would_run(venv, "test")


def test_test_then_demo_installs_nothing(venv):
    mark_done(venv, ".mmtok-demo", ".mmtok-dev")
    assert "pip install" not in would_run(venv, "demo")
    assert "pip install" not in would_run(venv, "test")


def test_the_dev_install_marks_the_demo_done_too():
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("$(DEV_STAMP): pyproject.toml")[1].split("\n\n")[0]
    assert "touch $(DEV_STAMP) $(DEMO_STAMP)" in recipe


def test_the_demo_install_pulls_no_heavy_library():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    demo = project["dependencies"] + project["optional-dependencies"]["plot"]
    assert not [d for d in demo if d.split(">")[0].split("[")[0].strip() in HEAVY], demo


def test_ci_runs_make_test():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
