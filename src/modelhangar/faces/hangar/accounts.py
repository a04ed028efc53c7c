"""Accounts over modelhangar's own API: users, tokens, organisations, visibility, and `whoami`.

The same store commands `hangar user|token|org` run on HANGAR_HOME, for admins over HTTP. Users,
organisations and roles are the admins'; a user may list, add, revoke and rotate its own tokens;
visibility is the model's owner's (and its organisation's members', and admins'), as every write.
Who may do which is `core/permissions.py`'s answer, not this module's. A token's secret is in an
answer once, when it is made.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, TypeVar

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from modelhangar.core import accounts, permissions
from modelhangar.core.config import parse_duration
from modelhangar.core.errors import Conflict, Denied, HangarError, NotFound
from modelhangar.core.names import NAME_PATTERN, InvalidName, parse_name
from modelhangar.core.store import Actor
from modelhangar.faces.hangar.routes import (
    DURATION,
    ErrorBody,
    Strict,
    _actor,
    _admin,
    _JsonSafeRoute,
    _store,
)

router = APIRouter(
    prefix="/api/hangar",
    tags=["accounts"],
    route_class=_JsonSafeRoute,
    responses={
        "4XX": {"model": ErrorBody, "description": "Bad request, not signed in, not allowed, not found"}
    },
)
T = TypeVar("T")
ACCOUNT_NAME = r"^[A-Za-z0-9]([A-Za-z0-9]|[-_][A-Za-z0-9])*$"
"""`core/accounts.py`'s rule as the schema states it (lower-cased when read), at most 39 characters."""
AccountName = Field(
    min_length=1,
    max_length=39,
    pattern=ACCOUNT_NAME,
    description="A user or organisation name (Replicate's rules).",
)


async def _run(fn: Callable[[], T]) -> T:
    """Run a core call off the event loop, its refusals as the API's errors (a reserved name is taken)."""
    try:
        return await run_in_threadpool(fn)
    except accounts.InvalidAccountName as e:
        raise HTTPException(409 if "reserved" in str(e) else 400, str(e)) from e
    except NotFound as e:
        raise HTTPException(404, str(e)) from e
    except Conflict as e:
        raise HTTPException(409, str(e)) from e
    except Denied as e:
        raise HTTPException(403, str(e)) from e
    except (HangarError, ValueError) as e:
        raise HTTPException(400, str(e)) from e


def _members_known(fn: Callable[[], T]) -> Callable[[], T]:
    """`fn`, a member that is no user being a conflict (409), not a missing organisation (404)."""

    def run() -> T:
        try:
            return fn()
        except NotFound as e:
            raise Conflict(str(e)) from e

    return run


@router.get("/whoami", summary="Who the server thinks you are")
async def whoami(request: Request) -> dict[str, Any]:
    actor = _actor(request)
    return {
        "name": actor.name,
        "admin": actor.admin,
        "user": actor.principal,
        "token_name": actor.token,
        "orgs": sorted(actor.orgs),
        "roles": sorted(actor.roles),
        "face": actor.face,
    }


class NewUser(Strict):
    name: str = AccountName
    admin: bool = Field(False, description="An admin may do everything.")
    roles: list[str] = Field(default_factory=list, description="Backend roles (OpenSearch's access control).")
    token_name: str = Field("default", min_length=1, max_length=255, description="The first token's name.")


@router.get("/users", summary="Users and organisations (admins)")
async def list_users(request: Request) -> dict[str, Any]:
    _admin(request)
    found = await _run(lambda: accounts.list_all(_store(request)))
    return {"users": [p.to_dict() for p in found]}


@router.post("/users", summary="Create a user and its first token, shown this once (admins)")
async def add_user(request: Request, body: NewUser) -> dict[str, Any]:
    _admin(request)
    made = await _run(
        lambda: accounts.add_user(
            _store(request), body.name, admin=body.admin, roles=body.roles, token_name=body.token_name
        )
    )
    return accounts.created_user(made, body.admin, body.roles)


@router.delete(
    "/users/{name}", summary="Remove a user or organisation; refused while it owns models (admins)"
)
async def remove_user(request: Request, name: str) -> dict[str, Any]:
    _admin(request)
    gone = await _run(lambda: accounts.remove(_store(request), name))
    return {"removed": gone.name, "kind": gone.kind}


class Change(Strict):
    add: list[str] = Field(default_factory=list)
    remove: list[str] = Field(default_factory=list)


