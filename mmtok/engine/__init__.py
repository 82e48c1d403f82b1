"""Stages and the executors that run them."""

from mmtok.engine.stage import RowStage, Stage, StageResult

__all__ = ["RowStage", "Stage", "StageResult"]
