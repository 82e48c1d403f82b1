"""A short run of benchmarks/faults.py: real runs of every command killed (SIGINT, SIGKILL)
at random instants, resumed until complete, and checked row by row."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "faults.py"


@pytest.mark.slow
def test_random_kills_then_resume_lose_and_duplicate_nothing():
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--trials", "2", "--rows", "300", "--seed", "1"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout.splitlines()[-1])
    assert set(counts) == {"probe", "filter", "tile", "estimate-budget", "dedup"}
    assert all(c["failures"] == 0 for c in counts.values()), result.stdout
