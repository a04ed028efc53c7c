"""Settings: one declared list of knobs, read from the environment over the config file, with defaults.

Every knob is declared once in `KNOBS` (its environment variable, its place in `config.toml`, its
type, default and meaning); `Settings` has one field per knob, `load_settings` fills them, and the
README's configuration table is checked against `KNOBS` by `tests/test_docs.py`. A key the config
file does not know, or a value a knob cannot take, is an error that names the file, the line and
the key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

DEFAULT_PORT = 11435
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)?")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, None: 1.0}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib|t|tb|tib)?")
_SIZE_UNITS = {
    None: 1,
    "b": 1,
    "k": 1 << 10,
    "kb": 1000,
    "kib": 1 << 10,
    "m": 1 << 20,
    "mb": 1000**2,
    "mib": 1 << 20,
    "g": 1 << 30,
    "gb": 1000**3,
    "gib": 1 << 30,
    "t": 1 << 40,
    "tb": 1000**4,
    "tib": 1 << 40,
}
REUSE_FUSE_MAX = 60.0


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


def parse_size(text: str) -> int:
    """Bytes in a size such as `4096`, `8MiB`, `2 GB` or `512k` (k, m, g, t are powers of 1024)."""
    m = _SIZE.fullmatch(text.strip().lower())
    if not m:
        raise ValueError(f"invalid size {text!r}: use e.g. 8MiB, 2GB, 4096")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])


def parse_host(text: str) -> tuple[str, int]:
    """`host:port`, `:port`, a bare `port`, `host` or `http://host:port` into (host, port)."""
    s = text.strip()
    for prefix in ("http://", "https://"):
        if s.startswith(prefix):
            s = s[len(prefix) :]
    s = s.rstrip("/")
    if s.isdigit():  # a bare port: `--host 54489`
        return "127.0.0.1", int(s)
    if s.startswith("["):  # [::1]:port
        host, _, rest = s[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else DEFAULT_PORT
    if s.count(":") > 1:  # a bare IPv6 address
        return s, DEFAULT_PORT
    host, sep, port = s.rpartition(":")
    if not sep:
        return s or "127.0.0.1", DEFAULT_PORT
    return host or "127.0.0.1", int(port)


def _bool(text: str) -> bool:
    s = text.strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"invalid boolean {text!r}: use true or false")


def _fuse(text: str) -> float:
    seconds = parse_duration(text)
    if seconds > REUSE_FUSE_MAX:
        raise ValueError(f"the reuse fuse is at most {REUSE_FUSE_MAX:g}s (got {text!r})")
    return seconds


def _blob_store(text: str) -> str:
    s = text.strip()
    if s.startswith("file:"):  # another directory laid out as a data directory's (DIR/blobs, DIR/tmp)
        path = s[5:].removeprefix("//")
        if not path.startswith("/"):
            raise ValueError(f"invalid blob store {text!r}: file: needs an absolute path (file:/DIR)")
        return s
    if s and (not s.startswith("s3://") or not s[5:].split("/", 1)[0]):
        raise ValueError(
            f"invalid blob store {text!r}: leave it empty, or use s3://BUCKET[/PREFIX] or file:/DIR"
        )
    return s


def _part_size(text: str) -> int:
    n = parse_size(text)
    if n < 5 << 20:
        raise ValueError(f"the part size is at least 5MiB, as S3 requires (got {text!r})")
    return n


def _count(text: str) -> int:
    n = int(text.strip())
    if n < 1:
        raise ValueError(f"must be at least 1 (got {text!r})")
    return n


def _names(text: str) -> tuple[str, ...]:
    """A comma- or space-separated list, e.g. `https://app.example, chrome-extension://*`."""
    return tuple(x for x in re.split(r"[\s,]+", text.strip()) if x)


def parse_rate(text: str) -> tuple[int, float]:
    """(bytes, seconds) of a minimum rate such as `64KiB/30s`: at least that many bytes in every
    such span of waiting; `0` turns the check off."""
    s = text.strip()
    if s in ("0", ""):
        return 0, 0.0
    size, sep, span = s.partition("/")
    if not sep:
        raise ValueError(f"invalid rate {text!r}: use e.g. 64KiB/30s")
    seconds = parse_duration(span)
    if seconds <= 0:
        raise ValueError(f"invalid rate {text!r}: the span must be longer than 0")
    return parse_size(size), seconds


def _auth_mode(text: str) -> str:
    mode = text.strip().lower()
    if mode not in ("local", "required"):
        raise ValueError(f"invalid auth mode {text!r}: use local or required")
    return mode


def _visibility(text: str) -> str:
    value = text.strip().lower()
    if value not in ("public", "private"):
        raise ValueError(f"invalid visibility {text!r}: use private or public")
    return value


def _log_level(text: str) -> str:
    level = text.strip().lower()
    if level not in ("debug", "info", "warning", "error", "critical"):
        raise ValueError(f"invalid log level {text!r}: use debug, info, warning or error")
    return level


@dataclass(frozen=True)
class Knob:
    """One setting: where it is read from, how it is parsed, its default and what it means."""

    field: str
    env: str
    key: str
    """`section.key` in config.toml (or a top-level `key`)."""
    parse: Callable[[str], Any]
    default: str
    doc: str


# The one list of settings. The README's configuration table lists exactly these (tests/test_docs.py).
KNOBS: tuple[Knob, ...] = (
    Knob(
        "database_url",
        "HANGAR_DATABASE_URL",
        "database_url",
        str,
        "",
        "the catalog (default `sqlite:///$HANGAR_HOME/catalog.db`); `postgresql+psycopg://...` "
        "when several servers share a store",
    ),
    Knob(
        "blobs",
        "HANGAR_BLOBS",
        "blobs.store",
        _blob_store,
        "",
        "where blobs live: empty for files under `$HANGAR_HOME/blobs`, `file:/DIR` for files under "
        "`/DIR/blobs`, or `s3://BUCKET[/PREFIX]` for an S3-compatible bucket (endpoint, region and "
        "credentials the standard AWS way: `AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, "
        "`AWS_SECRET_ACCESS_KEY`, `AWS_PROFILE`); checked at start-up against the place the store's "
        "catalog records (`hangar migrate-blobs` moves them)",
    ),
    Knob(
        "s3_path_style",
        "HANGAR_S3_PATH_STYLE",
        "blobs.path_style",
        _bool,
        "false",
        "address the bucket in the path (`http://host/BUCKET/key`), as MinIO-like servers want, instead "
        "of a virtual host",
    ),
    Knob(
        "s3_part_size",
        "HANGAR_S3_PART_SIZE",
        "blobs.part_size",
        _part_size,
        "16MiB",
        "the size of the multipart parts an upload streams to the bucket in (at least 5MiB; a few are in "
        "flight at once per upload)",
    ),
    Knob(
        "blob_redirect",
        "HANGAR_BLOB_REDIRECT",
        "blobs.redirect",
        _bool,
        "false",
        "with an S3 blob store, answer a `/v2` blob GET with a 307 to a presigned URL of the object, so "
        "the bytes bypass the server",
    ),
    Knob(
        "host_port",
        "HANGAR_HOST",
        "server.host",
        parse_host,
        f"127.0.0.1:{DEFAULT_PORT}",
        "where `hangar serve` listens and where client commands connect (`HOST:PORT` or a bare port)",
    ),
    Knob(
        "log_level",
        "HANGAR_LOG_LEVEL",
        "server.log_level",
        _log_level,
        "info",
        "the server's log: one line per request at `info`; `warning` logs only problems",
    ),
    Knob(
        "auth",
        "HANGAR_AUTH",
        "server.auth",
        _auth_mode,
        "local",
        "`local`: a request without a token from a loopback address is the local admin, any other needs "
        "a token; `required`: every request needs one (but `GET /`, `/api/version` and the `/v2/` challenge)",
    ),
    Knob(
        "default_visibility",
        "HANGAR_DEFAULT_VISIBILITY",
        "server.default_visibility",
        _visibility,
        "private",
        "the visibility of a model when it is created (`private`: only its owner sees it; or `public`)",
    ),
    Knob(
        "trash_retention",
        "HANGAR_TRASH_RETENTION",
        "trash.retention",
        parse_duration,
        "24h",
        "how long deleted models stay restorable; `0` deletes at once",
    ),
    Knob(
        "reuse_fuse",
        "HANGAR_REUSE_FUSE",
        "gc.reuse_fuse",
        _fuse,
        "30s",
        "a blob an upload or a client's HEAD used this recently is reclaimed this long after that use, "
        "by a timer (at most 60s), so a push about to name it does not fail",
    ),
    Knob(
        "gc_grace",
        "HANGAR_GC_GRACE",
        "gc.grace",
        parse_duration,
        "1h",
        "blobs uploaded but never named by a manifest are kept this long before GC reclaims them",
    ),
    Knob(
        "gc_interval",
        "HANGAR_GC_INTERVAL",
        "gc.interval",
        parse_duration,
        "10m",
        "how often the server runs retention policies and GC in the background",
    ),
    Knob(
        "last_used_flush",
        "HANGAR_LAST_USED_FLUSH",
        "server.last_used_flush",
        parse_duration,
        "30s",
        "how often the server writes when models were last pulled or shown (kept in memory meanwhile, "
        "written at shutdown too; a crash loses at most this much); `0` writes each use at once",
    ),
    Knob(
        "upload_expiry",
        "HANGAR_UPLOAD_EXPIRY",
        "gc.upload_expiry",
        parse_duration,
        "1h",
        "an unfinished `/v2` upload session idle this long expires (GC then reclaims it at once); an "
        "abandoned partial download is kept this long",
    ),
    Knob(
        "origins",
        "HANGAR_ORIGINS",
        "server.origins",
        _names,
        "",
        "web origins allowed besides the server's own and Ollama's defaults (localhost, 127.0.0.1 and "
        "0.0.0.0 on any port, `app://`, `file://`, `tauri://`, `vscode-webview://`), comma-separated, `*` "
        "as a wildcard; a request from any other origin is refused with 403",
    ),
    Knob(
        "max_body",
        "HANGAR_MAX_BODY",
        "server.max_body",
        parse_size,
        "4MiB",
        "the largest request body other than a blob upload (JSON requests, manifests); larger ones get 413",
    ),
    Knob(
        "max_text",
        "HANGAR_MAX_TEXT",
        "server.max_text",
        parse_size,
        "1MiB",
        "the largest text layer `/api/create` stores (each system, template, license and the messages)",
    ),
    Knob(
        "max_connections",
        "HANGAR_MAX_CONNECTIONS",
        "server.max_connections",
        _count,
        "1000",
        "connections served at once; more are answered 503 and closed (the server also raises its "
        "open-file limit to the hard limit at start)",
    ),
    Knob(
        "header_timeout",
        "HANGAR_HEADER_TIMEOUT",
        "server.header_timeout",
        parse_duration,
        "10s",
        "a connection that has not sent a whole request head this long after opening (or after starting "
        "one) is closed",
    ),
    Knob(
        "keep_alive",
        "HANGAR_KEEP_ALIVE",
        "server.keep_alive",
        parse_duration,
        "5s",
        "an idle keep-alive connection is closed after this long",
    ),
    Knob(
        "upload_sessions_per_client",
        "HANGAR_UPLOAD_SESSIONS_PER_CLIENT",
        "uploads.per_client",
        _count,
        "64",
        "unfinished `/v2` upload sessions one client may hold (a user when it sends its token, else an IP "
        "address); more are refused with 429",
    ),
    Knob(
        "upload_sessions",
        "HANGAR_UPLOAD_SESSIONS",
        "uploads.total",
        _count,
        "1024",
        "unfinished `/v2` upload sessions all clients together may hold; more are refused with 429",
    ),
    Knob(
        "pull_from",
        "HANGAR_PULL_FROM",
        "transfer.pull_from",
        _names,
        "",
        "registry hosts pulls may fetch from (`host`, `host:port`, `*.example.com`, `*`), comma-separated. "
        "Unset: admins pull from anywhere, others from any public address. Set: everyone, admins included, "
        "only from a listed host; loopback, private and link-local addresses only for admins or when "
        "listed by name",
    ),
    Knob(
        "transfers",
        "HANGAR_TRANSFERS",
        "transfer.concurrency",
        _count,
        "4",
        "pulls and pushes run at once, off the threads that answer requests",
    ),
    Knob(
        "transfer_queue",
        "HANGAR_TRANSFER_QUEUE",
        "transfer.queue",
        _count,
        "16",
        "pulls and pushes that may wait for a turn; beyond that they are answered 503 with `Retry-After`",
    ),
    Knob(
        "transfer_deadline",
        "HANGAR_TRANSFER_DEADLINE",
        "transfer.deadline",
        parse_duration,
        "24h",
        "the longest a pull or push may take",
    ),
    Knob(
        "transfer_min_rate",
        "HANGAR_TRANSFER_MIN_RATE",
        "transfer.min_rate",
        parse_rate,
        "64KiB/30s",
        "a pull or push whose registry sends or takes less than this (bytes per span of waiting) fails; `0` "
        "turns it off",
    ),
)
_BY_KEY = {k.key: k for k in KNOBS}
RETENTION_KEYS = ("match", "older_than", "unused_for", "keep_last", "untagged_for")
OTHER_ENV = ("HANGAR_HOME", "HANGAR_CONFIG")
"""Variables read outside `KNOBS`: where the data directory and the config file are."""


@dataclass(frozen=True)
class Settings:
    """Where the store lives and how it behaves; one instance per process."""

    home: Path
    database_url: str
    blobs: str = ""
    s3_path_style: bool = False
    s3_part_size: int = 16 << 20
    blob_redirect: bool = False
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    log_level: str = "info"
    auth: str = "local"
    default_visibility: str = "private"
    gc_grace: float = 3600.0
    reuse_fuse: float = 30.0
    trash_retention: float = 86400.0
    gc_interval: float = 600.0
    upload_expiry: float = 3600.0
    origins: tuple[str, ...] = ()
    max_body: int = 4 << 20
    max_text: int = 1 << 20
    max_connections: int = 1000
    header_timeout: float = 10.0
    keep_alive: float = 5.0
    upload_sessions_per_client: int = 64
    upload_sessions: int = 1024
    pull_from: tuple[str, ...] = ()
    transfers: int = 4
    transfer_queue: int = 16
    transfer_deadline: float = 86400.0
    transfer_min_rate: tuple[int, float] = (64 << 10, 30.0)
    last_used_flush: float = 30.0
    # Retention policies from the config file's [[retention]] tables, run by the server's schedule.
    policies: tuple[dict[str, object], ...] = ()
    config_path: Path | None = field(default=None, compare=False)

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


_SETTINGS_FIELDS = {f.name for f in fields(Settings)}


DEFAULT_CATALOG_FILE = "catalog.db"


def default_database_url(home: Path) -> str:
    return f"sqlite:///{home / DEFAULT_CATALOG_FILE}"


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


def _line_of(path: Path, section: str | None, key: str, nth: int = 0) -> int | None:
    """The line (1-based) where `key` is set in `[section]` (the nth such table), if it can be found."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    current: str | None = None
    seen = -1
    header = re.compile(r"\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    assign = re.compile(rf"\s*[\"']?{re.escape(key)}[\"']?\s*=")
    for i, line in enumerate(lines, 1):
        m = header.match(line)
        if m:
            current = m.group(1)
            if current == section:
                seen += 1
            continue
        if current == section and (section is None or seen == nth) and assign.match(line):
            return i
    return None


def _where(path: Path, section: str | None, key: str, nth: int = 0) -> str:
    line = _line_of(path, section, key, nth)
    return f"{path}:{line}" if line is not None else str(path)


def _file_values(doc: dict[str, object], path: Path) -> dict[str, tuple[str, str]]:
    """{knob key: (raw value, where)} from the config file; unknown sections and keys are errors."""
    out: dict[str, tuple[str, str]] = {}
    sections = {k.key.split(".")[0] for k in KNOBS if "." in k.key}
    for name, value in doc.items():
        if name == "retention":
            continue
        if isinstance(value, dict):
            if name not in sections:
                raise ConfigError(f"{_where(path, None, name)}: unknown section [{name}]")
            for key, inner in value.items():
                full = f"{name}.{key}"
                if full not in _BY_KEY:
                    known = ", ".join(k.key.split(".")[1] for k in KNOBS if k.key.startswith(name + "."))
                    raise ConfigError(
                        f"{_where(path, name, key)}: unknown key {key!r} in [{name}] (known: {known})"
                    )
                out[full] = (_scalar(inner), _where(path, name, key))
        elif name in _BY_KEY:
            out[name] = (_scalar(value), _where(path, None, name))
        else:
            raise ConfigError(f"{_where(path, None, name)}: unknown key {name!r}")
    return out


def _scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _policies(doc: dict[str, object], path: Path) -> tuple[dict[str, object], ...]:
    policies = doc.get("retention", [])
    if not isinstance(policies, list) or not all(isinstance(p, dict) for p in policies):
        raise ConfigError(f"{_where(path, None, 'retention')}: [[retention]] entries must be tables")
    for i, p in enumerate(policies):
        for key in p:
            if key not in RETENTION_KEYS:
                raise ConfigError(
                    f"{_where(path, 'retention', key, i)}: unknown key {key!r} in [[retention]] "
                    f"(known: {', '.join(RETENTION_KEYS)})"
                )
        from modelhangar.core.retention import policy_from_config

        try:
            policy_from_config(p)
        except ValueError as e:
            first = next(iter(p), "match")
            raise ConfigError(f"{_where(path, 'retention', first, i)}: [[retention]]: {e}") from e
    return tuple(policies)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from HANGAR_* environment variables over the config file, with defaults.

    The config file is `$HANGAR_CONFIG`, else `$HANGAR_HOME/config.toml`; its keys are the `key`s
    of `KNOBS` (`[trash] retention = "24h"`, `[gc] interval = "10m"`, ...) and `[[retention]]`
    tables of retention policies (see `core/retention.py`).
    """
    e = dict(os.environ if env is None else env)
    home = Path(e.get("HANGAR_HOME") or Path.home() / ".hangar").expanduser().absolute()
    path = Path(e.get("HANGAR_CONFIG") or home / "config.toml")
    doc = read_config_file(path)
    from_file = _file_values(doc, path)
    values: dict[str, Any] = {}
    for knob in KNOBS:
        raw, where = e.get(knob.env) or None, knob.env
        if raw is None and knob.key in from_file:
            raw, where = from_file[knob.key][0], f"{from_file[knob.key][1]}: {knob.key}"
        if raw is None:
            raw, where = knob.default, f"the default of {knob.env}"
        try:
            values[knob.field] = knob.parse(raw)
        except ValueError as err:
            raise ConfigError(f"{where}: {err}") from err
    host, port = values.pop("host_port")
    if not values["database_url"]:
        values["database_url"] = default_database_url(home)
    assert set(values) <= _SETTINGS_FIELDS
    return Settings(
        home=home, host=host, port=port, policies=_policies(doc, path), config_path=path, **values
    )
