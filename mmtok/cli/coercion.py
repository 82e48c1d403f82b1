"""Flag values turned into Python values without pydantic, for the plain types mmtok's flags use.

Typer 0.29 coerces every flag's value with a pydantic `TypeAdapter` built per flag when the
command line is parsed: importing pydantic and building ~40 adapters cost ~70 ms of every run's
start-up (a 100-row `estimate-budget` took ~0.5 s in all). Here a well-formed value of a plain
type (text, a decimal number within its --min/--max, a flag, a choice, a list of text) is converted
directly, to the value Typer's adapter gives (tests/cli/test_coercion.py compares the two on
every flag of every command); anything else (a malformed number, one out of range, a flag with
its own parser) goes to Typer's own adapter, so every error message is Typer's, word for word.
Older Typer (<0.29) converts with Click's types and has nothing to replace: `install` does
nothing there.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any, get_args, get_origin

try:  # Typer 0.29's runtime coercion (a private module: absent in older releases)
    from typer._coercion import RuntimeParam, TypeDescriptor, build_runtime_param
    from typer._param_types import coerce_cli_choice
except ImportError:  # pragma: no cover - older Typer: Click converts values, no pydantic
    RuntimeParam = None  # type: ignore[assignment,misc]

_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_MISS = object()  # not a value this module converts: Typer's adapter does


def install(param: Any) -> None:
    """Give a Typer parameter the direct conversion, before Typer builds its adapter (called
    on every parameter as a command's parameters are listed, before any is parsed)."""
    if RuntimeParam is None or getattr(param, "_runtime_param", _MISS) is not None:
        return  # not Typer 0.29, or already set
    descriptor = getattr(param, "type_descriptor", None)
    if isinstance(descriptor, TypeDescriptor) and _plain(descriptor):
        param._runtime_param = _Direct(descriptor.parameter_info, descriptor.annotation, descriptor)


def _plain(descriptor: Any) -> bool:
    info = descriptor.parameter_info
    if descriptor.file_annotation is not None or info.parser is not None or info.clamp:
        return False
    if getattr(info, "click_type", None) is not None:
        return False
    annotation = descriptor.annotation
    if get_origin(annotation) is list:
        return get_args(annotation) == (str,)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return True
    return annotation in (str, int, float, bool)


if RuntimeParam is not None:

    @dataclass(frozen=True)
    class _Direct(RuntimeParam):  # type: ignore[misc,valid-type]
        descriptor: Any = None

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            result = _convert(self.annotation, self.parameter_info, value, ctx)
            if result is _MISS:  # Typer's own adapter: its value, or its error message
                return build_runtime_param(self.descriptor)._coerce_value(value, param, ctx)
            return result


def _convert(annotation: Any, info: Any, value: Any, ctx: Any) -> Any:
    if annotation is str:
        return value if type(value) is str else _MISS
    if annotation is bool:  # flags give bools (--help, unset, gives None: not converted)
        return value if type(value) is bool else _MISS
    if get_origin(annotation) is list:  # list[str]: a repeated flag or a variadic argument
        if isinstance(value, (list, tuple)) and all(type(v) is str for v in value):
            return list(value)
        return _MISS
    if annotation is int or annotation is float:
        return _number(annotation, info, value)
    try:  # an Enum: Typer's own choice matching (no pydantic in it)
        return coerce_cli_choice(
            value, choices=list(annotation), case_sensitive=info.case_sensitive, ctx=ctx
        )
    except ValueError:
        return _MISS


def _number(kind: type, info: Any, value: Any) -> Any:
    if type(value) is str:
        # short decimal text only (Python's int() refuses over 4,300 digits)
        if len(value) > 20 or not (_INT if kind is int else _FLOAT).fullmatch(value):
            return _MISS
        number = kind(value)
    elif type(value) is kind:  # a default
        number = value
    else:
        return _MISS
    if number != number:  # NaN (a default): compared by Typer's adapter
        return _MISS
    if (info.min is not None and number < info.min) or (info.max is not None and number > info.max):
        return _MISS  # out of range: Typer's message
    return number
