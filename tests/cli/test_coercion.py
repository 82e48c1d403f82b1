"""Flag values converted without pydantic (`mmtok.cli.coercion`) are exactly what Typer's own
pydantic adapters give: the same value and type, or the same error message, on every flag of
every command, for well-formed, malformed, boundary and out-of-range values."""

from __future__ import annotations

import enum
import math
import subprocess
import sys
from typing import Any, get_origin

import pytest
import typer.main

from mmtok.cli import coercion
from mmtok.cli.app import app

pytestmark = pytest.mark.skipif(
    coercion.RuntimeParam is None, reason="Typer < 0.29 converts with Click: nothing replaced"
)

INTS = ["0", "1", "-5", "+5", "-0", "007", "16", "17", "1_000", " 5", "5 ", "5.0", "1e3", "0x10",
        "abc", "", "99999999999999999999", "9" * 30, 0, 1, 5, -5, 16, 17, True, 2.5]  # fmt: skip
FLOATS = ["0", "0.1", "0.05", "-0.5", ".5", "5.", "1e12", "1E5", "+1e-3", "007.5", "1_0.5",
          "inf", "nan", "-inf", " 1", "abc", "", "1" * 25, 0.99, 0.1, 0.0, 300.0, 1, -1.0,
          math.nan]  # fmt: skip
TEXTS = ["", "x", "a b", "-", "ümlaut", 5, None]
LISTS = [("a", "b"), (), ["x"], ("a", 1), "a"]
FLAGS = [True, False, "true", "1", ""]


def _params():
    group = typer.main.get_command(app)
    commands = [("mmtok", group), *group.commands.items()]
    for name, command in commands:
        for param in command.params:
            descriptor = getattr(param, "type_descriptor", None)
            if descriptor is not None and coercion._plain(descriptor):
                yield pytest.param(command, param, id=f"{name}:{param.name}")


def _values(annotation: Any) -> list[Any]:
    if annotation is int:
        return INTS
    if annotation is float:
        return FLOATS
    if annotation is str:
        return TEXTS
    if annotation is bool:
        return FLAGS
    if get_origin(annotation) is list:
        return LISTS
    assert issubclass(annotation, enum.Enum), annotation
    members = list(annotation)
    return [*members, *(m.value for m in members), *(m.name for m in members),
            *(str(m.value).upper() for m in members), "nope", "", 3]  # fmt: skip


def _outcome(runtime: Any, value: Any, param: Any, ctx: Any) -> tuple:
    try:
        result = runtime._coerce_value(value, param=param, ctx=ctx)
    except Exception as e:  # noqa: BLE001 - the error is the outcome compared
        return ("error", type(e).__name__, getattr(e, "message", str(e)))
    if isinstance(result, float) and math.isnan(result):
        return ("value", float, "nan")
    return ("value", type(result), result)


@pytest.mark.parametrize(("command", "param"), list(_params()))
def test_every_flag_converts_as_typers_adapter_does(command, param):
    descriptor = param.type_descriptor
    from typer._click import Context  # Typer 0.29 (this test is skipped before it)

    ctx = Context(command)
    typers = coercion.build_runtime_param(descriptor)
    ours = coercion._Direct(descriptor.parameter_info, descriptor.annotation, descriptor)
    for value in _values(descriptor.annotation):
        expected = _outcome(typers, value, param, ctx)
        assert _outcome(ours, value, param, ctx) == expected, (param.name, value)


def test_no_flag_goes_to_pydantic_when_parsed():
    """Listing a command's parameters gives each the direct conversion, before parsing."""
    group = typer.main.get_command(app)
    for command in group.commands.values():
        for param in command.get_params(group.make_context("mmtok", [], resilient_parsing=True)):
            if coercion._plain(param.type_descriptor):
                assert isinstance(param._runtime_param, coercion._Direct), param.name


RUN_ENTRY = (
    "import sys; from mmtok.cli.entry import main\n"
    "sys.argv = ['mmtok', *sys.argv[1:]]\n"
    "try: main()\n"
    "except SystemExit: pass\n"
    "print('pydantic' in sys.modules, file=sys.stderr)"
)


# every kind of flag parsed (the run then stops: no such input)
FLAGS_OF_EVERY_KIND = ["estimate-budget", "missing.jsonl", "-p", "qwen2-vl", "-p", "kimi-vl",
                       "-w", "2", "--engine", "local", "--fit-share", "0.5", "--row-timeout",
                       "5", "--json"]  # fmt: skip


@pytest.mark.parametrize("args", [["layout", "qwen2-vl", "640x480"], FLAGS_OF_EVERY_KIND])
def test_a_run_never_imports_pydantic(args, tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", RUN_ENTRY, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)},
    )
    assert result.stderr.strip().splitlines()[-1] == "False", result.stderr
