"""The `mmtok` executable. It imports the commands only once it runs, so a Ctrl-C at any
instant, even while Python loads them, ends in one line and exit 130; a bad flag is one line
and exit 2, like every other user error."""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import threading

# the commands that run worker processes
WORKER_COMMANDS = {
    "probe",
    "tile",
    "estimate-budget",
    "filter",
    "dedup",
    "embed",
    "sample-frames",
    "tokenize-images",
    "run",
}


def main() -> None:
    try:
        # the command is the first word that is not an option (the root has only flags)
        name = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
        with _ctrl_c_after():  # a Ctrl-C inside an extension's import breaks it for good
            if name in WORKER_COMMANDS and not {"-h", "--help"} & set(sys.argv):
                from mmtok.engine.process import start_worker_server

                # first, before Typer and rich: it loads what workers need while this
                # process starts, and the first workers wait for it
                start_worker_server()
            import typer

            from mmtok.cli import output
            from mmtok.cli.app import COMMANDS, build
            from mmtok.cli.output import print_error
            from mmtok.errors import MmtokError

            if name in COMMANDS:
                app = build([name])
            else:  # the root's help, --version, or an unknown command: names and summaries
                completing = any(k.endswith("_COMPLETE") for k in os.environ)
                app = build(COMMANDS, listing=not completing)
        try:
            code = app(standalone_mode=False)
        except typer.TyperException as e:  # the parser's errors: bad flags, bad values
            message = e.format_message() if hasattr(e, "format_message") else str(e)
            ctx = getattr(e, "ctx", None)
            hint = f"{ctx.command_path} --help" if ctx is not None else "mmtok --help"
            if message.strip():  # (none when a bare `mmtok` printed its help)
                print_error(MmtokError(message, hint=f"see {hint}"))
            code = getattr(e, "exit_code", 2)
        except typer.Abort:
            raise KeyboardInterrupt from None
        if code == 130 and not output.errors_printed:  # Typer's own exit on a Ctrl-C
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        code = 130
    code = code if isinstance(code, int) else 0
    # The outcome is decided and said. Python's shutdown (joining worker processes) can take a
    # while, and a Ctrl-C in it would end the process by the signal, with no code: exit now,
    # with the outcome's code.
    sys.stdout.flush()
    sys.stderr.flush()
    if code == 130:
        # Interrupted: the run has stopped, cleaned up and said so. Python's own exit can
        # still report the Ctrl-C as death by signal (-2, seen about 1 in 10 trials when it
        # lands in Typer's parsing), so leave with the code now.
        os._exit(130)
    signal.signal(signal.SIGINT, lambda *_: os._exit(code))
    if code == 0 and _is_the_executable() and not _other_threads():
        # Done and said: what is left of Python's exit is tearing down modules (pyarrow,
        # numpy...), 40-60 ms of a run that nothing needs. The exit handlers still run (the
        # worker server is reaped, temporary folders go, Ray shuts down). Only after success:
        # a failed run may leave a file open whose buffer Python's exit would flush.
        atexit._run_exitfuncs()
        _flush()
        os._exit(0)
    sys.exit(code)


@contextlib.contextmanager
def _ctrl_c_after():
    """A Ctrl-C meanwhile is raised at the end, not inside: a KeyboardInterrupt in the middle
    of numpy's import left it half-loaded, and the next import of it failed with "cannot load
    module more than once per process" and a traceback (about 0.3 s after start)."""
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield  # Ctrl-C ignored (a background job of a script) or handled by someone else
        return
    pending: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pending:
        raise KeyboardInterrupt


def _is_the_executable() -> bool:
    """This process is `python -m mmtok` or the installed `mmtok` script, which end with
    `main`; not a program that calls `main` and goes on."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None:
        return spec.name == "mmtok.__main__"
    return os.path.basename(getattr(main, "__file__", None) or "") == "mmtok"


def _other_threads() -> bool:
    """A thread Python's exit would wait for (none of mmtok's own: theirs are daemons)."""
    me = threading.current_thread()
    return any(t is not me and not t.daemon and t.is_alive() for t in threading.enumerate())


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more to say
            stream.flush()
