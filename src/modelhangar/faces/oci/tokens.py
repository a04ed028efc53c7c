"""Signing in to the registry face: the 401 challenge, the token endpoint, what each route needs.

A request without credentials (under HANGAR_AUTH=required, or from a non-loopback address) gets 401
`UNAUTHORIZED` with `WWW-Authenticate: Bearer realm="<server>/v2/token",service="modelhangar",
scope="repository:<name>:pull,push"`, as distribution's token authentication has it. Clients then
ask `/v2/token` with basic auth (any user name, an API token as the password) for the scopes they
want and get a short-lived registry token granting the part of them the account holds
(`core/registry_tokens.py`). Basic auth and `Bearer <API token>` work directly as well.

A registry token is accepted on `/v2` only, for what it grants: a request outside its scopes gets
401 with `error="insufficient_scope"` (distribution's `accesscontroller.go`). What the account may
then do there is the core's answer (`core/permissions.py`): a private repository of another
account is a 404, exactly as an absent one.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from modelhangar import auth
from modelhangar.core import accounts, registry_tokens
from modelhangar.core.errors import Unauthenticated
from modelhangar.core.registry_tokens import Access, RegistryActor
from modelhangar.core.store import Actor
from modelhangar.faces.oci.errors import OciError
from modelhangar.faces.oci.wire import MAX_NAME, NAME_RE, absolute, repository_of

TOKEN_PATH = "/v2/token"
INSUFFICIENT_SCOPE_STATUS = 401
"""What a registry token outside its scopes gets: 401, as distribution answers (RFC 6750 would say 403)."""
MAX_FORM = 64 << 10
_TOKEN_ID = accounts._TOKEN_RE
"""An API token, its id the first group (the core's own pattern)."""

if registry_tokens.authenticate not in auth.AUTHENTICATORS:
    auth.AUTHENTICATORS.append(registry_tokens.authenticate)


def challenge(request: Request, need: Access | None, error: str | None = None) -> str:
    """The `WWW-Authenticate` value: where to get a token, for what."""
    value = f'Bearer realm="{absolute(request, TOKEN_PATH)}",service="{registry_tokens.SERVICE}"'
    if need is not None:
        value += f',scope="{_challenge_scope(need)}"'
    if error:
        value += f',error="{error}"'
    return value


def _challenge_scope(need: Access) -> str:
    if need.type == "repository":  # ask for both: one token then serves a HEAD and the push after it
        return f"repository:{need.name}:pull,push"
    return need.scope()


def unauthorized(request: Request, need: Access | None, message: str, error: str | None = None) -> OciError:
    detail: Any = {}
    if need is not None:
        detail = [{"Type": need.type, "Name": need.name, "Action": a} for a in need.actions]
    return OciError(
        "UNAUTHORIZED",
        message,
        status=401 if error != "insufficient_scope" else INSUFFICIENT_SCOPE_STATUS,
        headers={"WWW-Authenticate": challenge(request, need, error)},
        details=[detail],
    )


def authorize(request: Request, need: Access | None) -> Actor:
    """The request's actor, if it may ask for `need` at all (else a 401 with the challenge)."""
    try:
        actor = auth.actor_of(request, "oci")
    except Unauthenticated as e:
        invalid = request.headers.get("authorization") is not None
        raise unauthorized(request, need, str(e), "invalid_token" if invalid else None) from None
    if need is not None and not _granted(actor, need):
        raise unauthorized(request, need, "the token does not grant this", "insufficient_scope")
    return actor


def _granted(actor: Actor, need: Access) -> bool:
    """Whether a registry token grants one of `need`'s actions (other credentials carry no scopes)."""
    if not isinstance(actor, RegistryActor):
        return True
    return any(actor.allows(need.type, need.name, a) for a in need.actions)


def may_pull(actor: Actor, name: str) -> bool:
    """Whether a registry token lets `actor` read repository `name` (a mount's source)."""
    return not isinstance(actor, RegistryActor) or actor.allows("repository", name, "pull")


def parse_scopes(raw: Iterable[str]) -> list[Access]:
    """The scopes of a token request (`scope=` repeated, each maybe several separated by spaces);
    malformed ones, unknown resource types and invalid repository names are left out."""
    out: dict[tuple[str, str], set[str]] = {}
    for value in raw:
        for item in value.split():
            type_, sep, rest = item.partition(":")
            name, sep2, actions = rest.rpartition(":")
            if not sep or not sep2 or type_ not in registry_tokens.SCOPE_TYPES:
                continue
            if type_ == "repository" and (len(name) > MAX_NAME or not NAME_RE.fullmatch(name)):
                continue
            if type_ == "registry" and name != "catalog":
                continue
            wanted = {a for a in actions.split(",") if a in (*registry_tokens.ACTIONS, "*")}
            if wanted:
                out.setdefault((type_, name), set()).update(wanted)
    return [Access(ty, n, tuple(sorted(a))) for (ty, n), a in sorted(out.items())]


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _basic_challenge() -> dict[str, str]:
    return {"WWW-Authenticate": f'Basic realm="{registry_tokens.SERVICE}"'}


def _api_token_id(request: Request) -> str | None:
    """The id of the API token the request authenticated with (the middleware checked it)."""
    secret = auth.credentials(request.headers.get("authorization"))
    m = _TOKEN_ID.fullmatch((secret or "").strip())
    return m.group(1) if m else None


def _token_error(message: str, status: int = 401, oauth_error: str | None = None) -> Response:
    """An error of the token endpoint: distribution's envelope (and OAuth2's `error` for POST)."""
    body: dict[str, Any] = {
        "errors": [
            {"code": "UNAUTHORIZED" if status == 401 else "UNSUPPORTED", "message": message, "detail": {}}
        ]
    }
    if oauth_error:
        body["error"] = oauth_error
        body["error_description"] = message
    headers = _basic_challenge() if status == 401 else {}
    return JSONResponse(body, status_code=status, headers=headers)


async def _issue(request: Request, actor: Actor, token_id: str, scopes: list[str], refresh: bool) -> Response:
    from modelhangar.faces.oci.manifests import store_of

    store = store_of(request)
    wanted = parse_scopes(scopes)
    granted = await run_in_threadpool(registry_tokens.grant, store, actor, wanted, repository_of)
    issued = await run_in_threadpool(registry_tokens.issue, store, actor, token_id, granted)
    body: dict[str, Any] = {
        "token": issued.token,
        "access_token": issued.token,
        "expires_in": issued.expires_in,
        "issued_at": _rfc3339(issued.issued_at),
        "scope": " ".join(a.scope() for a in granted),
    }
    if refresh:
        kept = await run_in_threadpool(
            lambda: registry_tokens.issue(store, actor, token_id, [], kind="refresh")
        )
        body["refresh_token"] = kept.token
    return JSONResponse(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


async def token_endpoint(request: Request) -> Response:
    """GET: distribution's token endpoint (basic auth; `scope` repeated, `service`, `offline_token`).
    POST: docker's OAuth2 form (`grant_type` password or refresh_token, `scope` space-separated)."""
    if request.method == "POST":
        return await _oauth2(request)
    service = request.query_params.get("service")
    if service and service != registry_tokens.SERVICE:
        return _token_error(f'this registry is service "{registry_tokens.SERVICE}"', 400)
    actor = auth.maybe_actor(request)
    token_id = _api_token_id(request)
    if actor is None or token_id is None or isinstance(actor, RegistryActor):
        failed = request.scope.get("state", {}).get(auth.AUTH_ERROR_KEY)
        return _token_error(failed or "sign in with basic auth: any user name, an API token as the password")
    scopes = request.query_params.getlist("scope")
    return await _issue(request, actor, token_id, scopes, _truthy(request.query_params.get("offline_token")))


async def _oauth2(request: Request) -> Response:
    from modelhangar.faces.oci.manifests import store_of

    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            return _token_error("form too large", 400, "invalid_request")
    try:
        form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError:
        return _token_error("the form is not UTF-8", 400, "invalid_request")
    service = form.get("service")
    if service and service != registry_tokens.SERVICE:
        return _token_error(f'this registry is service "{registry_tokens.SERVICE}"', 400, "invalid_request")
    grant_type = form.get("grant_type", "")
    scopes = [form.get("scope", "")]
    offline = form.get("access_type") == "offline"
    store = store_of(request)
    if grant_type == "password":
        secret = form.get("password", "")
        m = _TOKEN_ID.fullmatch(secret.strip())
        actor = await run_in_threadpool(accounts.authenticate, store, secret, "oci") if m else None
        if actor is None or m is None:
            return _token_error("invalid, revoked or expired token", 401, "invalid_grant")
        return await _issue(request, actor, m.group(1), scopes, offline)
    if grant_type == "refresh_token":
        found = await run_in_threadpool(
            lambda: registry_tokens.verify(store, form.get("refresh_token", ""), "oci", kind="refresh")
        )
        if not isinstance(found, RegistryActor):
            return _token_error("invalid, revoked or expired refresh token", 401, "invalid_grant")
        plain = Actor(**registry_tokens.actor_fields(found))
        return await _issue(request, plain, found.token_id, scopes, False)
    return _token_error("grant_type must be password or refresh_token", 400, "unsupported_grant_type")
