"""`resolve_image_path` answers a plain absolute path without `normpath(join(...))` (the hot
path of every JSON Lines row): the answer is the same as the full rule's on every kind of path."""

from __future__ import annotations

import os

import pytest

from mmtok.io.encoding import path_text
from mmtok.io.sources.values import resolve_image_path

BASE = "/data/in put"
PATHS = [
    "/data/a.jpg", "/a/b/c/d.png", "/x", "/data/caf\udce9.jpg", "/data/café photo ü.jpg",
    "/a/./b.jpg", "/a/../b.jpg", "/a//b.jpg", "//a/b.jpg", "///a.jpg", "/a/b/", "/", "/.",
    "/..", "/a/.hidden.jpg", "/a/b.", "/a/b..jpg", "/a/..b/c.jpg", "rel/a.jpg", "./a.jpg",
    "../a.jpg", "a.jpg", "~/a.jpg", "~", "/a\\b.jpg", "/a b/c d.jpg", "/a/b.jpg/.",
]  # fmt: skip


@pytest.mark.parametrize("value", PATHS)
def test_plain_absolute_paths_resolve_as_the_full_rule(value):
    full = path_text(os.path.normpath(os.path.join(BASE, os.path.expanduser(value))))
    assert resolve_image_path(value, BASE) == full
