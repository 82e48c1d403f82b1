"""Stages and the executors that run them.

The names are loaded on first use (PEP 562): the `mmtok` executable imports
`mmtok.engine.process` to start the worker server before anything loads pyarrow."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmtok.engine.stage import RowStage, Stage, StageResult

__all__ = ["RowStage", "Stage", "StageResult"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from mmtok.engine import stage

        return getattr(stage, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
