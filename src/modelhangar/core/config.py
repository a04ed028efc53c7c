"""Settings read from the environment (and overridden by command-line flags)."""

from __future__ import annotations

import os
import re
import tomllib
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
    upload_expiry: float = 86400.0
    # Retention policies from the config file's [[retention]] tables, run by the server's schedule.
    policies: tuple[dict[str, object], ...] = ()
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


class ConfigError(ValueError):
    """The config file or an environment variable has a value we cannot use."""


def read_config_file(path: Path) -> dict[str, object]:
    """The config file as a dict ({} when there is none)."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        return {}
    except (tomllib.TOMLDecodeError, OSError) as e:
        raise ConfigError(f"{path}: {e}") from e


def _section(doc: dict[str, object], name: str) -> dict[str, object]:
    value = doc.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"[{name}] must be a table")
    return value


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Settings from HANGAR_* environment variables over the config file, with defaults.

    The config file is `$HANGAR_CONFIG`, else `$HANGAR_HOME/config.toml`:

        [trash]
        retention = "24h"
        [gc]
        interval = "10m"
        grace = "1h"
        [[retention]]            # run by the server after each GC round
        match = "scratch-*"
        older_than = "30d"
        keep_last = 3
    """
    e = dict(os.environ if env is None else env)
    home = Path(e.get("HANGAR_HOME") or Path.home() / ".hangar").expanduser().absolute()
    doc = read_config_file(Path(e.get("HANGAR_CONFIG") or home / "config.toml"))
    trash, gcs, server = _section(doc, "trash"), _section(doc, "gc"), _section(doc, "server")

    def duration(var: str, section: dict[str, object], key: str, default: str) -> float:
        raw = e.get(var) or section.get(key) or default
        try:
            return parse_duration(str(raw))
        except ValueError as err:
            raise ConfigError(f"{var}: {err}") from err

    policies = doc.get("retention", [])
    if not isinstance(policies, list) or not all(isinstance(p, dict) for p in policies):
        raise ConfigError("[[retention]] entries must be tables")
    host, port = parse_host(e.get("HANGAR_HOST") or str(server.get("host") or f"127.0.0.1:{DEFAULT_PORT}"))
    return Settings(
        home=home,
        database_url=e.get("HANGAR_DATABASE_URL")
        or str(doc.get("database_url") or default_database_url(home)),
        host=host,
        port=port,
        gc_grace=duration("HANGAR_GC_GRACE", gcs, "grace", "1h"),
        trash_retention=duration("HANGAR_TRASH_RETENTION", trash, "retention", "24h"),
        gc_interval=duration("HANGAR_GC_INTERVAL", gcs, "interval", "10m"),
        upload_expiry=duration("HANGAR_UPLOAD_EXPIRY", gcs, "upload_expiry", "24h"),
        policies=tuple(policies),
    )
