"""Accounts: users and organisations, their API tokens, and who a token says a request is.

Users and organisations share one namespace of names (Replicate's rules: lower-case letters,
digits, `-` and `_` between them, at most 39 characters), which is also the namespace of the
models they own (`alice/model`, `acme/model`). An organisation owns models; its members act for
it. Admins may do everything.

A token is `hgr_<id>_<secret>`: random, shown once, stored only as the sha256 of the whole
string, compared in constant time. `<id>` is its public handle (listings, revoking, rotating).
Every request looks its token up in the catalog, so a revoked or expired token stops working at
once on every server sharing the catalog; the last-used time is written at most once a minute.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import sqlalchemy as sa

from modelhangar.core import permissions
from modelhangar.core.catalog import schema as t
from modelhangar.core.catalog.db import retrying
from modelhangar.core.catalog.quick_reads import reusable
from modelhangar.core.errors import Conflict, HangarError, NotFound
from modelhangar.core.store import Actor, Store, now
from modelhangar.core.token_text import TOKEN_PREFIX as TOKEN_PREFIX
from modelhangar.core.token_text import handle as handle
from modelhangar.core.token_text import redact as redact

Kind = Literal["user", "organization"]
NAME_RE = re.compile(r"[a-z0-9](?:[a-z0-9]|[-_](?=[a-z0-9])){0,38}")
RESERVED = frozenset({"library", "local", "admin", "anonymous", "gc", "retention", "reclaim", "system"})
"""Names no account may take: Ollama's default namespace and the actors of the store itself."""
_TOKEN_RE = re.compile(r"hgr_([a-z2-7]{10})_([A-Za-z0-9]{40})")
_ALPHABET_ID = "abcdefghijklmnopqrstuvwxyz234567"
_ALPHABET_SECRET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
LAST_USED_EVERY = 60.0
"""A token's last-used time is written when the stored one is older than this (not on every request)."""


class InvalidAccountName(HangarError, ValueError):
    """A name no user or organisation may have."""


@dataclass(frozen=True)
class Principal:
    name: str
    kind: Kind
    admin: bool
    display_name: str
    roles: tuple[str, ...]
    created_at: float
    members: tuple[str, ...] = ()
    """An organisation's members."""
    orgs: tuple[str, ...] = ()
    """The organisations a user belongs to."""
    quota_bytes: int | None = None
    quota_models: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TokenInfo:
    id: str
    principal: str
    name: str
    created_at: float
    last_used_at: float | None
    expires_at: float | None
    revoked_at: float | None

    @property
    def prefix(self) -> str:
        """What a listing shows, and what revoking or rotating takes: `hgr_<id>`."""
        return f"{TOKEN_PREFIX}{self.id}"

    def active(self, at: float | None = None) -> bool:
        ts = now() if at is None else at
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > ts)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "prefix": self.prefix, "active": self.active()}


@dataclass(frozen=True)
class NewToken:
    """A token just made: `token` is the only time its secret is seen."""

    info: TokenInfo
    token: str = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """What making a token answers (the API, `hangar token add|rotate --json`): its secret, once."""
        return {**self.info.to_dict(), "token": self.token}


def created_user(made: NewToken, admin: bool, roles: Iterable[str] = ()) -> dict[str, Any]:
    """What creating a user answers (the API, and `hangar user add --json`): its first token, once."""
    info = made.info
    return {
        "name": info.principal,
        "admin": admin,
        "roles": sorted(set(roles)),
        "token": made.token,
        "token_prefix": info.prefix,
        "token_name": info.name,
        "created_at": info.created_at,
    }


