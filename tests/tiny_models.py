"""Shared by the model command tests (tests/embed, tests/vq, tests/ray): the tiny models with
seeded random weights (an open_clip `local-dir:` folder, a VQ tokenizer config + checkpoint),
and a folder of real image files with bad ones in the middle (a truncated JPEG, a web page
saved as .jpg, a missing file), in a fixed row order."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import encode, photo

# What every image folder holds besides its good files: decoders reject these.
BAD_FILES = ("truncated_400x300.jpg", "page_saved_as.jpg")
MISSING = "missing.jpg"


def tiny_clip(folder: Path, seed: int = 1) -> Path:
    """An open_clip `local-dir:` model folder (a 2-layer ViT at 64 px), random seeded weights."""
    from mmtok.models.tiny import write_local_dir

    return write_local_dir(Path(folder) / "tiny-clip", seed=seed)


def tiny_tokenizer(folder: Path, seed: int = 1) -> tuple[Path, Path]:
    """(config.json, checkpoint) of the tiny VQ tokenizer, with the decoder, random seeded
    weights."""
    from mmtok.models.vq.tiny import tiny_checkpoint, tiny_config

    config = Path(folder) / "tiny-vq.json"
    config.write_text(json.dumps(tiny_config().to_dict()))
    checkpoint = Path(folder) / "tiny-vq.pt"
    tiny_checkpoint(checkpoint, seed)
    return config, checkpoint


def image_folder(folder: Path, good: dict[str, bytes]) -> tuple[list[str], list[str]]:
    """Write `good` (name -> encoded file, seven of them) and the bad files into `folder`;
    returns (the row order: two good, a truncated JPEG, two good, a missing file, a web page,
    the rest; the good names)."""
    truncated = encode(photo(400, 300, seed=8), "JPEG")
    page = b"<!doctype html><html>404</html>"
    bad = {BAD_FILES[0]: truncated[: len(truncated) // 2], BAD_FILES[1]: page}
    for name, data in {**good, **bad}.items():
        (Path(folder) / name).write_bytes(data)
    names = list(good)
    order = [*names[:2], BAD_FILES[0], *names[2:4], MISSING, BAD_FILES[1], *names[4:]]
    return order, names