@router.post("/users/{name}/roles", summary="Add or remove a user's backend roles (admins)")
async def change_roles(request: Request, name: str, body: Change) -> dict[str, Any]:
    _admin(request)
    done = await _run(lambda: accounts.set_roles(_store(request), name, add=body.add, remove=body.remove))
    return done.to_dict()


class NewOrg(Strict):
    name: str = AccountName
    members: list[str] = Field(default_factory=list, description="Users who act for the organisation.")


@router.post("/orgs", summary="Create an organisation with its members (admins)")
async def add_org(request: Request, body: NewOrg) -> dict[str, Any]:
    _admin(request)
    done = await _run(_members_known(lambda: accounts.add_org(_store(request), body.name, body.members)))
    return done.to_dict()


@router.post("/orgs/{name}/members", summary="Add or remove members of an organisation (admins)")
async def change_members(request: Request, name: str, body: Change) -> dict[str, Any]:
    _admin(request)
    store = _store(request)
    org = await _run(lambda: accounts.get(store, name))
    if org is None or org.kind != "organization":
        raise HTTPException(404, f'no organisation "{name}"')
    change = _members_known(lambda: accounts.set_members(store, name, add=body.add, remove=body.remove))
    done = await _run(change)
    return done.to_dict()


def _own_user(actor: Actor, user: str | None) -> str | None:
    """The user whose tokens `actor` asks about (`permissions.tokens_user`; 403 for another's)."""
    try:
        return permissions.tokens_user(actor, user)
    except Denied as e:
        raise HTTPException(403, str(e)) from e


@router.get("/tokens", summary="Tokens (never their secrets): a user's, or everyone's for admins")
async def list_tokens(
    request: Request, user: str | None = Query(None, max_length=64, description="Only this user's tokens.")
) -> dict[str, Any]:
    who = _own_user(_actor(request), user)
    found = await _run(lambda: accounts.list_tokens(_store(request), who))
    return {"tokens": [t.to_dict() for t in found]}


class NewToken(Strict):
    user: str | None = Field(
        None, min_length=1, max_length=39, pattern=ACCOUNT_NAME, description="Whose token (default: yours)."
    )
    name: str = Field("default", min_length=1, max_length=255)
    expires: str | None = Field(
        None, pattern=DURATION, description="Expire after this long, e.g. `30d` (`0`: never)."
    )


@router.post("/tokens", summary="Make a token, shown this once")
async def add_token(request: Request, body: NewToken) -> dict[str, Any]:
    actor = _actor(request)
    who = _own_user(actor, body.user) or actor.principal
    if who is None:
        raise HTTPException(404, 'no user "local": the local admin holds no tokens; name a user')
    try:
        expires = None if body.expires is None else parse_duration(body.expires)
    except ValueError as e:
        raise HTTPException(400, f"expires: {e}") from e
    if expires is not None and expires <= 0:
        expires = None  # `0`: never, as the CLI reads it
    made = await _run(lambda: accounts.add_token(_store(request), who, name=body.name, expires_in=expires))
    return made.to_dict()


@router.post("/tokens/{prefix}/revoke", summary="Revoke a token: it stops working at once")
async def revoke_token(request: Request, prefix: str) -> dict[str, Any]:
    store, actor = _store(request), _actor(request)
    return (await _run(lambda: accounts.revoke_token(store, prefix, actor))).to_dict()


@router.post("/tokens/{prefix}/rotate", summary="Replace a token by a new one (shown this once)")
async def rotate_token(request: Request, prefix: str) -> dict[str, Any]:
    store, actor = _store(request), _actor(request)
    return (await _run(lambda: accounts.rotate_token(store, prefix, actor))).to_dict()


class VisibilityRequest(Strict):
    model: str = Field(
        min_length=1, pattern=NAME_PATTERN, description="A model name; the visibility is its repository's."
    )
    visibility: Literal["public", "private"]


@router.post("/visibility", summary="Make a model public (everyone may read it) or private")
async def set_visibility(request: Request, body: VisibilityRequest) -> dict[str, Any]:
    actor = _actor(request)
    try:
        name = parse_name(body.model)
    except InvalidName as e:
        raise HTTPException(400, e.detail) from e
    await _run(lambda: _store(request).set_visibility(name.repository, body.visibility, actor=actor))
    return {"model": name.display_shortest(), "visibility": body.visibility}
