"""`--help` of every command reads cleanly at 80 columns (CI logs, narrow terminals): no Python
type names, no option name cut, every option described, literal brackets kept, examples whole.
"""

from __future__ import annotations

import enum
import re
import subprocess
import sys

import pytest
import typer
from rich.text import Text
from typer.core import TyperArgument
from typer.testing import CliRunner

from mmtok.cli.app import app, reflow

runner = CliRunner()
GROUP = typer.main.get_command(app)
COMMANDS = list(GROUP.commands)
TYPE_NAMES = re.compile(r"<(bool|int|float|str|path|list\[[^>]*\]|int range|float range)>")
STYLE_TAGS = re.compile(r"\[/?(bold|dim|italic|red|green|yellow|cyan)?\]")


def help_at(width: int, *args: str) -> str:
    result = runner.invoke(app, [*args, "--help"], env={"COLUMNS": str(width)})
    assert result.exit_code == 0, result.output
    return result.output


def texts(name: str) -> list[str]:
    """The command's help and every parameter's help, as written in the code."""
    command = GROUP.commands[name]
    return [command.help or "", *(p.help or "" for p in command.params)]


@pytest.mark.parametrize("name", ["", *COMMANDS])
def test_help_fits_80_columns_without_type_names(name):
    out = help_at(80, *([name] if name else []))
    assert not TYPE_NAMES.search(out), TYPE_NAMES.search(out)
    assert "…" not in out  # nothing cut
    assert max(len(line) for line in out.splitlines()) <= 80


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_is_described_and_named_in_full(name):
    out = help_at(80, name)
    for param in GROUP.commands[name].params:
        assert (param.help or "").strip(), f"{name} {param.name} has no description"
        for flag in [*param.opts, *param.secondary_opts]:
            if not isinstance(param, TyperArgument):
                assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", out), (name, flag)


@pytest.mark.parametrize("name", COMMANDS)
def test_markup_eats_only_style_tags(name):
    """A literal `[w, h]` must be written `\\[w, h]`, or rich takes it for a tag and drops it."""
    for text in texts(name):
        written = STYLE_TAGS.sub("", text).replace("\\[", "[")
        assert Text.from_markup(text).plain == written, text


def test_layout_help_keeps_its_brackets():
    out = " ".join(help_at(80, "layout").split())
    assert "resized [w, h], canvas [w, h], grid [rows, cols]" in out


@pytest.mark.parametrize("name", COMMANDS)
def test_examples_stay_whole_lines_at_80_columns(name):
    out = help_at(80, name).splitlines()
    examples = [
        line.strip() for line in reflow(GROUP.commands[name].help).splitlines() if line[:1] == " "
    ]
    for example in examples:
        assert any(line.strip() == example for line in out), example


@pytest.mark.parametrize("name", COMMANDS)
def test_choices_are_named_in_the_help(name):
    for param in GROUP.commands[name].params:
        kind = getattr(param.type_descriptor, "annotation", None)
        if isinstance(kind, type) and issubclass(kind, enum.Enum):
            for choice in kind:
                assert f"`{choice.value}`" in (param.help or ""), (name, param.name, choice)


def test_prose_paragraphs_flow_as_one_text():
    out = help_at(80, "probe")
    # the source breaks this sentence after "probe"; the help must not
    assert "plus the probe columns" in " ".join(out.split())
    assert not any(line.strip() == "probe" for line in out.splitlines())


def test_help_and_layout_start_without_heavy_libraries():
    """`mmtok --help` and `mmtok layout` import none of the heavy or optional libraries."""
    heavy = ("torch", "open_clip", "decord", "matplotlib", "transformers", "tokenizers", "ray")
    code = (
        "import sys; from mmtok.cli.entry import main\n"
        f"sys.argv = ['mmtok', *sys.argv[1:]]\n"
        "try: main()\n"
        "except SystemExit: pass\n"
        f"print([m for m in {heavy!r} if m in sys.modules], file=sys.stderr)"
    )
    for args in (["--help"], ["layout", "qwen2-vl", "640x480"]):
        result = subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60
        )
        assert result.stderr.strip().splitlines()[-1] == "[]", (args, result.stderr)
