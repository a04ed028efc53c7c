"""The one exception commands raise to end with a one-line message and exit code 1."""

from __future__ import annotations


class CliError(Exception):
    """A failure worth one line on stderr (`hangar: <message>`) and exit code 1."""


class UsageError(CliError):
    """Invalid command-line arguments; `prog` names the (sub)command whose help explains them."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog
