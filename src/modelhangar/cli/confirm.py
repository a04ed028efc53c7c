"""Asking before a store-wide delete: on a terminal only, so scripts (and `--yes`) never wait."""

from __future__ import annotations

import sys

from modelhangar.cli.errors import CliError


def asks(yes: bool) -> bool:
    """Whether to ask: not told `--yes`, and both stdin and stderr are a terminal (a person is there)."""
    return not yes and sys.stdin.isatty() and sys.stderr.isatty()


def confirm(preview: list[str], question: str) -> None:
    """Show what would happen and ask `question`; anything but `y`/`yes` cancels (CliError)."""
    for line in preview:
        print(line, file=sys.stderr)
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline()
    if answer.strip().lower() not in ("y", "yes"):
        if not answer.endswith("\n"):
            print(file=sys.stderr)
        raise CliError("cancelled; nothing was deleted")
