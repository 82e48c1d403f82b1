"""Without Ray installed: nothing imports it, and asking for it is a one-line error naming the
install command (these tests run whether Ray is installed or not)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mmtok.engine.pipeline import OutputOptions, run_pipeline
from mmtok.errors import MmtokError
from mmtok.io.sources import Inputs


def test_the_local_engine_never_imports_ray(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"image": None, "caption": "x"}) + "\n")
    code = (
        "import sys; from mmtok.engine.pipeline import run_pipeline; "
        "from mmtok.io.sources import Inputs; import mmtok.cli.app; "
        f"run_pipeline(Inputs([{str(source)!r}]), [], None, workers=1); "
        "print('ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_engine_ray_without_ray_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"image": None, "caption": "x"}) + "\n")
    with pytest.raises(MmtokError) as error:
        run_pipeline(Inputs([str(source)]), [], OutputOptions(str(tmp_path / "out")), engine="ray")
    assert "pip install 'mmtok[ray]'" in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()
