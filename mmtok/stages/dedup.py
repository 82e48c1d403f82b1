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

from mmtok.duplicates import KINDS, Clusters, Settings, Signatures
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

    def resume_after(self, rows: int) -> None:
        self.offset = rows

    def process(self, rows: pa.Table) -> StageResult:
        start, n = self.offset, rows.num_rows
        self.offset += n
        ids = rows.column("id").combine_chunks().cast(pa.string())
        if start + n > len(self.sig) or not ids.equals(self.sig.ids.slice(start, n)):
            raise MmtokError(
                "the input changed between the signature pass and the writing pass",
                hint="run dedup again on inputs that nobody writes to meanwhile",
            )
        reason = self.sig.reason.slice(start, n)
        bad = reason.is_valid().to_numpy(zero_copy_only=False)
        dup = self.clusters.dropped[start : start + n] & ~bad
        keep = ~(bad | dup)
        gone = np.flatnonzero(~keep)
        reasons = reason.take(pa.array(gone)).to_pylist()
        messages = self.sig.message.slice(start, n).take(pa.array(gone)).to_pylist()
        for k, i in enumerate(gone.tolist()):
            if not bad[i]:
                reasons[k] = Reason.DUPLICATE.value
                messages[k] = self._message(start + i)
        mask = pa.array(keep)
        rejected = make_rejects(rows.filter(pa.compute.invert(mask)), self.name, reasons, messages)
        return StageResult(rows.filter(mask), rejected)

    def _message(self, p: int) -> str:
        c = self.clusters
        kept = int(c.kept[p])
        parts = [f"duplicate_of={self.sig.ids[kept].as_py()}" if kept >= 0 else "kept=none"]
        parts.append(f"kind={KINDS[c.kind[p]]}")
        if c.image_distance[p] >= 0:
            parts.append(f"image_distance={int(c.image_distance[p])}")
        if not np.isnan(c.caption_similarity[p]):
            parts.append(f"caption_jaccard={c.caption_similarity[p]:.3f}")
        if not np.isnan(c.cosine[p]):
            parts.append(f"cosine={c.cosine[p]:.4f}")
        if kept >= 0 and self.sig.reference[kept]:
            parts.append("in=reference")
        parts.append(f"cluster_size={int(c.size[p])}")
        return " ".join(parts)
