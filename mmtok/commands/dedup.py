"""`dedup`: drop exact and near-duplicate images, captions or pairs, globally.

The plan: a signature pass over the inputs (and one over each reference dataset), the global
clustering step over all signatures at once, then the writing pass, which keeps or drops each
row by the clustering's decision. Both passes read the same slices of the inputs in workers
(or Ray tasks): the signature pass records each row's slice, so the writing pass knows where
each slice starts (`DedupStage.for_slice`)."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from mmtok.engine.stage import Stage, StageResult
from mmtok.errors import MmtokError

from .options import DatasetOptions, option, same_fields, writable_file
from .plan import GlobalStep, Pass, Plan, build_inputs, build_output

SIGNATURE_COLUMNS = [
    "id",
    "caption",
    "sha256",
    "phash",
    "phash_mirror",
    "pixels",
    "caption_bands",
    "sig_reason",
    "sig_message",
    "sig_embedding",
    "sig_slice",
]


@dataclass(kw_only=True)
class DedupOptions(DatasetOptions):
    by: Literal["image", "caption", "pair", "embedding"] = "image"
    max_distance: int = option(8, ge=0, le=16)
    mirror: bool = False
    caption_threshold: float = option(0.8, gt=0, le=1)
    shingle_size: int = option(1, ge=1)
    threshold: float = option(0.95, gt=0, le=1)  # --by embedding: cosine
    keep: Literal["largest", "first", "longest-caption", "none"] = "largest"
    against: list[str] | None = None
    clusters: str | None = None  # where clusters.parquet goes (default: in the output)

    def settings(self) -> Any:
        from mmtok.duplicates import Settings

        return same_fields(Settings, self, embedding_threshold=self.threshold)


class SignaturePasses:
    """The signature passes of one dedup and what they gathered: one pass per dataset (the
    inputs, then each reference), each resumable from its own store, then concatenated."""

    def __init__(self, opts: DedupOptions, out: Any, prefix: list[Any] | None = None):
        from mmtok.stages.signature import SignatureStage
        from mmtok.text.minhash import CaptionBands

        captions = (
            CaptionBands(opts.caption_threshold, shingle_size=opts.shingle_size)
            if opts.by != "image"
            else None
        )
        self.opts, self.out = opts, out
        self.stage = SignatureStage(images=opts.by != "caption", captions=captions)
        self.prefix = prefix or []  # a recipe's stages before dedup
        self.store = signature_store(out)
        self.parts: list[Any] = []
        self.signatures: Any = None
        self.slices: list[Any] = []  # of the input rows: their slice in the input plan

    def passes(self, source: Any) -> list[Pass]:
        """Pass 1 over the inputs and each reference."""
        datasets = [(source, False, "signatures", "input")]
        for i, ref in enumerate(self.opts.against or []):
            refs = build_inputs(self.opts, paths=[ref])
            datasets.append((refs, True, f"signatures of {ref}", str(i)))
        if self.opts.by == "embedding":  # stored embeddings, no pixels: checked before any pass
            from mmtok.stages.embedding_signature import embedding_signatures

            self.stage = embedding_signatures(self.opts.settings(), [d[0] for d in datasets])
        return [self._pass(*d) for d in datasets]

    def _pass(self, source: Any, reference: bool, description: str, name: str) -> Pass:
        """The signature columns of every row, in stream order. Each batch becomes columnar
        signatures as it arrives, so no table of all rows is held.

        With an output folder, the signature columns are also written to `store/name` (a
        dataset of their own, resumable like any output): a --resume after a kill continues
        this pass where it stopped, or skips it when it was complete."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from mmtok.duplicates import Signatures
        from mmtok.engine.pipeline import Observer, OutputOptions, finished_output
        from mmtok.stages.columns import KeepColumns

        stage, opts, store = self.stage, self.opts, self.store
        bands = stage.captions.bands if stage.captions else 0
        schema = pa.schema([pa.field(c, t) for c, t in _types(stage).items()])
        self.parts.append(Signatures.from_table(schema.empty_table(), reference, bands))
        prefix = self.prefix if not reference else []  # references are read as they are
        # a model (a recipe's filter --model) runs last, in this process: the signatures are
        # made before it, and its rejects never reach the observer. This pass then keeps no
        # store (the kept rows would carry the model's inputs): a resume runs it again.
        device = [s for s in prefix if hasattr(s, "run_stream")]
        stages = [*(s for s in prefix if s not in device), SliceTag(), stage, *device]
        columns = SIGNATURE_COLUMNS
        if device:
            store = None
            # the model's input stage writes its own `pixels` (the image tensor, which the
            # model consumes): the signatures are made before it, their pixel count set aside
            # under another name
            cpu = stages[: -len(device) - 1]
            at = next(
                (i for i, s in enumerate(cpu) if "pixels" in [f.name for f in s.output_fields()]),
                len(cpu),
            )
            stages = [*cpu[:at], stage, CopyColumn("pixels", ASIDE), *cpu[at:], *device]
            columns = [ASIDE if c == "pixels" else c for c in SIGNATURE_COLUMNS]
        sig_out = None
        if store is not None:
            sig_out = OutputOptions(
                str(store / name),
                overwrite=True,
                resume=opts.resume,
                shard_rows=opts.shard_rows,  # the commit points of this pass
            )
            stages.append(KeepColumns(SIGNATURE_COLUMNS))

        def done() -> bool:
            if store is None:
                return False
            store.mkdir(exist_ok=True)
            finished = finished_output(sig_out, source, stages) if opts.resume else None
            if finished is None:
                return False
            for f in finished["files"]:
                if f["kind"] == "rows":
                    table = pq.read_table(store / name / f["name"], columns=SIGNATURE_COLUMNS)
                    add(table)
            return True

        def add(table: Any) -> None:
            if ASIDE in table.column_names:
                table = table.rename_columns(["pixels" if c == ASIDE else c for c in columns])
            self.parts.append(Signatures.from_table(table, reference, bands))
            if not reference:
                self.slices.append(table.column("sig_slice").to_numpy())

        observer = Observer(columns, add)
        return Pass(description, source, stages, sig_out, [observer], skip=done)

    def gather(self) -> None:
        import pyarrow as pa

        from mmtok.duplicates import Signatures

        self.signatures = Signatures.concat(self.parts)
        self.parts = []
        pa.default_memory_pool().release_unused()  # the batches' buffers go back to the system

    def slice_starts(self) -> Any:
        """The position of each input slice's first row (then the number of input rows), from
        the slices the signature pass read its rows from; None when some row came from no
        slice (inputs read as batches), whose writing pass then keeps a running position."""
        import numpy as np

        tags = np.concatenate([np.empty(0, np.int32), *self.slices])
        self.slices = []
        if len(tags) and (tags.min() < 0 or (np.diff(tags) < 0).any()):
            return None
        count = int(tags.max()) + 1 if len(tags) else 0
        return np.searchsorted(tags, np.arange(count + 1)).astype(np.int64)


