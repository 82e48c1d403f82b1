"""The VQ training stream: every image's ids in one flat little-endian file, plus an index.

`mmtok tokenize-images --emit bin` writes, inside the output folder, `__mmtok__/vq_stream/`:

    tokens.bin    the ids of image 0, then image 1, ... as little-endian uint16 (uint32 when an id
                  or marker exceeds 65,535), each image optionally wrapped as [boi] ids [eoi];
                  exactly 2 (or 4) bytes per token, no header
    offsets.npy   int64, images + 1 entries: image i is tokens[offsets[i]:offsets[i + 1]]
    stream.json   dtype, markers, codebook size and counts

Images are in the dataset's row order: the part files by name, their rows in order (what
`pyarrow.dataset`, pandas and `datasets` read). Both files open with `numpy.memmap` / `np.load(...,
mmap_mode="r")`, so a trainer reads them without loading them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mmtok.errors import MmtokError
from mmtok.io.layout import SIDE_DIR

STREAM_DIR = "vq_stream"
TOKENS_FILE = "tokens.bin"
OFFSETS_FILE = "offsets.npy"
INFO_FILE = "stream.json"
IDS_COLUMN = "vq_ids"
UINT16_MAX = 65_535


def id_type(largest_id: int) -> pa.DataType:
    """The narrowest unsigned type of the ids: uint16 covers codebooks up to 65,536 entries."""
    return pa.uint16() if largest_id <= UINT16_MAX else pa.uint32()


def stream_dtype(codebook_size: int, boi: int | None = None, eoi: int | None = None) -> np.dtype:
    """Little-endian uint16, or uint32 when a code or a marker does not fit in 16 bits."""
    largest = max([codebook_size - 1, *(m for m in (boi, eoi) if m is not None)])
    return np.dtype("<u2" if largest <= UINT16_MAX else "<u4")


def check_markers(codebook_size: int, boi: int | None, eoi: int | None) -> None:
    """A marker must not be a codebook id (it could not be told apart from a code)."""
    for flag, marker in (("--boi", boi), ("--eoi", eoi)):
        if marker is None:
            continue
        if marker < 0 or marker > 0xFFFF_FFFF:
            raise MmtokError(f"{flag} {marker} is not an unsigned 32-bit id")
        if marker < codebook_size:
            raise MmtokError(
                f"{flag} {marker} is a codebook id (the codebook has {codebook_size:,} entries)",
                hint=f"give a marker id of {codebook_size} or more",
            )
    if boi is not None and boi == eoi:
        raise MmtokError(f"--boi and --eoi are the same id ({boi})", hint="give two ids")


def wrap(
    values: np.ndarray, offsets: np.ndarray, boi: int | None, eoi: int | None, dtype: np.dtype
) -> np.ndarray:
    """The flat ids of rows (`values`, split by list `offsets`), each row as [boi] ids [eoi]."""
    values = values.astype(dtype, copy=False)
    n = len(offsets) - 1
    extra = (boi is not None) + (eoi is not None)
    if not extra:
        return values
    lengths = np.diff(offsets)
    starts = offsets[:-1] - offsets[0] + np.arange(n) * extra  # where each row begins in `out`
    out = np.empty(len(values) + n * extra, dtype)
    first = int(boi is not None)
    row_of = np.repeat(np.arange(n), lengths)
    out[np.arange(len(values)) + row_of * extra + first] = values
    if boi is not None:
        out[starts] = boi
    if eoi is not None:
        out[starts + first + lengths] = eoi
    return out


def write_stream(
    out_dir: str | Path,
    *,
    codebook_size: int,
    boi: int | None = None,
    eoi: int | None = None,
    column: str = IDS_COLUMN,
) -> dict[str, Any]:
    """Write `__mmtok__/vq_stream/` from the ids column of the part files in `out_dir` (the
    staged folder; the sink lists and publishes what is written); returns stream.json's dict."""
    out_dir = Path(out_dir)
    target = out_dir / SIDE_DIR / STREAM_DIR
    target.mkdir(parents=True, exist_ok=True)
    dtype = stream_dtype(codebook_size, boi, eoi)
    extra = (boi is not None) + (eoi is not None)
    offsets = [np.zeros(1, np.int64)]
    written = 0
    with open(target / TOKENS_FILE, "wb") as f:
        for part in sorted(out_dir.glob("part-*.parquet")):
            for batch in pq.ParquetFile(part).iter_batches(columns=[column], batch_size=8192):
                ids = batch.column(0)
                if ids.null_count:
                    raise AssertionError(f"{part.name}: a kept row without ids")  # a bug
                list_offsets = ids.offsets.to_numpy().astype(np.int64)
                values = ids.values.to_numpy()
                values = values[list_offsets[0] : list_offsets[-1]]
                chunk = wrap(values, list_offsets, boi, eoi, dtype)
                f.write(chunk.tobytes())
                lengths = np.diff(list_offsets) + extra
                offsets.append(written + np.cumsum(lengths, dtype=np.int64))
                written += len(chunk)
    index = np.concatenate(offsets)
    np.save(target / OFFSETS_FILE, index)
    info = {
        "format": "flat little-endian ids; image i is tokens[offsets[i]:offsets[i+1]]",
        "dtype": dtype.str,  # '<u2' or '<u4', as numpy.memmap takes it
        "bytes_per_token": dtype.itemsize,
        "images": len(index) - 1,
        "tokens": written,
        "codebook_size": codebook_size,
        "boi": boi,
        "eoi": eoi,
        "tokens_file": TOKENS_FILE,
        "offsets_file": OFFSETS_FILE,
        "order": "the part files by name, their rows in order",
    }
    with open(target / INFO_FILE, "w") as f:
        json.dump(info, f, indent=2)
    return info


def read_stream(folder: str | Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(tokens, offsets, info) of a stream folder, memory-mapped (an output folder works too)."""
    folder = Path(folder)
    if (folder / SIDE_DIR / STREAM_DIR).is_dir():
        folder = folder / SIDE_DIR / STREAM_DIR
    info = json.loads((folder / INFO_FILE).read_text())
    dtype = np.dtype(info["dtype"])
    # numpy cannot map an empty file (a run that kept no rows)
    tokens = (
        np.memmap(folder / TOKENS_FILE, dtype=dtype, mode="r")
        if info["tokens"]
        else np.zeros(0, dtype)
    )
    offsets = np.load(folder / OFFSETS_FILE, mmap_mode="r")
    return tokens, offsets, info
