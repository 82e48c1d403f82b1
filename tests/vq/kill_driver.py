"""Run `mmtok ARGS...` and SIGKILL the process at the N-th time the sink reaches STEP.

    python kill_driver.py STEP N ARGS...

A real kill (no cleanup, no finally blocks) at a named step of the commit protocol
(`mmtok.io.sink.crash_point`), so a test can resume from a known, reproducible point.
"""

import os
import signal
import sys


def crash_point_at(step: str, nth: int):
    seen = 0

    def crash_point(name: str) -> None:
        nonlocal seen
        if name == step:
            seen += 1
            if seen == nth:
                os.kill(os.getpid(), signal.SIGKILL)

    return crash_point


if __name__ == "__main__":  # not in the spawned workers, which import this file again
    import mmtok.io.sink as sink

    sink.crash_point = crash_point_at(sys.argv[1], int(sys.argv[2]))
    sys.argv = ["mmtok", *sys.argv[3:]]
    from mmtok.cli.entry import main

    main()