def plan(opts: DedupOptions) -> Plan:
    from mmtok.duplicates import find_clusters
    from mmtok.engine.local import default_workers
    from mmtok.engine.pipeline import check_output, publish_output
    from mmtok.io.layout import CLUSTERS_FILE, SIDE_DIR
    from mmtok.stages.dedup import DedupStage, decide

    settings = opts.settings()
    out = build_output(opts)
    if out is None:
        raise MmtokError("give -o DIR (or -o - for JSON Lines)")
    if opts.clusters:  # written after all passes: check it before the first
        writable_file(opts.clusters, "--clusters", opts.output)
    # one Inputs for both passes over the data: stdin is spooled once and read twice
    source = build_inputs(opts)
    remove_leftover_store(signature_store(out), out.path)  # before "already complete"
    check_output(out, source, opts.against or [])  # before the signature pass: hours at scale
    sig = SignaturePasses(opts, out)
    check_signature_store(sig.store, opts)
    marks: dict[str, float] = {}
    clusters: list[Any] = []
    decisions: list[Any] = []
    result: dict[str, Any] = {}

    def start() -> None:
        marks["t0"] = time.monotonic()

    def cluster() -> None:
        sig.gather()
        marks["t1"] = time.monotonic()
        clusters.append(find_clusters(sig.signatures, settings, pair_search(opts)))
        marks["t2"] = time.monotonic()  # the decisions (their messages) count as writing
        starts = sig.slice_starts()
        decisions.append(decide(sig.signatures, clusters[0], starts))
        # by slices, the workers (or Ray tasks) write the output; on stdout, or with inputs
        # read as batches, the rows are written here, in order
        writing.workers = 1 if out.to_stdout or starts is None else None

    writing = Pass(
        "writing",
        source,
        lambda: [DedupStage(decisions[0], settings)],
        out,
        hold=True,
    )

    def finish() -> None:
        import pyarrow.parquet as pq

        table = cluster_table(sig.signatures, clusters[0])
        clusters_path = opts.clusters
        if clusters_path:  # a path of the user's choice, outside the output's commit
            pq.write_table(table, clusters_path, compression="zstd")
        if not out.to_stdout:
            publish_output(out, {} if clusters_path else {CLUSTERS_FILE: table})
            clusters_path = clusters_path or str(Path(out.path, SIDE_DIR, CLUSTERS_FILE))
            remove_signature_store(sig.store)
        result.update(
            {
                "output": out.path,
                "clusters_file": clusters_path,
                "settings": {k: getattr(settings, k) for k in settings.__dataclass_fields__},
                "against": opts.against or [],
                "counts": writing.manifest["counts"],
                **summary(sig.signatures, clusters[0]),
                "timing": {
                    "signature_seconds": round(marks["t1"] - marks["t0"], 3),
                    "clustering_seconds": round(marks["t2"] - marks["t1"], 3),
                    "writing_seconds": round(time.monotonic() - marks["t2"], 3),
                    "workers": opts.workers or default_workers(),
                },
            }
        )

    steps = [
        GlobalStep("starting", start),
        *sig.passes(source),
        GlobalStep("clustering", cluster),
        writing,
        GlobalStep("summarising", finish),
    ]
    return Plan("dedup", opts, steps, lambda: result, inputs=[source])


