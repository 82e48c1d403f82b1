"""DedupStage: the writing pass of `mmtok dedup`. Keeps or drops each row by its position in
the stream, from the decisions the clustering pass made over the signatures.

It runs in the main process (one worker), so batches arrive in order and a running offset
gives each row its position; it checks each row's id against the signature pass, so inputs
that changed between the passes stop the run instead of dropping the wrong rows.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from mmtok.dedup import Clusters, Settings, Signatures
from mmtok.engine.stage import Stage, StageResult
from mmtok.errors import MmtokError
from mmtok.io.schema import make_rejects
from mmtok.reasons import Reason


class DedupStage(Stage):
    name: ClassVar[str] = "dedup"

    def __init__(self, signatures: Signatures, clusters: Clusters, settings: Settings):
        self.sig, self.clusters, self.settings = signatures, clusters, settings
        self.offset = 0

    def config(self) -> dict[str, Any]:
        return {k: getattr(self.settings, k) for k in self.settings.__dataclass_fields__}

    def process(self, rows: pa.Table) -> StageResult:
        start, n = self.offset, rows.num_rows
        self.offset += n
        positions = np.arange(start, start + n)
        ids = rows.column("id").to_pylist()
        if start + n > len(self.sig) or ids != self.sig.ids[start : start + n].tolist():
            raise MmtokError(
                "the input changed between the signature pass and the writing pass",
                hint="run dedup again on inputs that nobody writes to meanwhile",
            )
        bad = np.array([r is not None for r in self.sig.reason[start : start + n]], bool)
        dup = self.clusters.dropped[positions] & ~bad
        keep = ~(bad | dup)
        reasons, messages = [], []
        for i in np.flatnonzero(~keep).tolist():
            p = start + i
            if bad[i]:
                reasons.append(self.sig.reason[p])
                messages.append(self.sig.message[p])
            else:
                reasons.append(Reason.DUPLICATE.value)
                messages.append(self._message(p))
        mask = pa.array(keep)
        rejected = make_rejects(rows.filter(pa.compute.invert(mask)), self.name, reasons, messages)
        return StageResult(rows.filter(mask), rejected)

    def _message(self, p: int) -> str:
        c = self.clusters
        kept = int(c.kept[p])
        parts = [f"duplicate_of={self.sig.ids[kept]}" if kept >= 0 else "kept=none"]
        parts.append(f"kind={c.kind[p]}")
        if c.image_distance[p] >= 0:
            parts.append(f"image_distance={int(c.image_distance[p])}")
        if not np.isnan(c.caption_similarity[p]):
            parts.append(f"caption_jaccard={c.caption_similarity[p]:.3f}")
        if kept >= 0 and self.sig.reference[kept]:
            parts.append("in=reference")
        parts.append(f"cluster_size={int(c.size[p])}")
        return " ".join(parts)
