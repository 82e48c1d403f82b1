"""Image files: a folder of them (captions from `.txt` files beside them), or one file."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

from mmtok.io.encoding import path_text
from mmtok.io.sources.base import BadRecord, ReadOptions, Slice, Source
from mmtok.io.sources.values import add_warning, row_id, utf8_text
from mmtok.io.sources.webdataset import WDS_IMAGE_EXTENSIONS

IMAGE_EXTENSIONS = frozenset(
    [
        "jpg",
        "jpeg",
        "jpe",
        "jfif",
        "png",
        "webp",
        "gif",
        "bmp",
        "tif",
        "tiff",
        "avif",
        "heic",
        "heif",
        "jp2",
        "j2k",
        "ico",
        "svg",
        "ppm",
        "pgm",
        "pbm",
        "tga",
    ]
)
VIDEO_EXTENSIONS = frozenset(["mp4", "mkv", "webm", "mov", "avi", "m4v"])


class FolderSource(Source):
    """Every image file under a folder (recursive, sorted); caption from `<stem>.txt` beside it."""

    kind = "folder"

    def __init__(self, path: str, options: ReadOptions):
        super().__init__(path, options)
        self.base_dir = os.path.abspath(path)
        self._files: list[str] | None = None

    @property
    def id_key(self) -> str:
        return self.base_dir

    def files(self) -> list[str]:
        if self._files is None:
            found, ignored = [], 0
            for root, dirs, names in os.walk(self.path):
                dirs.sort()
                for name in sorted(names):
                    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
                    if ext in IMAGE_EXTENSIONS or (self.options.videos and ext in VIDEO_EXTENSIONS):
                        found.append(os.path.relpath(os.path.join(root, name), self.path))
                    elif ext != "txt":
                        ignored += 1
            self._files = found
            self.notes["ignored_non_image_files"] = ignored
        return self._files

    def count_rows(self) -> int | None:
        return len(self.files())

    def hint(self) -> str:
        if self.options.videos:
            videos = ", ".join(sorted(VIDEO_EXTENSIONS))
            return f"no image or video files found (video extensions: {videos})"
        return f"no image files found (extensions: {', '.join(WDS_IMAGE_EXTENSIONS)}, ...)"

    def fingerprint(self) -> dict:
        files = self.files()
        digest = hashlib.sha256(os.fsencode("\n".join(files))).hexdigest()
        return {
            "path": self.source_text,
            "kind": self.kind,
            "files": len(files),
            "listing_sha256": digest,
        }

    def slices(self, index: int, rows: int) -> list[Slice]:
        """Ranges of the sorted listing (a worker gets the listing once, with its sources)."""
        count = len(self.files())
        starts = range(0, max(count, 1), max(rows, 1))
        return [Slice(index, self.path, "items", a, min(a + rows, count), a) for a in starts]

    def records(self, part: Slice | None = None) -> Iterator[tuple[dict | BadRecord, int | str]]:
        files = self.files()
        if part is not None and part.kind == "items":
            files = files[part.start : part.stop]
        for rel in files:
            path = os.path.join(self.base_dir, rel)
            yield image_file_row(path, row_id(self.id_key, rel), self.source_text), f"file {rel}"


def image_file_row(path: str, id_: str, source: str) -> dict:
    """A row for one image file; the caption comes from `<stem>.txt` beside it, if any."""
    sidecar = os.path.splitext(path)[0] + ".txt"
    caption = warning = None
    if os.path.isfile(sidecar):
        with open(sidecar, "rb") as f:
            caption, bad = utf8_text(f.read())
        caption = caption.strip()
        warning = f"caption file {bad}" if bad else None
    text = path_text(path)
    row = {"id": id_, "source": source, "image": {"path": text, "bytes": None}, "caption": caption}
    if warning:
        add_warning(row, warning)
    return row


class ImageFileSource(Source):
    """One image file given on the command line (or matched by a glob): one row."""

    kind = "image"

    def count_rows(self) -> int | None:
        return 1

    def records(self, part: Slice | None = None) -> Iterator[tuple[dict | BadRecord, int | str]]:
        path = os.path.abspath(self.path)
        yield image_file_row(path, row_id(path, 0), self.source_text), "file"