def remove_leftover_store(store: Path | None, output: str) -> None:
    """A run killed between publishing its output and removing its store leaves a store older
    than the complete output: mmtok's own leftover, removed."""
    if store is not None and store.exists() and _published_after(store, output):
        remove_signature_store(store)


def check_signature_store(store: Path | None, opts: DedupOptions) -> None:
    if store is not None and store.exists() and not (opts.resume or opts.overwrite):
        raise MmtokError(
            f"an unfinished dedup left its signatures in {store}",
            hint="pass --resume to continue it, or --overwrite to start again",
        )


def _published_after(store: Path, output: str) -> bool:
    """Whether `output` is a complete mmtok output published after `store` was last written
    (a run writing a new output into the same folder writes its store after the old one)."""
    from mmtok.io.layout import SIDE_DIR

    manifest = Path(output, SIDE_DIR, "manifest.json")
    try:
        return manifest.stat().st_mtime > max(
            [store.stat().st_mtime, *(p.stat().st_mtime for p in store.rglob("*"))]
        )
    except OSError:
        return False


def signature_store(out: Any) -> Path | None:
    """Where a dedup into a folder keeps its signature passes (beside the output, like its
    staging folder), so that --resume does not compute them again."""
    from mmtok.io.output_guard import real

    if out.to_stdout:
        return None
    target = real(out.path)
    return target.parent / f".{target.name}.mmtok-signatures"


def remove_signature_store(store: Path | None) -> None:
    from mmtok.io.output_guard import remove_output

    if store is None or not store.is_dir():
        return
    for child in store.iterdir():
        remove_output(child)  # only the files of complete signature datasets
    with contextlib.suppress(OSError):
        store.rmdir()


def _types(stage: Any) -> dict[str, Any]:
    import pyarrow as pa

    types = {"id": pa.string(), "caption": pa.string(), "sig_slice": pa.int32()}
    types.update({f.name: f.type for f in stage.output_fields()})
    return {c: types[c] for c in SIGNATURE_COLUMNS}


