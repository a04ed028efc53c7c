"""Web UI sessions: a browser signs in once with an API token and then carries a session cookie.

The cookie holds a random secret; the catalog keeps only its sha256, the token it came from and when
it ends, so a forged or stolen-then-ended cookie is refused on every server sharing the catalog.
A session ends when the user signs out, after SESSION_LIFETIME, when its token expires, or as soon
as the token is revoked (each request checks it, as `accounts.authenticate` does for tokens).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

import sqlalchemy as sa

from modelhangar.core import accounts, shared_settings
from modelhangar.core.catalog import schema as t
from modelhangar.core.catalog.db import retrying
from modelhangar.core.store import Actor, Store, now

SESSION_LIFETIME = 12 * 3600.0
CSRF_KEY = "web.csrf_key"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@retrying
def sign_in(store: Store, token: str) -> str | None:
    """A new session's secret for a valid API token, None if the token does not check out."""
    actor = accounts.authenticate(store, token, "web")
    m = accounts._TOKEN_RE.fullmatch(token.strip())
    if actor is None or m is None:
        return None
    secret = secrets.token_urlsafe(32)
    ts = now()
    with store.catalog.write() as conn:
        expires = conn.execute(sa.select(t.tokens.c.expires_at).where(t.tokens.c.id == m.group(1))).scalar()
        end = ts + SESSION_LIFETIME if expires is None else min(ts + SESSION_LIFETIME, float(expires))
        conn.execute(t.web_sessions.delete().where(t.web_sessions.c.expires_at <= ts))
        conn.execute(
            t.web_sessions.insert().values(
                id=_hash(secret), token_id=m.group(1), principal=actor.name, created_at=ts, expires_at=end
            )
        )
    return secret


def resolve(store: Store, secret: str, face: str) -> Actor | None:
    """The actor of a session cookie, None if it is unknown, ended, or its token no longer works."""
    ts = now()
    s, tk, p = t.web_sessions, t.tokens, t.principals
    with store.catalog.read() as conn:
        row = conn.execute(
            sa.select(
                s.c.id,
                s.c.expires_at,
                tk.c.name,
                tk.c.revoked_at,
                tk.c.expires_at.label("token_expires"),
                p.c.name.label("principal"),
                p.c.admin,
                p.c.roles,
            )
            .join(tk, tk.c.id == s.c.token_id)
            .join(p, p.c.name == tk.c.principal)
            .where(s.c.id == _hash(secret))
        ).first()
        if row is None or not hmac.compare_digest(row.id, _hash(secret)) or row.expires_at <= ts:
            return None
        if row.revoked_at is not None or (row.token_expires is not None and row.token_expires <= ts):
            return None
        orgs = frozenset(conn.execute(accounts._ORGS_OF, {"member": row.principal}).scalars())
    return accounts.row_actor(row, orgs, face)


@retrying
def sign_out(store: Store, secret: str) -> None:
    with store.catalog.write() as conn:
        conn.execute(t.web_sessions.delete().where(t.web_sessions.c.id == _hash(secret)))


def csrf_key(store: Store) -> bytes:
    """The store's key for CSRF tokens (made on first use, shared by every server of the store)."""
    return shared_settings.secret_key(store, CSRF_KEY)
