"""Rendering: human sizes and times (as `ollama` prints them), plain tables and JSON."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

_UNITS = (("TB", 1000**4), ("GB", 1000**3), ("MB", 1000**2), ("KB", 1000))


def human_size(n: int | float | None) -> str:
    """Decimal units like Ollama's `format.HumanBytes`: `512 B`, `1.2 MB`, `4.7 GB`, `13 GB`."""
    if n is None:
        return "-"
    for unit, scale in _UNITS:
        if n >= scale:
            value = n / scale
            if value >= 10 or value == math.trunc(value):
                return f"{int(value)} {unit}"
            return f"{value:.1f} {unit}"
    return f"{int(n)} B"


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """`1 blob`, `2 blobs` (or `nouns`: `2 trash entries`)."""
    return f"{n} {noun}" if n == 1 else f"{n} {nouns or noun + 's'}"


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp (Go's 9 fractional digits and `Z` too) or a Unix time, else None."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, tz=UTC)
    if not isinstance(value, str) or not value:
        return None
    s = value.strip().replace("Z", "+00:00")
    if "." in s:  # Python reads at most 6 fractional digits
        head, _, rest = s.partition(".")
        digits = len(rest) - len(rest.lstrip("0123456789"))
        s = f"{head}.{rest[: min(digits, 6)]}{rest[digits:]}"
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _span(seconds: float) -> str:
    if seconds < 1:
        return "Less than a second"
    if seconds < 2:
        return "1 second"
    if seconds < 60:
        return f"{int(seconds)} seconds"
    minutes = seconds / 60
    if round(minutes) == 1:
        return "About a minute"
    if minutes < 60:
        return f"{int(minutes)} minutes"
    hours = seconds / 3600
    if round(hours) == 1:
        return "About an hour"
    if hours < 48:
        return f"{int(hours)} hours"
    if hours < 24 * 7 * 2:
        return f"{int(hours / 24)} days"
    if hours < 24 * 30 * 2:
        return f"{int(hours / 24 / 7)} weeks"
    if hours < 24 * 365 * 2:
        return f"{int(hours / 24 / 30)} months"
    return f"{int(hours / 24 / 365)} years"


def human_time(value: Any, *, now: datetime | None = None, never: str = "Never") -> str:
    """Relative time like Ollama's `format.HumanTime`: `2 minutes ago`, `About an hour from now`."""
    dt = parse_time(value)
    if dt is None or dt.year <= 1:
        return never
    delta = ((now or datetime.now(UTC)) - dt).total_seconds()
    if delta >= 0:
        return f"{_span(delta)} ago"
    return f"{_span(-delta)} from now"


def console(*, stderr: bool = False) -> Console:
    """A console that never wraps or truncates when piped (scripts read whole lines)."""
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else 100_000
    return Console(file=stream, width=width, highlight=False, soft_wrap=True)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Columns aligned with spaces, no borders and no trailing blanks, like `ollama list`."""
    table = Table(box=None, pad_edge=False, show_edge=False, padding=(0, 3, 0, 0), header_style="")
    for h in headers:
        table.add_column(h, no_wrap=True)
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    out = console()
    with out.capture() as captured:
        out.print(table)
    for line in captured.get().splitlines():
        print(line.rstrip())


def print_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2, ensure_ascii=False))


def say(message: str) -> None:
    """A plain line on stdout (no markup is interpreted)."""
    print(message, flush=True)


def warn(message: str) -> None:
    print(f"hangar: {message}", file=sys.stderr, flush=True)
