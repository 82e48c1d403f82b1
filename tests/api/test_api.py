"""The Python API: the same names, options and result documents as the CLI's `--json`;
errors are MmtokError subclasses; `import mmtok` loads nothing heavy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import photo, write_jsonl
from typer.testing import CliRunner

import mmtok
from mmtok.cli.app import app

runner = CliRunner()


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("api")
    rows = []
    for i, (w, h) in enumerate([(320, 240), (40, 30), (640, 480), (200, 900)]):
        photo(w, h, seed=i).save(d / f"img{i}.jpg", quality=90)
        rows.append({"image": str(d / f"img{i}.jpg"), "caption": f"a photo number {i} here"})
    rows.append({"image": str(d / "img0.jpg"), "caption": "the same photo again"})
    rows.append({"image": str(d / "missing.jpg"), "caption": "x"})
    return write_jsonl(d / "pairs.jsonl", rows)


def cli_json(*args: object) -> dict:
    result = runner.invoke(app, [*map(str, args), "--json", "-w", "1"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def same(doc: dict) -> dict:
    """A document as --json prints it, without what differs from run to run (timing) or by
    where it was written (the output paths)."""
    doc = json.loads(json.dumps(doc, default=str))
    for key in ("timing", "output", "clusters_file"):
        doc.pop(key, None)
    return doc


def test_probe_filter_tile_and_budget_documents_equal_the_clis(pairs):
    assert same(mmtok.probe(str(pairs), workers=1)) == same(cli_json("probe", pairs))
    api = mmtok.filter([str(pairs)], min_side=64, lang=["en"], dry_run=True, workers=1)
    assert same(api) == same(
        cli_json("filter", pairs, "--min-side", 64, "--lang", "en", "--dry-run")
    )
    api = mmtok.tile(pairs, "qwen2-vl", workers=1)
    assert same(api) == same(cli_json("tile", pairs, "-p", "qwen2-vl"))
    api = mmtok.estimate_budget(pairs, ["qwen2-vl", "mllama"], context=4096, workers=1)
    cli = cli_json("estimate-budget", pairs, "-p", "qwen2-vl", "-p", "mllama", "--context", 4096)
    assert same(api) == same(cli)
    assert api["presets"]["qwen2-vl"]["images"] == 5  # the missing file is rejected


def test_dedup_document_and_output_equal_the_clis(pairs, tmp_path):
    api = mmtok.dedup(pairs, str(tmp_path / "api"), keep="first", workers=1)
    cli = cli_json("dedup", pairs, "-o", tmp_path / "cli", "--keep", "first")
    assert same(api) == same(cli)
    assert api["duplicates_removed"] >= 1 and api["output"] == str(tmp_path / "api")
    for name in ("rejects.parquet", "clusters.parquet"):
        a = pq.read_table(tmp_path / "api" / "__mmtok__" / name)
        assert a.equals(pq.read_table(tmp_path / "cli" / "__mmtok__" / name))


def test_embed_document_equals_the_clis(pairs, tmp_path):
    from mmtok.models.tiny import write_local_dir

    model = "local-dir:" + str(write_local_dir(tmp_path / "tiny-clip", seed=1))
    api = mmtok.embed(pairs, model, text=True, workers=1)
    cli = cli_json("embed", pairs, "-m", model, "--text")
    assert same(api) == same(cli)
    assert api["clip_score"]["scored"] == 5


def test_layout_equals_the_clis_line():
    cli = runner.invoke(app, ["layout", "qwen2-vl", "1920x1080", "10x10"])
    lines = [json.loads(line) for line in cli.stdout.splitlines()]
    assert mmtok.layout("qwen2-vl", 1920, 1080) == lines[0]
    assert mmtok.layout("qwen2-vl", 10, 10) == lines[1]  # refused: {width, height, error}
    assert mmtok.layout("qwen2-vl", 1920, 1080)["image_tokens"] == 2691


def test_run_recipe_from_a_dict(pairs, tmp_path):
    doc = mmtok.run_recipe(
        {"steps": [{"command": "filter", "min_side": 64}, {"command": "tile", "preset": "mllama"}]},
        inputs=str(pairs),
        output=str(tmp_path / "out"),
        workers=1,
    )
    assert [s["command"] for s in doc["steps"]] == ["filter", "tile"]
    assert doc["counts"]["rejected_by_reason"] == {"missing_file": 1, "too_small": 1}


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda p, o: mmtok.filter(p, o), "no rule given"),
        (lambda p, o: mmtok.filter(p, o, min_sid=64), "min_sid"),
        (lambda p, o: mmtok.dedup(p, o, max_distance=20), "max_distance"),
        (lambda p, o: mmtok.dedup(p, o, by="colour"), "by"),
        (lambda p, o: mmtok.tile(p, "no-such-model", o), "no-such-model"),
        (lambda p, o: mmtok.probe(p, o, engine="spark"), "engine"),
        (lambda p, o: mmtok.probe(p, o, ray_address="x:1"), "--engine ray"),
    ],
)
def test_errors_are_mmtok_errors_raised_before_any_work(pairs, tmp_path, call, words):
    with pytest.raises(mmtok.MmtokError, match=words):
        call(str(pairs), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_unknown_option_is_an_option_error():
    with pytest.raises(mmtok.OptionError, match="min-side") as error:
        mmtok.filter("x.jsonl", "out", **{"min-side": 64})
    assert error.value.hint == "did you mean min_side?"
    assert issubclass(mmtok.OptionError, mmtok.MmtokError)


def test_an_input_without_rows_is_a_warning(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.warns(mmtok.MmtokWarning):
        mmtok.probe(str(empty), workers=1)


def test_import_mmtok_is_cheap_and_the_api_never_loads_torch_or_typer(pairs):
    code = (
        "import sys, mmtok\n"
        "heavy = ('typer', 'rich', 'pyarrow', 'numpy', 'torch', 'mmtok.cli', 'mmtok.commands')\n"
        "print(sorted({m.split('.')[0] if not m.startswith('mmtok') else m for m in sys.modules"
        " if m.startswith(heavy)}))\n"
        "mmtok.layout('qwen2-vl', 1920, 1080)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules if m.startswith(heavy)}))\n"
        f"mmtok.probe({str(pairs)!r}, workers=1)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules"
        " if m.startswith(('typer', 'torch', 'rich', 'open_clip'))}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    at_import, after_layout, after_run = result.stdout.splitlines()
    assert at_import == "[]", at_import
    assert after_layout == "[]", after_layout  # pure arithmetic: no pyarrow, no numpy
    assert after_run == "[]", after_run


def test_dedup_is_a_plain_function_and_the_clustering_its_own_module():
    import types

    import mmtok.duplicates

    assert isinstance(mmtok.dedup, types.FunctionType) and mmtok.dedup is mmtok.api.dedup
    assert mmtok.duplicates.find_clusters and not callable(mmtok.duplicates)
    code = "import mmtok.duplicates, mmtok; print(type(mmtok.dedup).__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "function"  # whatever was imported first


def test_tokenize_images_and_detokenize_documents_equal_the_clis(pairs, tmp_path):
    from mmtok.models.vq.tiny import tiny_checkpoint, tiny_config

    config = tmp_path / "vq.json"
    config.write_text(json.dumps(tiny_config().to_dict()))
    checkpoint = tmp_path / "vq.pt"
    tiny_checkpoint(checkpoint, 1)
    vq = {"config": str(config), "device": "cpu", "workers": 1}
    api = mmtok.tokenize_images(pairs, checkpoint, tmp_path / "a", emit="bin", **vq)
    flags = ["--config", config, "--checkpoint", checkpoint, "--device", "cpu"]
    cli = cli_json("tokenize-images", pairs, "-o", tmp_path / "c", *flags, "--emit", "bin")
    stream = [d.pop("stream") for d in (api, cli)]
    assert same(api) == same(cli) and api["counts"]["out"] == 5
    assert stream[0]["path"] == str(tmp_path / "a" / "__mmtok__" / "vq_stream")
    assert stream[0] | {"path": None} == stream[1] | {"path": None}
    api = mmtok.detokenize(tmp_path / "a", checkpoint, **vq)
    assert same(api) == same(cli_json("detokenize", tmp_path / "a", *flags))
    assert api["psnr"]["rows"] == 5


def test_sample_frames_document_equals_the_clis(tmp_path_factory, tmp_path):
    from tests.video.fixtures import session_corpus

    video = session_corpus(tmp_path_factory)["h264"].path
    api = mmtok.sample_frames(video, timestamps=[0.5, 1.0], workers=1)
    cli = cli_json("sample-frames", video, "--timestamps", "0.5,1")
    assert same(api) == same(cli) and api["counts"]["frames_out"] == 2
    with pytest.raises(mmtok.MmtokError, match="video preset"):
        mmtok.sample_frames(video, preset="no-such-preset")
