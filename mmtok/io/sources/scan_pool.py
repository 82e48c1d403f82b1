"""The schema scan of big JSON Lines inputs, in parts, by a pool of processes.

JSON has no schema, so every line of a JSON Lines input is parsed once before any slice is
planned, to learn its columns' types, its row count and where its batches start
(`JsonLinesSource._scan`). In the main process alone that is about 2 us per row: 20 s of a
ten-million-row file during which no worker has anything to do. Here files are cut just after
a line end every `SCAN_PART_BYTES`, the parts are scanned by processes forked from the worker
server, and what they find is added up in file order (`ScanTotals`): the keys in the order
they first appear, every (key, type) pair, the counts, and the slice marks at every
`batch_rows`-th record of the file, which is what the scan in one pass finds (tested). A file
that could not be read to its end is scanned again in one pass, as before.
"""

from __future__ import annotations

import os
import signal
import traceback
from collections.abc import Iterator
from multiprocessing.connection import Connection

from mmtok.io.sources.base import Source
from mmtok.io.sources.jsonl import JsonLinesSource, ScanPart, ScanTotals

SCAN_PART_BYTES = 4 << 20  # ~40,000 rows of a typical caption file: ~0.1 s of scanning
PARALLEL_SCAN_BYTES = 8 << 20  # less than this is scanned in the main process (a pool costs more)
_FIND = 1 << 16  # bytes read at a time while looking for a line end

Unit = tuple[JsonLinesSource, int, "int | None"]  # (source, first byte, stop)


def scan_in_parallel(sources: list[Source], workers: int) -> None:
    """Scan the JSON Lines files among `sources` that are not scanned yet with up to `workers`
    processes, when they are big enough to gain from it; the rest scan themselves when asked."""
    if workers < 2:
        return
    units: list[Unit] = []
    size = 0
    for source in sources:
        if not _scans_in_parts(source):
            continue
        assert isinstance(source, JsonLinesSource)
        try:
            cuts = [0] if source.path.endswith(".gz") else line_cuts(source.path, SCAN_PART_BYTES)
            size += os.path.getsize(source.path)
        except OSError:
            continue  # the scan in one pass meets the error and reports it
        units += [(source, a, b) for a, b in zip(cuts, [*cuts[1:], None], strict=True)]
    if len(units) < 2 or size < PARALLEL_SCAN_BYTES:
        return
    totals: dict[int, ScanTotals] = {}
    for (source, _, _), part in zip(units, _scanned(units, workers), strict=True):
        totals.setdefault(id(source), ScanTotals(source.options.batch_rows)).add(part)
    for source in dict.fromkeys(unit[0] for unit in units):
        scan = totals[id(source)]
        if scan.unreadable:
            source._scan()  # read as one pass reads it: the rest of the file is one reject
        else:
            source.use_scan(scan)


def _scans_in_parts(source: Source) -> bool:
    """A JSON Lines file (not an array document) that has not been scanned yet."""
    return (
        isinstance(source, JsonLinesSource)
        and type(source)._scan_chunks is JsonLinesSource._scan_chunks
        and not hasattr(source, "_fields")
    )


def line_cuts(path: str, every: int) -> list[int]:
    """0, then byte offsets just after a \\n, about `every` bytes apart (a line longer than
    that is not cut). Lines end at \\n, \\r\\n or a lone \\r: a cut after a \\n leaves every
    one of them whole, and only the first part holds a byte-order mark."""
    size = os.path.getsize(path)
    cuts = [0]
    with open(path, "rb") as f:
        while cuts[-1] + every < size:
            f.seek(cuts[-1] + every - 1)  # a \n there: the cut is right after it
            at = _after_line_end(f)
            if at is None or at >= size:
                break
            cuts.append(at)
    return cuts


def _after_line_end(f) -> int | None:
    """The offset just after the next \\n from `f`'s position, or None at the end."""
    while block := f.read(_FIND):
        found = block.find(b"\n")
        if found >= 0:
            return f.tell() - len(block) + found + 1
    return None


def _scanned(units: list[Unit], workers: int) -> Iterator[ScanPart]:
    """`scan_part` of every unit, in order, by up to `workers` processes. Unit i goes to
    process i mod n, which answers its units in order, so the answers come back in order
    too; two units in flight per process, so memory does not grow with the file (a part keeps
    every record's place). Plain pipes, as the executor's workers use: a pool with queues
    leaves semaphores behind when mmtok is killed."""
    from mmtok.engine.process import sigint_blocked, worker_context

    context = worker_context()
    n = min(workers, len(units))
    conns, processes = [], []
    done = False
    try:
        # Processes start with Ctrl-C blocked, then ignore it (`_scanner`): the terminal's
        # SIGINT is this process's to handle.
        with sigint_blocked():
            for _ in range(n):
                conn, child = context.Pipe()
                process = context.Process(target=_scanner, args=(child,), name="mmtok-scan")
                process.daemon = True
                process.start()
                child.close()
                conns.append(conn)
                processes.append(process)
        for i, unit in enumerate(units[: 2 * n]):
            _send(conns[i % n], unit)
        for i in range(len(units)):
            try:
                answer = conns[i % n].recv()
            except EOFError:
                raise RuntimeError(f"a scan process ended ({processes[i % n].exitcode})") from None
            if i + 2 * n < len(units):
                _send(conns[i % n], units[i + 2 * n])
            if isinstance(answer, str):
                raise RemoteError(answer)
            yield answer
        done = True
    finally:
        for conn in conns:
            conn.close()  # an idle scanner ends at the end of its pipe
        for process in processes:
            if not done:
                process.kill()  # it holds nothing: mid-part, it is ended
            process.join()


class RemoteError(RuntimeError):
    """An exception raised in a scan process, with its traceback."""


def _send(conn: Connection, unit: Unit) -> None:
    source, start, stop = unit
    # a whole file keeps only its marks; a part keeps every record's place, as the number of
    # records before it (which decides where the batches start) is not known yet
    every = source.options.batch_rows if (start, stop) == (0, None) else 1
    conn.send((source, start, stop, every))


def _scanner(conn: Connection) -> None:
    """A scan process: a part's `ScanPart` (or the traceback it raised) for each unit."""
    from mmtok.engine.workers import die_with_parent

    die_with_parent(os.getppid())  # the worker server (or, where workers spawn, mmtok)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    while True:
        try:
            source, start, stop, every = conn.recv()
        except EOFError:
            return
        try:
            answer: ScanPart | str = source.scan_part(start, stop, every)
        except Exception:
            answer = traceback.format_exc()
        conn.send(answer)
