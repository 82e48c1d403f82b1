"""Typed options of the dataset commands: one dataclass per command, whose fields are the
command's flags (the field name is the flag without `--`, dashes as underscores) and the keys
of its recipe step. The CLI, the Python API and recipes all build these, and `check` gives
every caller the same one-line errors for a bad value."""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from mmtok.engine.local import DEFAULT_ROW_TIMEOUT
from mmtok.errors import MmtokError

ENGINES = ("local", "ray")


class OptionError(MmtokError):
    """An option that a command does not take, or a value it cannot take."""


def known_options(cls: type, given: dict[str, Any], command: str) -> None:
    """Refuse a keyword that is no option of `command`, naming the ones it takes."""
    names = [f.name for f in dataclasses.fields(cls)]
    for key in given:
        if key not in names:
            close = [n for n in names if key.replace("-", "_") == n]
            hint = f"did you mean {close[0]}?" if close else "options: " + ", ".join(names)
            raise OptionError(f"{command} has no option {key!r}", hint=hint)


def option(default: Any = dataclasses.MISSING, **rules: Any) -> Any:
    """A dataclass field with value rules for `check`: ge, le, gt (numbers)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=rules)
    return field(default=default, metadata=rules)


@dataclass(kw_only=True)
class DatasetOptions:
    """What every dataset command shares: where rows come from, where they go, how to run."""

    inputs: list[str]
    output: str | None = None
    image_col: str = "image"
    text_col: str = "caption"
    id_col: str | None = None
    overwrite: bool = False
    resume: bool = False
    shard_rows: int = option(50_000, ge=1)
    shard_bytes: str = "512MB"
    image_bytes: bool = False
    rejects: str | None = None
    workers: int | None = option(None, ge=1)
    row_timeout: float = option(DEFAULT_ROW_TIMEOUT, ge=0.1)
    engine: Literal["local", "ray"] = "local"
    ray_address: str | None = None

    @classmethod
    def shared(cls) -> list[str]:
        """The names of the shared fields (a recipe's top-level keys)."""
        return [f.name for f in dataclasses.fields(DatasetOptions)]

    @classmethod
    def own(cls) -> list[str]:
        """The names of this command's own fields (the keys of its recipe step)."""
        shared = set(DatasetOptions.shared())
        return [f.name for f in dataclasses.fields(cls) if f.name not in shared]

    @classmethod
    def from_arguments(cls, arguments: dict[str, Any]) -> Any:
        """The options out of a command's arguments (`locals()`), enums as their values."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: _plain(v) for k, v in arguments.items() if k in names})


def same_fields(cls: Any, opts: Any, /, **given: Any) -> Any:
    """`cls(...)` (a dataclass of settings) with each field taken from the option of the same
    name, unless `given`: one place that says which options make the settings."""
    names = [f.name for f in dataclasses.fields(cls) if f.name not in given]
    return cls(**{n: getattr(opts, n) for n in names if hasattr(opts, n)}, **given)


def _plain(value: Any) -> Any:
    if isinstance(value, str) and type(value) is not str:  # a StrEnum choice
        return str(value.value) if hasattr(value, "value") else str(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@functools.cache
def hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def check(opts: Any) -> None:
    """Each field's type and range, or a one-line MmtokError naming the field."""
    for f in dataclasses.fields(opts):
        value = getattr(opts, f.name)
        problem = _problem(value, hints(type(opts))[f.name], f.metadata)
        if problem:
            raise OptionError(f"{f.name}: {problem}")


def _problem(value: Any, kind: Any, rules: Any) -> str | None:
    if not _fits(value, kind):
        return f"{value!r} is not {describe(kind)}"
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "ge" in rules and value < rules["ge"]:
            return f"must be at least {rules['ge']}, not {value}"
        if "le" in rules and value > rules["le"]:
            return f"must be at most {rules['le']}, not {value}"
        if "gt" in rules and not value > rules["gt"]:
            return f"must be above {rules['gt']}, not {value}"
    return None


def _fits(value: Any, kind: Any) -> bool:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, k) for k in typing.get_args(kind))
    if kind is type(None):
        return value is None
    if origin is Literal:
        return value in typing.get_args(kind)
    if origin is list:
        (item,) = typing.get_args(kind)
        return isinstance(value, list | tuple) and all(_fits(v, item) for v in value)
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is str:
        return isinstance(value, str)
    return isinstance(value, kind)


def describe(kind: Any) -> str:
    """A type in words: `a whole number`, `one of image, caption, pair`."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(k) for k in typing.get_args(kind) if k is not type(None))
    if origin is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(kind)))
    if origin is list:
        return "a list of " + describe(typing.get_args(kind)[0]).removeprefix("a ") + "s"
    names = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}
    return names.get(kind, getattr(kind, "__name__", str(kind)))


def check_engine(opts: DatasetOptions) -> None:
    """--engine ray needs Ray installed; --ray-address goes with it. Said before any work."""
    if opts.ray_address and opts.engine != "ray":
        raise MmtokError("--ray-address goes with --engine ray")
    if opts.engine == "ray":
        import inspect

        from mmtok.engine.pipeline import run_pipeline

        try:
            import ray  # noqa: F401
        except ImportError:
            raise MmtokError(
                "the Ray engine needs ray, which is not installed",
                hint="pip install 'mmtok[ray]'",
            ) from None
        if "engine" not in inspect.signature(run_pipeline).parameters:
            raise MmtokError("this mmtok has no Ray engine yet", hint="leave out --engine")


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    match = _SIZE.match(text)
    if not match:
        raise MmtokError(f"not a size: {text!r}", hint="write e.g. 512MB or 2GB")
    scale = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[match.group(2).upper()]
    size = int(float(match.group(1)) * scale)
    if size < 1:
        raise MmtokError(f"a size must be at least 1 byte, not {text!r}", hint="e.g. 512MB")
    return size


def require_module(module: str, extra: str, flag: str) -> None:
    """Fail before any work when `flag` needs an optional dependency that is not installed."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        raise MmtokError(
            f"{flag} needs {module}, which is not installed",
            hint=f"pip install 'mmtok[{extra}]'",
        ) from None


def writable_file(path: str, flag: str, output: str | None = None) -> None:
    """Fail before any work when the file that `flag` writes at the end cannot be created: its
    folder must exist, or be one the run creates for `output` (-o out/x creates out/)."""
    from mmtok.io.output_guard import real

    folder = os.path.dirname(os.path.abspath(path))
    made = output not in (None, "-") and (
        os.path.commonpath([folder, os.path.abspath(output)]) == folder
    )
    if output not in (None, "-") and real(path).is_relative_to(real(output)):
        # the output folder is published whole, with a manifest of what it holds
        raise MmtokError(
            f"{flag} {path} is inside the output folder {output}",
            hint="write it beside the output folder",
        )
    if os.path.isdir(path):
        raise MmtokError(f"{flag} {path} is a folder", hint="give a file path")
    if not os.path.isdir(folder) and not made:
        raise MmtokError(
            f"{flag} {path}: the folder {folder} does not exist", hint="create it first"
        )
    if os.path.isdir(folder) and not os.access(folder, os.W_OK):
        raise MmtokError(
            f"{flag} {path}: cannot write in {folder}", hint="choose a folder you can write to"
        )
