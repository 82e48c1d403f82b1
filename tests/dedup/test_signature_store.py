"""A dedup killed after publishing its output but before removing its signature store: the
next run removes the leftover store (mmtok's own, older than the output) instead of asking
for --resume; a store newer than the output (a new run into the same folder) is kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

DRIVER = """
import os, sys
import mmtok.commands.dedup as dedup
def crash(store):
    os._exit(9)
dedup.remove_signature_store = crash
from mmtok.cli.entry import main
sys.argv = ["mmtok", *sys.argv[1:]]
main()
"""


def run(*args: str, driver: bool = False) -> subprocess.CompletedProcess:
    head = [sys.executable, "-c", DRIVER] if driver else [sys.executable, "-m", "mmtok"]
    return subprocess.run([*head, *args], capture_output=True, text=True, timeout=300)


def test_a_store_left_after_the_publish_is_removed_by_the_next_run(tmp_path, image_files):
    rows = [
        {"image": str(p), "caption": f"a photo {i % 3}"} for i, p in enumerate(image_files.values())
    ]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows * 2))
    out = tmp_path / "out"
    store = tmp_path / ".out.mmtok-signatures"
    killed = run("dedup", str(source), "-o", str(out), "-w", "1", driver=True)
    assert killed.returncode == 9, killed.stderr  # killed right after the publish
    assert (out / "__mmtok__" / "manifest.json").exists() and store.is_dir()

    again = run("dedup", str(source), "-o", str(out), "-w", "1", "--resume")
    assert "already complete" in again.stderr, again.stderr  # the output was complete
    assert not store.exists()  # and the leftover store is gone
    assert run("dedup", str(source), "-o", str(tmp_path / "other"), "-w", "1").returncode == 0


def test_a_store_newer_than_the_output_is_kept(tmp_path, image_files):
    rows = [{"image": str(p), "caption": "c"} for p in image_files.values()]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    assert run("dedup", str(source), "-o", str(out), "-w", "1").returncode == 0
    store = tmp_path / ".out.mmtok-signatures"
    store.mkdir()  # as a newer run into the same folder, killed in its signature pass, leaves it
    later = time.time() + 5
    os.utime(store, (later, later))
    result = run("dedup", str(source), "-o", str(out), "-w", "1")
    assert result.returncode == 2  # the output exists: --overwrite or --resume
    assert store.is_dir()  # the newer run's store is kept
