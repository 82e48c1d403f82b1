"""WebDataset tar shards: members grouped by key into samples."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import pyarrow as pa

from mmtok.io.encoding import name_text, valid_text
from mmtok.io.sources.base import BadRecord, Slice, Source
from mmtok.io.sources.jsonl import Unparsed, parse_json
from mmtok.io.sources.values import RecordError, add_warning, caption_value, row_id, utf8_text
from mmtok.io.tar import Damage, tar_members

WDS_IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")
WDS_VIDEO_EXTENSIONS = ("mp4", "mkv", "webm", "mov", "avi", "m4v")  # with ReadOptions.videos
# WebDataset's rule: the key is everything before the first dot of the file name.
_WDS_KEY = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")


class WebDatasetSource(Source):
    """A WebDataset tar shard: members grouped by key; `<key>.jpg|png|webp` + `.txt` or `.json`.

    A damaged shard keeps every sample it can read; each damaged stretch is one `bad_record`
    reject that gives its byte offset (see `mmtok.io.tar`)."""

    kind = "webdataset"

    def passthrough_fields(self) -> list[pa.Field]:
        return [pa.field("key", pa.string()), pa.field("json", pa.string())]

    def hint(self) -> str:
        return "is it a WebDataset tar shard (<key>.jpg + <key>.txt members)?"

    def _sample_row(self, key: str, members: dict[str, bytes]) -> dict:
        image_ext = next((e for e in WDS_IMAGE_EXTENSIONS if e in members), None)
        if image_ext is None and self.options.videos:
            image_ext = next((e for e in WDS_VIDEO_EXTENSIONS if e in members), None)
        key_text, bad_name = name_text(os.fsencode(key))
        warnings = []
        meta_text = caption = None
        if "json" in members:
            meta_text, bad = utf8_text(members["json"])
            warnings += [f"{key_text}.json {bad}"] if bad else []
        if "txt" in members:
            caption, bad = utf8_text(members["txt"])
            warnings += [f"{key_text}.txt {bad}"] if bad else []
        if caption is None and meta_text is not None:
            meta = parse_json(meta_text)
            if isinstance(meta, Unparsed):
                raise RecordError(f"{key_text}.json is not valid JSON: {meta.message}")
            if isinstance(meta, dict):
                caption = caption_value(meta.get(self.options.text_col))
        row = {
            "id": row_id(self.id_key, key),
            "source": self.source_text,
            "image": {"path": None, "bytes": members[image_ext]} if image_ext else None,
            "caption": caption,
            "key": key_text,
            "json": meta_text,
        }
        for warning in [bad_name, *warnings]:
            if warning:
                add_warning(row, warning)
        return row

    def _events(self) -> Iterator[tuple[str, dict[str, bytes]] | tuple[Damage, str | None]]:
        """(key, members) per sample, and (damage, key of the last member before it)."""
        key, members, ignored = None, {}, 0
        with open(self.path, "rb") as f:
            for event in tar_members(f):
                if isinstance(event, Damage):
                    # The sample being read stays open: members after a resync with the same
                    # key still join it, so a key never gives two rows.
                    yield event, key
                    continue
                match = _WDS_KEY.match(os.fsdecode(event.name))
                if not match:
                    ignored += 1  # no extension: not part of a sample
                    continue
                member_key, ext = match.group(1), match.group(2).lower()
                if member_key != key and key is not None:
                    yield key, members
                    members = {}
                key = member_key
                members[ext] = event.data
        if key is not None:
            yield key, members
        self.notes["ignored_tar_members"] = ignored

    def records(self, part: Slice | None = None) -> Iterator[tuple[dict | BadRecord, int | str]]:
        for first, second in self._events():
            if isinstance(first, Damage):
                after = f"after sample {valid_text(second)!r}" if second else "before any sample"
                message = f"tar shard damaged {after}: {first.message}"
                yield self._bad(f"#damage@{first.offset}", message), f"byte {first.offset}"
                continue
            key, members = first, second
            key_text = valid_text(key)
            try:
                yield self._sample_row(key, members), f"sample {key_text}"
            except RecordError as e:
                yield self._bad(key, str(e), key=key_text), f"sample {key_text}"
