"""A uniform random sample of an input's rows, without replacement, seeded.

Two passes instead of one reservoir: the first counts the rows (reading records only, no
image is opened), the second keeps the rows at `n` sorted random positions. Same distribution
as reservoir sampling, but memory holds n positions, not n rows with their image bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from mmtok.io.sources import Inputs, SourceBatch


class SampledInputs:
    """Quacks like `Inputs` for `run_pipeline`: schema, options, fingerprint, counts, batches."""

    def __init__(self, inputs: Inputs, n: int, seed: int = 0):
        self.inputs, self.n, self.seed = inputs, n, seed
        self.schema, self.options = inputs.schema, inputs.options
        self.total_rows = sum(b.rows.num_rows for b in inputs.batches())
        rng = np.random.default_rng(seed)
        size = min(n, self.total_rows)
        self.positions = np.sort(rng.choice(self.total_rows, size=size, replace=False))

    @property
    def sources(self):
        """The sources sampled (what the output records as its inputs and features)."""
        return self.inputs.sources

    @property
    def paths(self):
        return self.inputs.paths

    def count_rows(self) -> int:
        return int(self.positions.size)

    def fingerprint(self) -> tuple[str, list[dict]]:
        digest, parts = self.inputs.fingerprint()
        key = json.dumps({"inputs": digest, "sample": self.n, "seed": self.seed})
        return hashlib.sha256(key.encode()).hexdigest(), parts

    def notes(self) -> dict[str, int]:
        return self.inputs.notes()

    def batches(self) -> Iterator[SourceBatch]:
        """The chosen rows, re-cut into batches of `batch_rows` (rows that failed to parse are
        not rows of the sample: they have no image to estimate from)."""
        start, pending, pending_rows = 0, [], 0
        for batch in self.inputs.batches():
            end = start + batch.rows.num_rows
            lo, hi = np.searchsorted(self.positions, [start, end])
            if hi > lo:
                pending.append(batch.rows.take(pa.array(self.positions[lo:hi] - start)))
                pending_rows += int(hi - lo)
            start = end
            if pending_rows >= self.options.batch_rows:
                yield SourceBatch(pa.concat_tables(pending))
                pending, pending_rows = [], 0
        if pending:
            yield SourceBatch(pa.concat_tables(pending))
