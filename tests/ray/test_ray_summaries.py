"""Summaries computed in Ray tasks (`Observer.summary`) merge to the local run's document, with
samples small enough that bottom-k drops values (the parts are merged in input order here)."""

from __future__ import annotations

import json

import pytest
from conftest import encode, photo, write_jsonl
from ray_cluster import ray_address, ray_driver  # noqa: F401 (fixtures)
from typer.testing import CliRunner

pytest.importorskip("ray")

from mmtok.cli.app import app  # noqa: E402
from mmtok.stats import PercentileSample, RowSample  # noqa: E402

runner = CliRunner()


@pytest.fixture
def rows(tmp_path):
    """900 rows over 12 images of different sizes and formats, every 50th a missing file."""
    paths = []
    for i in range(12):
        path = tmp_path / f"{i:02d}.img"
        path.write_bytes(encode(photo(30 + 41 * i, 700 - 37 * i, seed=i), ("PNG", "JPEG")[i % 2]))
        paths.append(str(path))
    data = [
        {"image": "missing.png" if i % 50 == 7 else paths[(i * 5) % 12], "caption": "w " * (i % 90)}
        for i in range(900)
    ]
    return write_jsonl(tmp_path / "rows.jsonl", data)


@pytest.mark.parametrize(
    "args",
    [
        ["probe"],
        ["estimate-budget", "-p", "qwen2-vl", "-p", "internvl", "--context", "900", "--suggest"],
    ],
    ids=["probe", "estimate-budget"],
)
def test_ray_summaries_equal_the_local_ones(args, rows, tmp_path, ray_driver, monkeypatch):
    monkeypatch.setattr(PercentileSample.__init__, "__defaults__", (200, 0))
    monkeypatch.setattr(RowSample.__init__, "__defaults__", (100, 0))
    docs = {}
    for engine in ("local", "ray"):
        flags = ["--engine", "ray", "--ray-address", ray_driver] if engine == "ray" else []
        out = tmp_path / engine
        result = runner.invoke(
            app, [args[0], str(rows), *args[1:], "-o", str(out), "--json", "-w", "2", *flags]
        )
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        for key in ("timing", "output"):
            doc.pop(key)
        docs[engine] = doc
    exact = docs["local"].get("percentiles_exact")
    if exact is None:
        exact = docs["local"]["presets"]["qwen2-vl"]["percentiles_exact"]
    assert exact is False  # the samples dropped values
    assert docs["ray"] == docs["local"]
