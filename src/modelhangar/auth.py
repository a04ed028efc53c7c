"""Who is who on each request: credentials in, an `Actor` out, the same way for every face.

`Authorization: Bearer <token>` or `Token <token>` (older Replicate clients) on every face, and
HTTP basic auth with the token as the password (what `docker login`, skopeo `--creds`, oras and
OpenSearch's `http_auth=(user, token)` send). The middleware looks the token up in the core
(`core/accounts.py`) and leaves the actor in the request's state; faces read it with `actor_of`.

Without credentials: under `HANGAR_AUTH=local` (the default) a client on a loopback address is
the local admin, as Ollama trusts its local users; anyone else, and everyone under
`HANGAR_AUTH=required`, gets 401 in the face's own format, except on the few paths that must
answer without one (`PUBLIC_PATHS`). Credentials that do not check out are always a 401, never
taken as anonymous. The token itself is never logged nor put in an error.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from modelhangar.core import accounts
from modelhangar.core.catalog.db import retrying
from modelhangar.core.errors import Unavailable, one_line
from modelhangar.core.store import Actor, Store
from modelhangar.guards import face_of as face_of  # re-exported: the one map of paths to faces
from modelhangar.guards import unavailable

log = logging.getLogger("modelhangar")

STATE_KEY = "actor"
PUBLIC_PATHS: dict[str, frozenset[str]] = {
    "/": frozenset({"GET", "HEAD"}),
    "/api/version": frozenset({"GET", "HEAD"}),
    "/docs": frozenset({"GET", "HEAD"}),
    "/redoc": frozenset({"GET", "HEAD"}),
    "/openapi.json": frozenset({"GET", "HEAD"}),
}
"""Paths (and methods) that answer without credentials; a face may add its own (`allow_anonymous`)."""
PUBLIC_PREFIXES: list[tuple[str, frozenset[str]]] = [("/docs/", frozenset({"GET", "HEAD"}))]
AUTH_ERROR_KEY = "auth_error"
"""Where the middleware leaves why credentials failed, on paths whose face answers the 401."""


def allow_anonymous(path: str, methods: frozenset[str], *, prefix: bool = False) -> None:
    """Let `methods` on `path` (or every path under it) through without credentials."""
    if prefix:
        PUBLIC_PREFIXES.append((path, methods))
    else:
        PUBLIC_PATHS[path] = methods


def credentials(authorization: str | None) -> str | None:
    """The secret an `Authorization` header carries (a token, or basic auth's password), None if none.

    A header that is there but unreadable yields "" (an invalid credential, not an absent one).
    """
    if authorization is None or not authorization.strip():
        return None
    scheme, _, value = authorization.strip().partition(" ")
    scheme = scheme.lower()
    if scheme in ("bearer", "token"):
        return value.strip()
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return ""
        _user, sep, password = decoded.partition(":")
        return password if sep else ""
    return ""


def is_loopback_client(scope: Scope) -> bool:
    client = scope.get("client")
    if not client:
        return False
    try:
        return ipaddress.ip_address(str(client[0])).is_loopback
    except ValueError:
        return False


def answers_own_401(path: str) -> bool:
    """The registry face answers missing and invalid credentials itself, with its token challenge
    (`actor_of` raises there)."""
    return face_of(path) == "oci"


def _public(path: str, method: str) -> bool:
    if method in PUBLIC_PATHS.get(path, frozenset()):
        return True
    return any(path.startswith(p) and method in m for p, m in PUBLIC_PREFIXES)


Authenticator = Callable[[Store, str, str], Actor | None]
AUTHENTICATORS: list[Authenticator] = [accounts.authenticate]
"""How a presented secret becomes an actor: API tokens, and (added by the registry face) its tokens."""
SessionReader = Callable[[Store, str, str], Actor | None]
SESSION_COOKIES: list[tuple[str, str, SessionReader]] = []
"""(path prefix, cookie name, reader): faces whose browsers sign in once and then send a session cookie
(the web UI). A cookie that does not check out is a 401, as a bad token is."""


def session_cookie(request_headers: dict[bytes, bytes], name: str) -> str | None:
    from http.cookies import CookieError, SimpleCookie

    raw = request_headers.get(b"cookie")
    if raw is None:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw.decode("latin-1"))
    except CookieError:
        return ""
    morsel = jar.get(name)
    return None if morsel is None else morsel.value


@retrying  # a token check is a read (and a last-used time): safe to run again
def resolve(store: Store, secret: str, face: str) -> Actor | None:
    for authenticate in AUTHENTICATORS:
        actor = authenticate(store, secret, face)
        if actor is not None:
            return actor
    return None


class Authenticate:
    """ASGI middleware inside the app (it needs the app's store): sets `request.state.actor`.

    `unauthorized(path, message)` answers a 401 in the face's format.
    """

    def __init__(self, app: ASGIApp, unauthorized: Callable[[str, str], Response]) -> None:
        self.app = app
        self.unauthorized = unauthorized

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            await self._checked(scope, receive, send)
        except Unavailable as e:  # outside the app's handlers: answered here, as they would
            if "modelhangar.auth.checked" in scope:
                raise  # the app's own answer had begun
            log.warning(
                "%s checking the credentials of %s %s: %s",
                type(e).__name__,
                scope["method"],
                scope["path"],
                one_line(e),
            )
            await unavailable(scope["path"], e)(scope, receive, send)

    async def _checked(self, scope: Scope, receive: Receive, send: Send) -> None:
        from modelhangar.faces import quick

        path, method = scope["path"], scope["method"]
        store: Store = scope["app"].state.store
        face = face_of(path)
        headers = dict(scope["headers"])
        raw = headers.get(b"authorization")
        secret = credentials(raw.decode("latin-1") if raw is not None else None)
        actor: Actor | None = None
        if secret is None and not _public(path, method):  # signing in again is always possible
            for prefix, cookie, reader in SESSION_COOKIES:
                value = session_cookie(headers, cookie) if path.startswith(prefix) else None
                if value is not None:
                    actor = await quick.run(reader, store, value, face) if value else None
                    if actor is None:
                        await self.unauthorized(path, "invalid or expired session: sign in again")(
                            scope, receive, send
                        )
                        return
                    break
        if actor is not None:
            pass  # a browser's session
        elif secret is not None:
            actor = await quick.run(resolve, store, secret, face) if secret else None
            if actor is None:
                if not answers_own_401(path):
                    await self.unauthorized(path, "invalid, revoked or expired token")(scope, receive, send)
                    return
                scope.setdefault("state", {})[AUTH_ERROR_KEY] = "invalid, revoked or expired token"
        elif store.settings.auth == "local" and is_loopback_client(scope):
            actor = Actor(face=face)
        elif not _public(path, method) and not answers_own_401(path):
            await self.unauthorized(path, "authentication required: send a token")(scope, receive, send)
            return
        scope.setdefault("state", {})[STATE_KEY] = actor
        scope["modelhangar.auth.checked"] = True
        await self.app(scope, receive, send)


def actor_of(request: Request, face: str | None = None) -> Actor:
    """The request's actor (as set by `Authenticate`), speaking through `face`."""
    state = request.scope.get("state", {})
    actor: Actor | None = state.get(STATE_KEY)
    if actor is None:
        from modelhangar.core.errors import Unauthenticated

        raise Unauthenticated(state.get(AUTH_ERROR_KEY) or "authentication required: send a token")
    return actor if face is None else actor.on(face)


def maybe_actor(request: Request) -> Actor | None:
    """The request's actor, or None on a public path reached without credentials."""
    found: Any = request.scope.get("state", {}).get(STATE_KEY)
    return found if isinstance(found, Actor) else None
