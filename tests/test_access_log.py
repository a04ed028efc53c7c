"""The server logs one line per request (method, path, status, bytes, time) at HANGAR_LOG_LEVEL,
and never a secret: no headers, and no query parameter but the known-safe ones."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from harness import StartServer, wait_until

SECRETS = ("s3cr3t-bearer", "s3cr3t-cookie", "s3cr3t-query", "s3cr3t-basic")


def request_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "modelhangar.access" in line]


def test_each_request_is_logged_without_secrets(home: Path, start_server: StartServer) -> None:
    srv = start_server(home)
    tags = httpx.get(
        f"{srv.url}/api/tags?token=s3cr3t-query&n=5",
        headers={"Authorization": "Bearer s3cr3t-bearer", "Cookie": "session=s3cr3t-cookie"},
    )
    assert tags.status_code == 401  # not a token of this store: refused, never taken as anonymous
    missing = httpx.post(f"{srv.url}/api/show", json={"model": "nope"}, auth=("user", "s3cr3t-basic"))
    assert missing.status_code == 401
    forged = httpx.get(f"{srv.url}/api/x%0A2026-01-01 INFO modelhangar.access: GET /forged 200")
    assert forged.status_code == 404

    assert wait_until(lambda: "/api/x" in srv.log())
    log = srv.log()
    lines = request_lines(log)
    tags_line = rf"GET /api/tags\?n=5 401 {len(tags.content)} bytes [\d.]+ ms from 127\.0\.0\.1:\d+"
    assert re.search(rf"INFO modelhangar\.access: {tags_line}$", "\n".join(lines), re.M), lines
    assert any(f"POST /api/show 401 {len(missing.content)} bytes" in line for line in lines), lines
    assert any("GET /api/x%0A2026-01-01%20INFO" in line and " 404 " in line for line in lines), lines
    assert not [line for line in log.splitlines() if line.startswith("2026-01-01")]  # no forged line
    for secret in SECRETS:
        assert secret not in log


def test_warning_level_logs_only_problems(home: Path, start_server: StartServer) -> None:
    srv = start_server(home, env={"HANGAR_LOG_LEVEL": "warning"})
    for _ in range(3):
        assert httpx.get(f"{srv.url}/api/tags").status_code == 200
    assert httpx.post(f"{srv.url}/api/show", json={"model": "nope"}).status_code == 404
    srv.stop()
    assert request_lines(srv.log()) == []
