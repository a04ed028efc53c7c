"""Registry tokens: what the `/v2` token endpoint issues, in exchange for an API token (README, "Accounts").

Registry clients (docker, skopeo, oras) follow distribution's token flow: a 401 names a realm, a
service and a scope (`repository:<name>:pull,push`); the client asks the realm for a token with its
credentials and presents that token as `Bearer` from then on. Such a token is short-lived
(`TTL`), signed with HMAC-SHA256 by a key of the store (kept in the catalog, `store_settings`, so
every server sharing the catalog accepts it) and carries the access it grants: the intersection
of what was asked and what the account may do (`grant`), as distribution's token server does.

It speaks only for the API token it came from: verifying it looks that token up
(`accounts.token_actor`, the same reads as an API token costs), so revoking or expiring the API
token stops its registry tokens at once.
A registry token is accepted on `/v2` only, and only for what it grants; what a request may really
do is still decided by `core/permissions.py` for the account behind it.

The encoding is a JWT (HS256), opaque to clients; its secret parts are never logged.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa

from modelhangar.core import accounts, permissions, shared_settings
from modelhangar.core.actors import Actor
from modelhangar.core.errors import Denied, NotFound
from modelhangar.core.store import Store, now

SERVICE = "modelhangar"
"""The `service` of the challenge and the audience of the tokens."""
TTL = 300
"""Seconds a registry token lives (distribution's clients want at least 60)."""
KEY_SETTING = "registry_token_key"
FACE = "oci"
ACTIONS = ("pull", "push", "delete")
WRITE_ACTIONS = frozenset({"push", "delete"})
_HEADER = {"alg": "HS256", "typ": "JWT"}
SCOPE_TYPES = ("repository", "registry")

Kind = Literal["access", "refresh"]


@dataclass(frozen=True, order=True)
class Access:
    """One resource and the actions on it: `repository:alice/model:pull,push`, `registry:catalog:*`."""

    type: str
    name: str
    actions: tuple[str, ...]

    def scope(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"

    def to_claim(self) -> dict[str, Any]:
        return {"type": self.type, "name": self.name, "actions": list(self.actions)}


@dataclass(frozen=True)
class RegistryActor(Actor):
    """An account speaking through a registry token: only what `access` names (core permissions still
    decide what it may do there)."""

    access: frozenset[tuple[str, str, str]] = frozenset()
    """(type, name, action) triples the token grants."""
    token_id: str = ""
    """The API token it was issued for."""

    def allows(self, type_: str, name: str, action: str) -> bool:
        return (type_, name, action) in self.access or (type_, name, "*") in self.access


@dataclass(frozen=True)
class Issued:
    token: str
    expires_in: int
    issued_at: float
    access: list[Access]


def _held(conn: sa.Connection, actor: Actor, repository: str) -> set[str]:
    """The actions `actor` holds on a repository (its catalog name).

    `pull` is held on every name: what one may read there is decided per request, so a repository
    one may not see answers 404 exactly as an absent one (README). `push` and `delete` need write
    access to it, or, for a new repository, the right to create it in its namespace.
    """
    held = {"pull"}
    try:
        row = permissions.access(conn, actor, repository, "write")
        if row is None:
            permissions.owner_for_new(conn, actor, repository)
        held |= WRITE_ACTIONS
    except (NotFound, Denied):
        pass
    return held


def grant(
    store: Store, actor: Actor, wanted: list[Access], repository_of: Callable[[str], str]
) -> list[Access]:
    """What of `wanted` the actor holds (the intersection; holding none of it is not an error).
    `repository_of` maps a repository scope's name to its catalog repository."""
    out: list[Access] = []
    with store.catalog.read() as conn:
        for item in wanted:
            if item.type == "registry":
                actions = set(item.actions) & {"*"}  # the catalog lists only what the actor may read
            else:
                held = _held(conn, actor, repository_of(item.name))
                actions = held if "*" in item.actions else set(item.actions) & held
            if actions:
                out.append(Access(item.type, item.name, tuple(sorted(actions))))
    return out


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key(store: Store) -> bytes:
    return shared_settings.secret_key(store, KEY_SETTING)


def _sign(store: Store, claims: dict[str, Any]) -> str:
    head = _b64(json.dumps(_HEADER, separators=(",", ":")).encode())
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    mac = hmac.new(_key(store), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(mac)}"


_JWT_RE = re.compile(r"[A-Za-z0-9_-]{10,200}\.[A-Za-z0-9_-]{10,20000}\.[A-Za-z0-9_-]{43}")


def _claims(key: bytes, token: str) -> dict[str, Any] | None:
    """The claims of a token signed with `key`, or None (the signature compared in constant time)."""
    if not _JWT_RE.fullmatch(token):
        return None
    head, body, mac = token.split(".")
    expected = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    try:
        if not hmac.compare_digest(expected, _unb64(mac)):
            return None
        claims = json.loads(_unb64(body))
    except (binascii.Error, ValueError):
        return None
    return claims if isinstance(claims, dict) else None


def issue(
    store: Store, actor: Actor, token_id: str, access: list[Access], *, kind: Kind = "access"
) -> Issued:
    """A signed token for the account behind API token `token_id`, granting `access`."""
    ts = now()
    claims: dict[str, Any] = {
        "iss": SERVICE,
        "aud": SERVICE,
        "sub": actor.principal,
        "tid": token_id,
        "typ": kind,
        "iat": int(ts),
        "jti": secrets.token_hex(8),
    }
    if kind == "access":
        claims["exp"] = int(ts) + TTL
        claims["access"] = [a.to_claim() for a in access]
    return Issued(_sign(store, claims), TTL, ts, access)


def verify(store: Store, token: str, face: str, *, kind: Kind = "access") -> Actor | None:
    """The actor a registry token (or, with `kind="refresh"`, a refresh token) speaks for, or None."""
    checked = _checked(_key(store), token, kind)
    if checked is None:
        return None
    tid, sub, exp, access = checked
    if exp is not None and exp <= now():
        return None
    actor = accounts.token_actor(store, tid, face)  # its use counts as the API token's
    if actor is None or actor.principal != sub:
        return None
    return _registry_actor(actor, access, tid)


_Checked = tuple[str, Any, int | None, frozenset[tuple[str, str, str]]]


@functools.lru_cache(maxsize=1024)
def _checked(key: bytes, token: str, kind: Kind) -> _Checked | None:
    """What a token's signed claims say, once checked against the store's `key`: (API token id,
    account, expiry, access; no expiry and no access for a refresh token, which grants nothing by
    itself), or None if it is not a `kind` token
    signed with it. Kept for the tokens seen last, as the claims of a token never change; its expiry
    and the API token behind it are checked on every use (`verify`). Keyed by the key, not the store,
    so that it keeps no store alive."""
    claims = _claims(key, token)
    if claims is None or claims.get("typ") != kind or claims.get("aud") != SERVICE:
        return None
    tid = claims.get("tid")
    if not isinstance(tid, str):
        return None
    if kind == "refresh":
        return tid, claims.get("sub"), None, frozenset()
    exp = claims.get("exp")
    if not isinstance(exp, int):
        return None
    access: set[tuple[str, str, str]] = set()
    for item in claims.get("access") or []:
        if isinstance(item, dict) and isinstance(item.get("actions"), list):
            for action in item["actions"]:
                access.add((str(item.get("type")), str(item.get("name")), str(action)))
    return tid, claims.get("sub"), exp, frozenset(access)


@functools.lru_cache(maxsize=1024)
def _registry_actor(actor: Actor, access: frozenset[tuple[str, str, str]], tid: str) -> RegistryActor:
    return RegistryActor(**actor_fields(actor), access=access, token_id=tid)


def actor_fields(actor: Actor) -> dict[str, Any]:
    return {
        "name": actor.name,
        "face": actor.face,
        "admin": actor.admin,
        "principal": actor.principal,
        "token": actor.token,
        "orgs": actor.orgs,
        "roles": actor.roles,
    }


def authenticate(store: Store, secret: str, face: str) -> Actor | None:
    """`auth.AUTHENTICATORS` entry: a registry token, on the registry face only."""
    if face != FACE or secret.count(".") != 2:
        return None
    return verify(store, secret.strip(), face)
