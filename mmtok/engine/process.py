"""What mmtok does to the processes it owns: its workers and the `mmtok` executable."""

from __future__ import annotations

import contextlib
import sys

import pyarrow as pa


def block_pandas() -> None:
    """Keep pyarrow from importing pandas in mmtok's own processes (its workers and the `mmtok`
    executable): pyarrow's conversions from Python values (`pa.array([1])`) import pandas if it
    is installed, to recognise its objects, which costs 0.3-1.4 s per process and is retried
    on every conversion while it fails. mmtok never hands pyarrow pandas objects and never uses
    pandas; with this, `import pandas` fails and `importlib.util.find_spec("pandas")` is None
    (libraries such as transformers then take pandas as not installed)."""
    if "pandas" in sys.modules:
        return
    sys.modules["pandas"] = None  # type: ignore[assignment]
    # pyarrow's Python-side shim looks once, now: Cython's import hands it the None
    with contextlib.suppress(AttributeError, ImportError):
        pa.array([0])


def is_cli_process() -> bool:
    """Whether this process is the `mmtok` executable (not a library user's program)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None:
        return spec.name == "mmtok.__main__"
    entry = getattr(main, "main", None)
    return getattr(entry, "__module__", "").startswith("mmtok.cli")
