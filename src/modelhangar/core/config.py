"""Settings read from the environment (and overridden by command-line flags)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

DEFAULT_PORT = 11435
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)?")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, None: 1.0}


def parse_duration(text: str) -> float:
    """Seconds in a duration such as `0`, `90`, `30m`, `24h`, `7d` or `1h30m`."""
    s = text.strip().lower()
    if not s:
        raise ValueError("empty duration")
    pos, total = 0, 0.0
    while pos < len(s):
        m = _DURATION.match(s, pos)
        if not m or m.end() == pos:
            raise ValueError(f"invalid duration {text!r}: use e.g. 30m, 24h, 7d")
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    return total


def format_duration(seconds: float) -> str:
    """The shortest exact form of a duration in the units parse_duration reads."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def parse_host(text: str) -> tuple[str, int]:
    """`host:port`, `:port`, `host` or `http://host:port` into (host, port)."""
    s = text.strip()
    for prefix in ("http://", "https://"):
        if s.startswith(prefix):
            s = s[len(prefix) :]
    s = s.rstrip("/")
    if s.startswith("["):  # [::1]:port
        host, _, rest = s[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else DEFAULT_PORT
    host, sep, port = s.rpartition(":")
    if not sep:
        return s or "127.0.0.1", DEFAULT_PORT
    return host or "127.0.0.1", int(port)


@dataclass(frozen=True)
class Settings:
    """Where the store lives and how it behaves; one instance per process."""

    home: Path
    database_url: str
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    gc_grace: float = 3600.0
    trash_retention: float = 86400.0
    gc_interval: float = 600.0
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def blobs_dir(self) -> Path:
        return self.home / "blobs"

    @property
    def tmp_dir(self) -> Path:
        return self.home / "tmp"

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def with_home(self, home: Path) -> Settings:
        """The same settings over another data directory (its default catalog too)."""
        url = self.database_url
        if url == default_database_url(self.home):
            url = default_database_url(home)
        return replace(self, home=home, database_url=url)


def default_database_url(home: Path) -> str:
    return f"sqlite:///{home / 'catalog.db'}"


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Settings from HANGAR_* environment variables, with documented defaults."""
    e = dict(os.environ if env is None else env)
    home = Path(e.get("HANGAR_HOME") or Path.home() / ".hangar").expanduser().absolute()
    host, port = parse_host(e.get("HANGAR_HOST", f"127.0.0.1:{DEFAULT_PORT}"))
    return Settings(
        home=home,
        database_url=e.get("HANGAR_DATABASE_URL") or default_database_url(home),
        host=host,
        port=port,
        gc_grace=parse_duration(e.get("HANGAR_GC_GRACE", "1h")),
        trash_retention=parse_duration(e.get("HANGAR_TRASH_RETENTION", "24h")),
        gc_interval=parse_duration(e.get("HANGAR_GC_INTERVAL", "10m")),
    )