def cluster_table(sig: Any, c: Any) -> Any:
    """One row per member of a cluster of two or more, ordered by cluster then input order."""
    import numpy as np
    import pyarrow as pa

    members = np.flatnonzero(c.size > 1)
    members = members[np.lexsort((members, c.label[members]))]
    _, cluster_id = np.unique(c.label[members], return_inverse=True)
    distance, similarity = c.image_distance[members], c.caption_similarity[members]
    return pa.table(
        {
            "cluster_id": pa.array(cluster_id, pa.int64()),
            "id": sig.ids.take(pa.array(members)),
            "kept": pa.array(c.kept[members] == members),
            "reference": pa.array(sig.reference[members]),
            "image_distance": pa.array(distance.astype(np.int32), mask=distance < 0),
            "caption_jaccard": pa.array(similarity, mask=np.isnan(similarity)),
            "cosine": pa.array(c.cosine[members], pa.float32(), mask=np.isnan(c.cosine[members])),
            "kind": pa.array(c.kind_names(members), pa.string()),
        }
    )


def summary(sig: Any, c: Any) -> dict[str, Any]:
    import numpy as np

    from mmtok.duplicates import KINDS

    multi = c.size > 1
    labels, sizes = np.unique(c.label[multi], return_counts=True)
    codes, counts = np.unique(c.kind[c.dropped], return_counts=True)
    kinds = {KINDS[k]: int(m) for k, m in zip(codes.tolist(), counts.tolist(), strict=True)}
    inputs = int((~sig.reference).sum())
    return {
        "clusters": int(len(labels)),
        "rows_in_clusters": int(multi.sum()),
        "largest_cluster": int(sizes.max()) if len(sizes) else 0,
        "mean_cluster_size": float(sizes.mean()) if len(sizes) else 0.0,
        "duplicates_removed": int(c.dropped.sum()),
        "removed_by_kind": dict(sorted(kinds.items())),
        "unreadable": inputs - sig.reason.slice(0, inputs).null_count,
    }


ASIDE = "signature_pixels"


class CopyColumn(Stage):
    """A column copied under another name (the signature's pixel count, before a model's input
    stage writes its own `pixels`)."""

    name: ClassVar[str] = "copy_column"

    def __init__(self, column: str, to: str):
        self.column, self.to = column, to

    def output_fields(self) -> list[Any]:
        import pyarrow as pa

        return [pa.field(self.to, pa.int64())]

    def process(self, rows: Any) -> StageResult:
        kept = rows.append_column(self.to, rows.column(self.column).cast("int64"))
        return StageResult(kept, rows.schema.empty_table())


class SliceTag(Stage):
    """The slice of the input plan each row was read from (`sig_slice`; -1: read as batches),
    stored with its signature: how many rows each slice gave the signature pass tells the
    writing pass where each slice starts."""

    name: ClassVar[str] = "slice_tag"

    def __init__(self, index: int = -1):
        self.index = index

    def output_fields(self) -> list[Any]:
        import pyarrow as pa

        return [pa.field("sig_slice", pa.int32())]

    def for_slice(self, index: int, row: int) -> Stage:
        return self if index == self.index else SliceTag(index)

    def process(self, rows: Any) -> StageResult:
        import numpy as np
        import pyarrow as pa

        tags = pa.array(np.full(rows.num_rows, self.index, np.int32))
        return StageResult(rows.append_column("sig_slice", tags), rows.schema.empty_table())


class DropListed(Stage):
    """The writing side of dedup inside a recipe: rows whose id the clustering listed go to
    rejects with its reason and message (`duplicate`, `duplicate_of=<id> ...`), the rest are
    kept. Unlike `DedupStage` it finds rows by id, not by position, so it runs between any
    stages, after a step that drops rows too."""

    name: ClassVar[str] = "dedup"

    def __init__(self, listed: dict[str, tuple[str, str]], config: dict[str, Any]):
        self.listed, self._config = listed, config

    def config(self) -> dict[str, Any]:
        return self._config

    def process(self, rows: Any) -> StageResult:
        import pyarrow as pa
        import pyarrow.compute as pc

        from mmtok.io.schema import make_rejects

        ids = rows.column("id").cast(pa.string()).to_pylist()
        gone = [self.listed.get(i) for i in ids]
        mask = pa.array([g is None for g in gone], pa.bool_())
        dropped = [g for g in gone if g is not None]
        rejected = make_rejects(
            rows.filter(pc.invert(mask)),
            self.name,
            [reason for reason, _ in dropped],
            [message for _, message in dropped],
        )
        return StageResult(rows.filter(mask), rejected)


