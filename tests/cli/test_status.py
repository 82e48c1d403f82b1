"""Before the progress bar there is the inputs' scan (a JSON Lines file of ten million rows is
parsed once for its columns: seconds): a terminal sees a spinner meanwhile; a pipe sees
nothing."""

import os
import subprocess
import sys

from tests.conftest import write_jsonl

TEXT = "reading the inputs' columns"


def run_on_terminal(args: list[str]) -> str:
    """What a terminal shows for `mmtok args` (stdout and stderr on one pseudo-terminal)."""
    master, slave = os.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "mmtok", *args],
            stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, timeout=120,
        )  # fmt: skip
    finally:
        os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 1 << 16)
        except OSError:  # EIO: the terminal's other end is closed and read to its end
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert done.returncode == 0
    return b"".join(chunks).decode(errors="replace")


def test_a_terminal_sees_a_spinner_while_the_inputs_are_scanned(tmp_path, image_files):
    rows = write_jsonl(tmp_path / "rows.jsonl", [{"image": str(image_files["tiny_1x1.png"])}])
    assert TEXT in run_on_terminal(["probe", str(rows)])
    piped = subprocess.run(
        [sys.executable, "-m", "mmtok", "probe", str(rows)], capture_output=True, text=True
    )
    assert piped.returncode == 0 and TEXT not in piped.stdout + piped.stderr