def check_name(raw: str) -> str:
    """The account name for `raw` (lower-cased), or InvalidAccountName saying why."""
    name = raw.strip().lower() if isinstance(raw, str) else ""
    if not NAME_RE.fullmatch(name):
        raise InvalidAccountName(
            f'invalid account name "{raw}": use 1 to 39 lower-case letters, digits, and "-" or "_" '
            "between them"
        )
    if name in RESERVED:
        raise InvalidAccountName(f'"{name}" is reserved')
    return name


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _random(alphabet: str, n: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def _principal(conn: sa.Connection, name: str) -> Any:
    return conn.execute(sa.select(t.principals).where(t.principals.c.name == name)).first()


def _load(conn: sa.Connection, row: Any) -> Principal:
    m = t.memberships
    members = orgs = ()
    if row.kind == "organization":
        members = tuple(r.member for r in conn.execute(sa.select(m.c.member).where(m.c.org == row.name)))
    else:
        orgs = tuple(r.org for r in conn.execute(sa.select(m.c.org).where(m.c.member == row.name)))
    return Principal(
        name=row.name,
        kind=row.kind,
        admin=bool(row.admin),
        display_name=row.display_name,
        roles=tuple(json.loads(row.roles or "[]")),
        created_at=row.created_at,
        members=tuple(sorted(members)),
        orgs=tuple(sorted(orgs)),
        quota_bytes=row.quota_bytes,
        quota_models=row.quota_models,
    )


def get(store: Store, name: str) -> Principal | None:
    with store.catalog.read() as conn:
        row = _principal(conn, name.lower())
        return None if row is None else _load(conn, row)


def require(store: Store, name: str) -> Principal:
    found = get(store, name)
    if found is None:
        raise NotFound(f'no account "{name}"')
    return found


def list_all(store: Store) -> list[Principal]:
    with store.catalog.read() as conn:
        rows = conn.execute(sa.select(t.principals).order_by(t.principals.c.name)).all()
        return [_load(conn, r) for r in rows]


def _insert(
    conn: sa.Connection, name: str, kind: Kind, *, admin: bool, roles: Iterable[str], display: str
) -> None:
    if _principal(conn, name) is not None:
        raise Conflict(f'the name "{name}" is taken')
    conn.execute(
        t.principals.insert().values(
            name=name,
            kind=kind,
            admin=admin,
            display_name=display or name,
            roles=json.dumps(sorted(set(roles))),
            created_at=now(),
        )
    )


@retrying
def add_user(
    store: Store,
    name: str,
    *,
    admin: bool = False,
    roles: Iterable[str] = (),
    display_name: str = "",
    token_name: str = "default",
) -> NewToken:
    """Create a user and its first token (shown once)."""
    name = check_name(name)
    with store.catalog.write() as conn:
        _insert(conn, name, "user", admin=admin, roles=roles, display=display_name)
        return _new_token(conn, name, token_name, None)


@retrying
def add_org(store: Store, name: str, members: Iterable[str] = (), *, display_name: str = "") -> Principal:
    """Create an organisation with these members (users)."""
    name = check_name(name)
    with store.catalog.write() as conn:
        _insert(conn, name, "organization", admin=False, roles=(), display=display_name)
        _change_members(conn, name, add=members, remove=())
        return _load(conn, _principal(conn, name))


def _change_members(conn: sa.Connection, org: str, *, add: Iterable[str], remove: Iterable[str]) -> None:
    for member in sorted({m.lower() for m in add}):
        row = _principal(conn, member)
        if row is None or row.kind != "user":
            raise NotFound(f'no user "{member}"')
        exists = conn.execute(
            sa.select(t.memberships).where(t.memberships.c.org == org, t.memberships.c.member == member)
        ).first()
        if exists is None:
            conn.execute(t.memberships.insert().values(org=org, member=member))
    for member in {m.lower() for m in remove}:
        conn.execute(
            t.memberships.delete().where(t.memberships.c.org == org, t.memberships.c.member == member)
        )


@retrying
def set_members(store: Store, org: str, *, add: Iterable[str] = (), remove: Iterable[str] = ()) -> Principal:
    with store.catalog.write() as conn:
        row = _principal(conn, org.lower())
        if row is None or row.kind != "organization":
            raise NotFound(f'no organisation "{org}"')
        _change_members(conn, row.name, add=add, remove=remove)
        return _load(conn, _principal(conn, row.name))


@retrying
def set_roles(store: Store, name: str, *, add: Iterable[str] = (), remove: Iterable[str] = ()) -> Principal:
    """Change a user's backend roles (OpenSearch's access control matches groups by them)."""
    with store.catalog.write() as conn:
        row = _principal(conn, name.lower())
        if row is None:
            raise NotFound(f'no account "{name}"')
        roles = (set(json.loads(row.roles or "[]")) | set(add)) - set(remove)
        conn.execute(
            t.principals.update()
            .where(t.principals.c.name == row.name)
            .values(roles=json.dumps(sorted(roles)))
        )
        return _load(conn, _principal(conn, row.name))


@retrying
def set_quota(store: Store, name: str, *, max_bytes: int | None, max_models: int | None) -> Principal:
    """Cap what a user or organisation may store (None: no cap)."""
    with store.catalog.write() as conn:
        row = _principal(conn, name.lower())
        if row is None:
            raise NotFound(f'no account "{name}"')
        conn.execute(
            t.principals.update()
            .where(t.principals.c.name == row.name)
            .values(quota_bytes=max_bytes, quota_models=max_models)
        )
        return _load(conn, _principal(conn, row.name))


@retrying
def remove(store: Store, name: str) -> Principal:
    """Remove a user or organisation, with its tokens and memberships; refused while it owns models."""
    with store.catalog.write() as conn:
        row = _principal(conn, name.lower())
        if row is None:
            raise NotFound(f'no account "{name}"')
        owned = [
            r.name
            for r in conn.execute(
                sa.select(t.repositories.c.name)
                .where(t.repositories.c.owner == row.name)
                .order_by(t.repositories.c.name)
            )
        ]
        if owned:
            shown = ", ".join(owned[:10]) + (f" and {len(owned) - 10} more" if len(owned) > 10 else "")
            raise Conflict(
                f'"{row.name}" still owns {len(owned)} models: {shown}; delete or hand them over first'
            )
        principal = _load(conn, row)
        conn.execute(t.tokens.delete().where(t.tokens.c.principal == row.name))
        conn.execute(
            t.memberships.delete().where(
                sa.or_(t.memberships.c.org == row.name, t.memberships.c.member == row.name)
            )
        )
        conn.execute(t.uploader_blobs.delete().where(t.uploader_blobs.c.principal == row.name))
        conn.execute(t.principals.delete().where(t.principals.c.name == row.name))
        return principal


# ---------------------------------------------------------------------------------------------- tokens


def _token_info(row: Any) -> TokenInfo:
    return TokenInfo(
        id=row.id,
        principal=row.principal,
        name=row.name,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )


def _new_token(conn: sa.Connection, principal: str, name: str, expires_at: float | None) -> NewToken:
    ident = _random(_ALPHABET_ID, 10)
    token = f"{TOKEN_PREFIX}{ident}_{_random(_ALPHABET_SECRET, 40)}"
    ts = now()
    conn.execute(
        t.tokens.insert().values(
            id=ident, principal=principal, name=name, hash=_hash(token), created_at=ts, expires_at=expires_at
        )
    )
    row = conn.execute(sa.select(t.tokens).where(t.tokens.c.id == ident)).one()
    return NewToken(_token_info(row), token)


@retrying
def add_token(store: Store, user: str, *, name: str = "default", expires_in: float | None = None) -> NewToken:
    """A new token for a user (shown once), expiring `expires_in` seconds from now if given."""
    with store.catalog.write() as conn:
        row = _principal(conn, user.lower())
        if row is None or row.kind != "user":
            raise NotFound(f'no user "{user}"')
        expires = None if expires_in is None else now() + expires_in
        return _new_token(conn, row.name, name, expires)


def list_tokens(store: Store, user: str | None = None) -> list[TokenInfo]:
    q = sa.select(t.tokens).order_by(t.tokens.c.principal, t.tokens.c.created_at)
    if user is not None:
        q = q.where(t.tokens.c.principal == user.lower())
    with store.catalog.read() as conn:
        return [_token_info(r) for r in conn.execute(q)]


def _find_token(conn: sa.Connection, prefix: str, actor: Actor | None) -> Any:
    """The one token `prefix` begins; NotFound unless one of those is `actor`'s to manage (any for None)."""
    shown = handle(prefix)
    ident = shown.removeprefix(TOKEN_PREFIX)
    if not ident or not re.fullmatch(r"[a-z2-7]{1,10}", ident):
        raise NotFound(f'no token "{shown}"')
    rows = conn.execute(sa.select(t.tokens).where(t.tokens.c.id.startswith(ident, autoescape=True))).all()
    if not rows or not (actor is None or any(permissions.may_manage_token(actor, r.principal) for r in rows)):
        raise NotFound(f'no token "{shown}"')
    if len(rows) > 1:
        raise Conflict(f'"{shown}" matches {len(rows)} tokens; give more of it')
    return rows[0]


@retrying
def revoke_token(store: Store, prefix: str, actor: Actor | None = None) -> TokenInfo:
    """Revoke the token `hgr_<id>` (a unique beginning of it is enough); it stops working at once.
    With `actor`, only a token it may manage (`permissions.may_manage_token`)."""
    with store.catalog.write() as conn:
        row = _find_token(conn, prefix, actor)
        if row.revoked_at is None:
            conn.execute(t.tokens.update().where(t.tokens.c.id == row.id).values(revoked_at=now()))
        return _token_info(conn.execute(sa.select(t.tokens).where(t.tokens.c.id == row.id)).one())


@retrying
def rotate_token(store: Store, prefix: str, actor: Actor | None = None) -> NewToken:
    """Replace a token by a new one with the same name and lifetime; the old one stops working at once.
    With `actor`, only a token it may manage (`permissions.may_manage_token`)."""
    with store.catalog.write() as conn:
        row = _find_token(conn, prefix, actor)
        if row.revoked_at is not None:
            raise Conflict(f"token {TOKEN_PREFIX}{row.id} is revoked")
        ts = now()
        conn.execute(t.tokens.update().where(t.tokens.c.id == row.id).values(revoked_at=ts))
        expires = None if row.expires_at is None else ts + (row.expires_at - row.created_at)
        return _new_token(conn, row.principal, row.name, expires)


def looks_like_token(value: str) -> bool:
    return value.startswith(TOKEN_PREFIX)


_ORGS_OF = sa.select(t.memberships.c.org).where(t.memberships.c.member == sa.bindparam("member"))
_TOKEN_ROW = reusable(
    sa.select(
        t.tokens,
        t.principals.c.admin,
        t.principals.c.roles,
        sa.select(sa.func.aggregate_strings(t.memberships.c.org, ","))
        .where(t.memberships.c.member == t.tokens.c.principal)
        .scalar_subquery()
        .label("orgs"),
    )
    .join(t.principals, t.principals.c.name == t.tokens.c.principal)
    .where(t.tokens.c.id == sa.bindparam("token_id"))
)
"""The one read of every request with a token: the token, its account and the account's organisations
(names hold no comma), in one statement built once (building a select costs more than running it)."""


def authenticate(store: Store, token: str, face: str) -> Actor | None:
    """The actor a token speaks for, or None when it is malformed, unknown, revoked or expired."""
    m = _TOKEN_RE.fullmatch(token.strip())
    return None if m is None else token_actor(store, m.group(1), face, secret=token.strip())


def token_actor(store: Store, token_id: str, face: str, *, secret: str | None = None) -> Actor | None:
    """The actor of API token `token_id` (checked against its `secret` when given: a registry token
    carries only the id), None when it is unknown, revoked or expired.

    Revocation and expiry are checked on every request (on SQLite the token's row is read again only
    when anything was committed to the catalog since this thread last read it: `Catalog.read_once`);
    the last-used time is written at most once a minute per token, and by a server in its batches of
    last-used times (`core/recency.py`), so a request with a token never waits for a catalog write."""
    ts = now()
    row = store.catalog.read_once(_TOKEN_ROW, {"token_id": token_id}, reuse=True)
    if row is None or (secret is not None and not hmac.compare_digest(_hash(secret), row.hash)):
        return None
    if row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= ts):
        return None
    last = max(row.last_used_at or 0.0, store.last_used.token_pending(row.id) or 0.0)
    if last < ts - LAST_USED_EVERY:
        store.last_used.note_token(row.id, ts)
    return _token_row_actor(row, face)


@functools.lru_cache(maxsize=1024)
def _token_row_actor(row: Any, face: str) -> Actor:
    """`row_actor` of a `_TOKEN_ROW` row (a named tuple of plain values): the same row, read again
    while nothing changed (`Catalog.read_once(..., reuse=True)`), makes the same actor."""
    return row_actor(row, frozenset(row.orgs.split(",")) if row.orgs else frozenset(), face)


def row_actor(row: Any, orgs: frozenset[str], face: str) -> Actor:
    """The actor of a catalog row with a token's `name` and its principal's `principal`, `admin`, `roles`."""
    return Actor(
        name=row.principal,
        face=face,
        admin=bool(row.admin),
        principal=row.principal,
        token=row.name,
        orgs=orgs,
        roles=frozenset(json.loads(row.roles or "[]")),
    )