def listed_rows(sig: Any, clusters: Any, settings: Any) -> dict[str, tuple[str, str]]:
    """The clustering's decisions for the input rows it drops, by id: (reason, message), the
    same `DedupStage` gives them. Ids must be unique (a recipe keys its decisions by id)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from mmtok.stages.dedup import DedupStage, decide

    inputs = int((~sig.reference).sum())
    ids = sig.ids.slice(0, inputs)
    if pc.count_distinct(ids).as_py() != inputs:
        raise MmtokError(
            "a recipe with dedup needs unique row ids, and the input repeats some",
            hint="give --id-col a column of unique ids, or leave it out (mmtok then makes them)",
        )
    stage = DedupStage(decide(sig, clusters, None), settings)
    rejected = stage.process(pa.table({"id": ids})).rejected
    return dict(
        zip(
            rejected.column("id").to_pylist(),
            zip(
                rejected.column("reason").to_pylist(),
                rejected.column("message").to_pylist(),
                strict=True,
            ),
            strict=True,
        )
    )


class DedupInRecipe:
    """A dedup step inside a recipe: its signature passes over the rows the steps before it
    keep, the clustering, and a stage that drops what the clustering lists."""

    def __init__(self, opts: Any, out: Any, inputs: Any, prefix: list[Any]):
        if out is None:
            raise MmtokError("a recipe with dedup needs an output (output = DIR, or -o -)")
        if opts.clusters:
            writable_file(opts.clusters, "clusters", opts.output)
        self.opts, self.out, self.inputs = opts, out, inputs
        self.settings = opts.settings()
        self.sig = SignaturePasses(opts, out, prefix=prefix)
        check_signature_store(self.sig.store, opts)
        self.clusters: Any = None
        self.listed: dict[str, tuple[str, str]] = {}
        self.seconds: dict[str, float] = {}

    def steps(self) -> list[Any]:
        from mmtok.commands.plan import GlobalStep
        from mmtok.duplicates import find_clusters

        def cluster() -> None:
            self.sig.gather()
            t0 = time.monotonic()
            self.clusters = find_clusters(
                self.sig.signatures, self.settings, pair_search(self.opts)
            )
            self.listed = listed_rows(self.sig.signatures, self.clusters, self.settings)
            self.seconds["clustering_seconds"] = round(time.monotonic() - t0, 3)

        return [*self.sig.passes(self.inputs), GlobalStep("clustering", cluster)]

    def stage(self) -> Any:
        """The stage of the writing pass, made once the clustering ran."""
        config = {k: getattr(self.settings, k) for k in self.settings.__dataclass_fields__}
        return DropListed(self.listed, config)

    def document(self, manifest: dict[str, Any]) -> dict[str, Any]:
        return {
            "output": self.out.path,
            "clusters_file": self._clusters_path(),
            "settings": {k: getattr(self.settings, k) for k in self.settings.__dataclass_fields__},
            "against": self.opts.against or [],
            "counts": manifest.get("counts"),
            **summary(self.sig.signatures, self.clusters),
            "timing": self.seconds,
        }

    def _clusters_path(self) -> str | None:
        from pathlib import Path

        from mmtok.io.layout import CLUSTERS_FILE, SIDE_DIR

        if self.opts.clusters:
            return self.opts.clusters
        return None if self.out.to_stdout else str(Path(self.out.path, SIDE_DIR, CLUSTERS_FILE))

    def side_outputs(self) -> dict[str, Any]:
        import pyarrow.parquet as pq

        from mmtok.io.layout import CLUSTERS_FILE

        table = cluster_table(self.sig.signatures, self.clusters)
        if self.opts.clusters:
            pq.write_table(table, self.opts.clusters, compression="zstd")
            return {}
        return {CLUSTERS_FILE: table}

    def cleanup(self) -> None:
        remove_signature_store(self.sig.store)


def pair_search(opts: DedupOptions) -> Any:
    """The near-duplicate candidate search: on the Ray cluster with `--engine ray` (the same
    pairs, found by tasks over hash blocks and caption bands), else in this process."""
    if opts.engine != "ray":
        return None
    from mmtok.engine.ray_dedup import ray_search

    return ray_search(opts.ray_address)
