"""DedupStage: the writing pass of `mmtok dedup`. Keeps or drops each row by its position in
the stream of the signature pass, from the decisions the clustering made over the signatures.

The decisions (`Decisions`: per input row its id, and the reason and message of a dropped row)
are a few Arrow arrays, made once in the main process and shipped once per worker, with the
stage (pickled to a local worker as it starts; put once in Ray's object store). A row's
position is where its batch starts in the input plan (`for_slice`: the slice's first row,
counted by the signature pass over the same slices, plus the rows read in the slice before
the batch), so batches run in any worker and in any order. On the main path (`-o -`, inputs
that give no slices) a running offset gives it instead.

Each row's id is checked against the signature pass, so inputs that changed between the
passes stop the run instead of dropping the wrong rows.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmtok.duplicates import KINDS, Clusters, Settings, Signatures
from mmtok.engine.stage import Stage, StageResult
from mmtok.errors import MmtokError
from mmtok.io.schema import make_rejects
from mmtok.reasons import Reason


@dataclass
class Decisions:
    """What the writing pass needs of the clustering, for the input rows in stream order."""

    ids: pa.Array  # string
    reason: pa.Array  # string: null for a kept row
    message: pa.Array  # string: null for a kept row
    # int64: the position of the first row of each slice of the input plan (and, last, the
    # number of rows); None when the signature pass did not read its rows by slices
    slice_starts: np.ndarray | None = None


def decide(sig: Signatures, clusters: Clusters, slice_starts: np.ndarray | None) -> Decisions:
    """The decisions for the input rows (they come before the references): a row whose image
    could not be read keeps the signature's reason; a dropped duplicate gets `duplicate` and
    a message naming the kept row, its kind, distances and cluster size."""
    n = int((~sig.reference).sum())
    ids = sig.ids.slice(0, n)
    if n < len(sig.ids):  # a copy: a pickled slice may carry the references' buffers
        ids = ids.take(pa.array(np.arange(n)))
    reason = sig.reason.slice(0, n).cast(pa.string())
    bad = reason.is_valid().to_numpy(zero_copy_only=False)
    dup = clusters.dropped[:n] & ~bad
    rows = np.flatnonzero(dup)
    messages = pa.array([_message(sig, clusters, p) for p in rows.tolist()], pa.string())
    # each dropped duplicate's message in place of the signature's (null: none)
    index = np.arange(n)
    index[rows] = n + np.arange(len(rows))
    message = pa.concat_arrays([sig.message.slice(0, n).cast(pa.string()), messages])
    return Decisions(
        ids=ids,
        reason=pc.if_else(pa.array(dup), Reason.DUPLICATE.value, reason),
        message=message.take(pa.array(index)),
        slice_starts=slice_starts,
    )


def _message(sig: Signatures, c: Clusters, p: int) -> str:
    kept = int(c.kept[p])
    parts = [f"duplicate_of={sig.ids[kept].as_py()}" if kept >= 0 else "kept=none"]
    parts.append(f"kind={KINDS[c.kind[p]]}")
    if c.image_distance[p] >= 0:
        parts.append(f"image_distance={int(c.image_distance[p])}")
    if not np.isnan(c.caption_similarity[p]):
        parts.append(f"caption_jaccard={c.caption_similarity[p]:.3f}")
    if not np.isnan(c.cosine[p]):
        parts.append(f"cosine={c.cosine[p]:.4f}")
    if kept >= 0 and sig.reference[kept]:
        parts.append("in=reference")
    parts.append(f"cluster_size={int(c.size[p])}")
    return " ".join(parts)


class DedupStage(Stage):
    """The first stage of its chain: a batch's rows are the rows read from the input."""

    name: ClassVar[str] = "dedup"

    def __init__(self, decisions: Decisions, settings: Settings):
        self.decisions, self.settings = decisions, settings
        self.offset = 0  # the position of the next batch's first row (main path)

    def config(self) -> dict[str, Any]:
        return {k: getattr(self.settings, k) for k in self.settings.__dataclass_fields__}

    def resume_after(self, rows: int) -> None:
        self.offset = rows

    def for_slice(self, index: int, row: int) -> Stage:
        starts = self.decisions.slice_starts
        if starts is None:  # the running offset (the main path, with one worker)
            return self
        view = copy.copy(self)  # shares the decisions
        view.offset = int(starts[min(index, len(starts) - 1)]) + row
        return view

    def process(self, rows: pa.Table) -> StageResult:
        start, n = self.offset, rows.num_rows
        self.offset += n
        d = self.decisions
        ids = rows.column("id").combine_chunks().cast(pa.string())
        if start + n > len(d.ids) or not ids.equals(d.ids.slice(start, n)):
            raise MmtokError(
                "the input changed between the signature pass and the writing pass",
                hint="run dedup again on inputs that nobody writes to meanwhile",
            )
        gone = d.reason.slice(start, n).is_valid()
        rejected = make_rejects(
            rows.filter(gone),
            self.name,
            d.reason.slice(start, n).filter(gone).to_pylist(),
            d.message.slice(start, n).filter(gone).to_pylist(),
        )
        return StageResult(rows.filter(pc.invert(gone)), rejected)
