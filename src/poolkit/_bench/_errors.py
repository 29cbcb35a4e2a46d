"""Exit codes of ``poolkit bench`` and the error that carries one."""

from __future__ import annotations

__all__ = (
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_UNEXPECTED",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "BenchError",
)

#: The benchmark ran to the end (warnings, if any, are in the report).
EXIT_OK = 0
#: An unexpected error (a bug, or a failure that fits no other code).
EXIT_UNEXPECTED = 1
#: Bad usage: an invalid option or URL, or the backend's extra is not installed.
EXIT_USAGE = 2
#: The server could not be reached, refused the credentials, or failed the first request.
EXIT_UNREACHABLE = 3
#: Interrupted with Ctrl-C (128 + SIGINT, as shells do).
EXIT_INTERRUPTED = 130


class BenchError(Exception):
    """A failure reported as one line on stderr and an exit code, without a traceback.

    The message must already be redacted: it is printed as is.
    """

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
