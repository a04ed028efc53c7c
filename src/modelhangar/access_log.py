"""One log line per request: method, path, status, bytes sent, time taken; never a secret.

Only the path is logged, percent-encoded as sent (the secret part of an API token in it replaced),
with the few query parameters known to carry no secret (`dry_run`, `n`, ...); headers
(Authorization, Cookie) and any other parameter (`token`, `X-Amz-Signature`, ...) never are.
Lines go to the `modelhangar.access` logger at INFO (a 5xx at WARNING), so
HANGAR_LOG_LEVEL=warning keeps only problems (README "Configuration").
"""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelhangar.core.token_text import redact

log = logging.getLogger("modelhangar.access")

SAFE_PARAMS = frozenset(
    {"dry_run", "purge", "plan", "n", "last", "since", "limit", "artifactType", "digest", "mount", "from"}
)
"""Query parameters logged with their values: flags, paging, digests and repository names."""
MAX_PATH = 512


class JsonLines(logging.Formatter):
    """One JSON object per record: time, level, logger, message, and a request's own fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, "request", {}),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def configure_logging(level: str, *, as_json: bool = False) -> None:
    """Send the `modelhangar` loggers to stderr at `level` (HANGAR_LOG_LEVEL), one line per record
    (a JSON object with `as_json`)."""
    handler = logging.StreamHandler(sys.stderr)
    text = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(JsonLines() if as_json else text)
    root = logging.getLogger("modelhangar")
    root.handlers = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def _printable(text: str) -> str:
    """No line breaks or control characters from a client reach the log."""
    return "".join(c if c.isprintable() and c != "\\" else c.encode("unicode_escape").decode() for c in text)


def request_target(scope: Scope) -> str:
    """The path as sent (no query but the safe parameters), escaped and bounded for a log line."""
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, bytes) else str(scope.get("path", ""))
    path = path.split("?", 1)[0]
    query = scope.get("query_string", b"").decode("latin-1")
    safe = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k in SAFE_PARAMS]
    target = redact(path + (f"?{urlencode(safe)}" if safe else ""))  # a token pasted in a path
    if len(target) > MAX_PATH:
        target = target[:MAX_PATH] + "..."
    return _printable(target)


class AccessLog:
    """ASGI middleware logging each HTTP request once it has been answered (or has failed)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        state: dict[str, Any] = {"status": None, "bytes": 0}

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            elif message["type"] == "http.response.body":
                state["bytes"] += len(message.get("body", b""))
            elif message["type"] == "http.response.zerocopysend":
                state["bytes"] += int(message.get("count", 0))
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            status = state["status"]
            level = logging.WARNING if status is None or status >= 500 else logging.INFO
            if log.isEnabledFor(level):
                client = scope.get("client")
                fields = {
                    "method": _printable(str(scope.get("method", ""))),
                    "path": request_target(scope),
                    "status": status,
                    "bytes": state["bytes"],
                    "ms": round((time.perf_counter() - start) * 1000, 1),
                    "client": f"{client[0]}:{client[1]}" if client else None,
                }
                log.log(
                    level,
                    "%s %s %s %d bytes %.1f ms from %s",
                    *(fields[k] if fields[k] is not None else "-" for k in fields),
                    extra={"request": fields},
                )
