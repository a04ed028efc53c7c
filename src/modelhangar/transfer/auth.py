"""Anonymous Bearer tokens for a registry that challenges with 401 (never from another host).

A registry answers 401 with `WWW-Authenticate: Bearer realm="...",service="...",scope="..."`.
The token is fetched from the realm only when the realm is on the registry's own host and port
(CVE-2025-51471: a hostile challenge must not send us, or our token, elsewhere).
"""

from __future__ import annotations

import json
import re

import httpx

from modelhangar.transfer.errors import RegistryError, read_bounded

MAX_TOKEN_RESPONSE = 64 << 10
_PARAM = re.compile(r'([A-Za-z][A-Za-z0-9_-]*)=(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))')
_DEFAULT_PORTS = {"http": 80, "https": 443}


def parse_challenge(header: str) -> dict[str, str] | None:
    """The parameters of a `Bearer` challenge, or None if the header is not one."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    params = {}
    for m in _PARAM.finditer(rest):
        value = m.group(2) if m.group(2) is not None else m.group(3)
        params[m.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
    return params


def origin(url: httpx.URL) -> tuple[str, str, int]:
    """(scheme, host, port) with the scheme's default port filled in."""
    return url.scheme, url.host.lower(), url.port or _DEFAULT_PORTS.get(url.scheme, 0)


def same_host(url: httpx.URL, registry: httpx.URL) -> bool:
    """Whether `url` is on the registry's host and port (the scheme may differ)."""
    return origin(url)[1:] == origin(registry)[1:]


def fetch_token(http: httpx.Client, challenge: dict[str, str], registry: httpx.URL) -> str:
    """An anonymous token from the challenge's realm, which must be on the registry's host."""
    realm = challenge.get("realm", "")
    try:
        url = httpx.URL(realm)
    except httpx.InvalidURL as e:
        raise RegistryError(f"invalid auth realm {realm[:200]!r}") from e
    if url.scheme not in _DEFAULT_PORTS or not url.host:
        raise RegistryError(f"invalid auth realm {realm[:200]!r}")
    if not same_host(url, registry):
        theirs, ours = url.netloc.decode(), registry.netloc.decode()
        raise RegistryError(f'realm host "{theirs}" does not match original host "{ours}"', status=401)
    if registry.scheme == "https" and url.scheme != "https":
        raise RegistryError("auth realm is not https")
    params = {k: v for k, v in challenge.items() if k in ("service", "scope")}
    with http.stream("GET", url, params=params, follow_redirects=False) as r:
        if r.status_code != 200:
            raise RegistryError("unauthorized: access denied", status=401)
        body = read_bounded(r, MAX_TOKEN_RESPONSE, "auth token response too large")
    try:
        doc = json.loads(body)
    except ValueError as e:
        raise RegistryError("auth token response is not JSON") from e
    token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
    if not isinstance(token, str) or not token or any(c in token for c in "\r\n"):
        raise RegistryError("auth token response has no token")
    return token
