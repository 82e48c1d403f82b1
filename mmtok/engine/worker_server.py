"""Imported by the worker server (multiprocessing's forkserver) first, before the modules it
preloads for the workers (`mmtok.engine.process.PRELOAD`); nothing else imports it.

The server dies with the process that started it (PR_SET_PDEATHSIG on Linux), and every worker
dies with the server: the kernel ends the whole tree when mmtok is killed, even workers hung in
C code. (multiprocessing's own rule, "the server exits when every client has closed its pipe",
does not hold here: each worker keeps a copy of that pipe.)
"""

from __future__ import annotations

import os

from mmtok.engine.process import block_pandas
from mmtok.engine.workers import die_with_parent

SERVER_PID = os.getpid()  # read by the workers, which are forks of this process

die_with_parent(os.getppid())
block_pandas()  # once here, for every worker
