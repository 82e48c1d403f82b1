"""Start-up: `mmtok --help` lists the commands without importing them (they import pyarrow,
numpy and Pillow), and says exactly what the full app says."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from mmtok.cli.app import app

RUN_ENTRY = (
    "import sys; from mmtok.cli.entry import main\n"
    "sys.argv = ['mmtok', *sys.argv[1:]]\n"
    "try: main()\n"
    "except SystemExit: pass\n"
    "loaded = [m for m in ('pyarrow', 'numpy', 'PIL', 'mmtok.cli.probe') if m in sys.modules]\n"
    "print(loaded, file=sys.stderr)"
)


def test_root_help_imports_no_command_and_matches_the_full_app():
    env = {"COLUMNS": "100", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", RUN_ENTRY, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "PYTHONPATH": ":".join(sys.path)},
    )
    assert result.stderr.strip().splitlines()[-1] == "[]", result.stderr
    full = CliRunner().invoke(app, ["--help"], env=env, prog_name="mmtok")
    assert full.exit_code == 0
    assert result.stdout.replace("Usage: -c", "Usage: mmtok") == full.output
    for name in ("probe", "estimate-budget", "dedup", "embed"):
        assert f"\n│ {name} " in result.stdout


def test_layout_imports_no_pixel_or_table_library():
    """`mmtok layout` is arithmetic: it loads neither pyarrow, numpy nor Pillow (Pillow alone
    was 6 ms of its start-up, through the presets' filter names)."""
    result = subprocess.run(
        [sys.executable, "-c", RUN_ENTRY, "layout", "qwen2-vl", "640x480", "1x1"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)},
    )
    assert '"image_tokens"' in result.stdout
    assert result.stderr.strip().splitlines()[-1] == "[]", result.stderr


LOADED = (
    "import sys; from mmtok.cli.entry import main\n"
    "sys.argv = ['mmtok', *sys.argv[1:]]\n"
    "try: main()\n"
    "except SystemExit as e: print('exit', e.code, file=sys.stderr)\n"
    "print([m for m in ('rich', 'pydantic') if m in sys.modules], file=sys.stderr)"
)


def test_runs_that_print_json_load_neither_rich_nor_pydantic(tmp_path):
    """rich is for tables, progress bars and errors (~25 ms of start-up); Typer 0.29's
    pydantic is replaced by direct conversions (`mmtok.cli.coercion`, ~70 ms)."""
    from PIL import Image

    Image.new("RGB", (64, 48), (200, 10, 10)).save(tmp_path / "a.jpg")
    rows = tmp_path / "rows.jsonl"
    rows.write_text(f'{{"image": "{tmp_path / "a.jpg"}", "caption": "red"}}\n' * 3)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)}
    runs = {
        "estimate-budget": ["estimate-budget", str(rows), "-p", "qwen2-vl", "-w", "2", "--json"],
        "layout": ["layout", "qwen2-vl", "640x480"],
    }
    for name, args in runs.items():
        result = subprocess.run(
            [sys.executable, "-c", LOADED, *args], capture_output=True, text=True, timeout=120,
            env=env, cwd=tmp_path,
        )  # fmt: skip
        *_, code, loaded = result.stderr.strip().splitlines()
        assert code == "exit 0" and loaded == "[]", (name, result.stderr)
        assert ('"rows": 3' if name == "estimate-budget" else '"image_tokens"') in result.stdout


def test_the_executable_still_runs_its_exit_handlers(tmp_path):
    """After success the executable skips Python's module teardown (`mmtok.cli.entry`), not
    its exit handlers: multiprocessing's removes the folder of the worker server's socket."""
    from PIL import Image

    Image.new("RGB", (64, 48), (10, 200, 10)).save(tmp_path / "a.jpg")
    rows = tmp_path / "rows.jsonl"
    rows.write_text(f'{{"image": "{tmp_path / "a.jpg"}", "caption": "green"}}\n' * 3)
    temp = tmp_path / "temp"
    temp.mkdir()
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path), "TMPDIR": str(temp)}
    result = subprocess.run(
        [sys.executable, "-m", "mmtok", "probe", str(rows), "--json"],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert '"in": 3' in result.stdout
    assert list(temp.iterdir()) == []
