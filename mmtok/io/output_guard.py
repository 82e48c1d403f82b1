"""Where a run may write: never over one of its inputs, never over a folder mmtok did not write.

`--overwrite` replaces only a complete mmtok output: a folder whose manifest mmtok wrote and
that holds nothing the manifest does not list (a README a user added is not ours to delete).
Paths are compared after resolving symlinks and `..`, so `-o .`, `-o ../x` and a link to an
input folder are caught like the plain path.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from mmtok.errors import MmtokError
from mmtok.io.layout import MANIFEST_FILE, SIDE_DIR


def real(path: str | os.PathLike) -> Path:
    """The path with symlinks and `..` resolved (the part that exists), absolute."""
    return Path(os.path.realpath(os.fspath(path)))


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_not_input(out: str | os.PathLike, inputs: list[str]) -> None:
    """Refuse an output that is an input, holds an input, or lies inside an input folder.

    Writing there would read a run's own output as input, change the input's fingerprint
    under a resume, or (with --overwrite) replace the input."""
    target = real(out)
    for given in inputs:
        if given == "-":
            continue
        source = real(given)
        if _within(source, target):
            what = "is" if source == target else "holds"
            raise MmtokError(
                f"output {out} {what} the input {given}",
                hint="write to a new folder outside the inputs, e.g. -o out/",
            )
        if source.is_dir() and _within(target, source):
            raise MmtokError(
                f"output {out} is inside the input folder {given}",
                hint="write to a folder outside the inputs, so no run reads its own output",
            )


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of a complete mmtok output (new or old layout), or None."""
    for path in (folder / SIDE_DIR / MANIFEST_FILE, folder / MANIFEST_FILE):
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(manifest, dict) and "mmtok_version" in manifest and "files" in manifest:
            return manifest
    return None


def own_paths(folder: Path, manifest: dict[str, Any]) -> list[Path]:
    """The files and folders of an output that mmtok wrote, deepest first."""
    names = {f["name"] for f in manifest["files"]}
    paths = [folder / n for n in sorted(names)]
    paths += [folder / SIDE_DIR / MANIFEST_FILE, folder / MANIFEST_FILE, folder / SIDE_DIR]
    return paths


def foreign_entries(folder: Path, manifest: dict[str, Any]) -> list[str]:
    """Entries under `folder` that its manifest does not account for."""
    own = {p.relative_to(folder).as_posix() for p in own_paths(folder, manifest)}
    found = []
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            rel = Path(root, name).relative_to(folder).as_posix()
            if rel not in own:
                found.append(rel)
        dirs[:] = [d for d in dirs if Path(root, d).relative_to(folder).as_posix() in own]
    return sorted(found)


def check_replaceable(out: Path, shown: str) -> dict[str, Any]:
    """The manifest of `out` if --overwrite may replace it; a clear error otherwise."""
    if not out.is_dir():
        raise MmtokError(
            f"output {shown} is a file, not an mmtok output folder", hint="choose another -o"
        )
    manifest = read_manifest(out)
    if manifest is None:
        entries = sorted(os.listdir(out))
        listing = ", ".join(entries[:5]) + (
            f" and {len(entries) - 5} more" if len(entries) > 5 else ""
        )
        raise MmtokError(
            f"output {shown} is not an mmtok output (it holds {listing or 'nothing'}); "
            "--overwrite only replaces a complete mmtok output",
            hint="choose a new folder for -o",
        )
    foreign = foreign_entries(out, manifest)
    if foreign:
        raise MmtokError(
            f"output {shown} holds files mmtok did not write: {', '.join(foreign[:5])}",
            hint="move them away, or choose a new folder for -o",
        )
    return manifest


def remove_output(folder: Path) -> None:
    """Delete a complete mmtok output, file by file: only what its manifest lists.

    Whatever else is in the folder stays (and so does the folder)."""
    manifest = read_manifest(folder)
    if manifest is None:
        return
    for path in own_paths(folder, manifest):
        if path.is_dir() and not path.is_symlink():
            with contextlib.suppress(OSError):
                path.rmdir()
        elif path.exists() or path.is_symlink():
            path.unlink()
    with contextlib.suppress(OSError):
        folder.rmdir()
