"""Who may do what to a model: the one rule every face, the CLI and the planner ask (README).

* Read: admins; anyone if the model is public; its owner and, for an organisation's model, the
  organisation's members. A model one may not read does not exist for them: a 404 on every face,
  absent from every listing.
* Write (push, create, overwrite, tag, change visibility) and delete: admins, the owner, the members
  of the owning organisation. A model owned by no account (`owner` None) is the local admin's.
* Accounts (users, organisations, roles) are the admins'; a user manages its own API tokens, an
  admin anyone's.
* A new model belongs to the account named by its namespace (`acme/model` is acme's) when there is
  one, and only that account or its members (or an admin) may create it; a model in any other
  namespace (`tiny` is `library/tiny`) belongs to whoever creates it.
"""

from __future__ import annotations

from typing import Any, Literal

import sqlalchemy as sa

from modelhangar.core.actors import Actor
from modelhangar.core.catalog import schema as t
from modelhangar.core.catalog.quick_reads import reusable
from modelhangar.core.errors import Denied, NotFound

Need = Literal["read", "write"]
PUBLIC, PRIVATE = "public", "private"
VISIBILITIES = (PUBLIC, PRIVATE)


def may_read(actor: Actor, owner: str | None, visibility: str) -> bool:
    return visibility == PUBLIC or actor.acts_for(owner)


def may_write(actor: Actor, owner: str | None) -> bool:
    return actor.acts_for(owner)


def visible(actor: Actor) -> Any:
    """A WHERE clause on `repositories` keeping what `actor` may read (None: everything)."""
    if actor.admin:
        return None
    r = t.repositories.c
    mine = [n for n in (actor.principal, *sorted(actor.orgs)) if n]
    return sa.or_(r.visibility == PUBLIC, r.owner.in_(mine)) if mine else r.visibility == PUBLIC


_READER: sa.BindParameter[str] = sa.bindparam("reader")


def visible_variants(q: sa.Select[Any]) -> dict[str, sa.Select[Any]]:
    """`q` (over `repositories`) kept to what each common kind of actor may read, built once (and
    marked reusable by `Catalog.read_once`): everyone's ("all": admins, the store), only public
    models ("public"), public ones and the reader's own ("own": a user in no organisation)."""
    r = t.repositories.c
    return {
        "all": reusable(q),
        "public": reusable(q.where(r.visibility == PUBLIC)),
        "own": reusable(q.where(sa.or_(r.visibility == PUBLIC, r.owner == _READER))),
    }


def for_reader(
    variants: dict[str, sa.Select[Any]], actor: Actor | None
) -> tuple[sa.Select[Any], dict[str, Any]]:
    """The variant of `visible_variants` for `actor` and its parameters (a member of organisations
    gets `visible` on the "all" one, built per call)."""
    if actor is None or actor.admin:
        return variants["all"], {}
    if not actor.orgs:
        if actor.principal:
            return variants["own"], {"reader": actor.principal}
        return variants["public"], {}
    return variants["all"].where(visible(actor)), {}


def check_admin(actor: Actor) -> None:
    """Denied unless `actor` is an admin (managing users, organisations and roles)."""
    if not actor.admin:
        raise Denied(f"{actor.name} is not an admin")


def may_manage_token(actor: Actor, principal: str | None) -> bool:
    """Whether `actor` may revoke or rotate a token of `principal`: its own, or an admin anyone's."""
    return actor.admin or (actor.principal is not None and principal == actor.principal)


def tokens_user(actor: Actor, user: str | None) -> str | None:
    """The user whose tokens `actor` may manage when it asks about `user`: anyone's (None: everyone's)
    for an admin, else only its own (Denied for another's)."""
    if actor.admin:
        return user
    if actor.principal is None or (user is not None and user.lower() != actor.principal):
        raise Denied(f"{actor.name} may manage only its own tokens")
    return actor.principal


def namespace_of(repository: str) -> str | None:
    """The namespace of a catalog repository (`host/namespace/model...`), lower-cased."""
    parts = repository.split("/")
    return parts[1].lower() if len(parts) >= 3 else None


def check(actor: Actor, need: Need, name: str, owner: str | None, visibility: str) -> None:
    """Raise NotFound (may not even read it) or Denied (may read, may not write)."""
    if not may_read(actor, owner, visibility):
        raise NotFound(f"{name} not found")
    if need == "write" and not may_write(actor, owner):
        raise Denied(f"{actor.name} may not change {name}: it belongs to {owner or 'the admin'}")


def owner_for_new(conn: sa.Connection, actor: Actor, repository: str) -> str | None:
    """Who owns a repository `actor` creates now; raises Denied for another account's namespace."""
    ns = namespace_of(repository)
    if ns is not None:
        account = conn.execute(sa.select(t.principals.c.name).where(t.principals.c.name == ns)).first()
        if account is not None:
            if not actor.acts_for(ns):
                raise Denied(f"{actor.name} may not create models in {ns}'s namespace")
            return ns
    return actor.principal


def access(conn: sa.Connection, actor: Actor, repository: str, need: Need) -> Any:
    """The repository's row, checked for `need` (NotFound / Denied); None if it does not exist."""
    row = conn.execute(
        sa.select(t.repositories).where(t.repositories.c.name_key == repository.lower())
    ).first()
    if row is not None:
        check(actor, need, row.name, row.owner, row.visibility)
    return row
