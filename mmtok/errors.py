"""Errors that stop a run with a clean message (bad flags, bad configuration, unreadable inputs).

Bad *rows* never raise: stages turn them into rejects with a reason code (see `mmtok.reasons`).
"""


class MmtokError(Exception):
    """A user-facing error: the CLI prints the message (no traceback) and exits with `exit_code`."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint
