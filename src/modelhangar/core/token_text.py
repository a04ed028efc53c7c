"""The text of an access token: its prefix, its public handle and its redaction in log lines.

Apart from `accounts` (and free of the catalog) because the access log redacts every request's
path, and the server's log is set up before it listens (README, "Start-up").
"""

from __future__ import annotations

import re

TOKEN_PREFIX = "hgr_"
_SECRET_PART = re.compile(r"(hgr_[a-z2-7]{10})_[A-Za-z0-9]{40}")


def handle(text: str) -> str:
    """The public handle `hgr_<id>` of a token or of a beginning of one: what listings show and what
    revoking and rotating take. A whole token given there keeps only its handle, so its secret is
    never sent in a path (access logs) nor echoed in an error."""
    return TOKEN_PREFIX + text.strip().removeprefix(TOKEN_PREFIX).split("_", 1)[0]


def redact(text: str) -> str:
    """`text` with the secret part of every token in it replaced (what a log line may show)."""
    return _SECRET_PART.sub(r"\1_<secret>", text) if TOKEN_PREFIX in text else text
