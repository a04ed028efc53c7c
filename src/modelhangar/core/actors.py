"""Who asks: the actor every check of the core is about (`core/permissions.py`)."""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["Actor"]


@dataclass(frozen=True)
class Actor:
    """Who asks, and through which face.

    The default is the local admin (the CLI on this machine, a loopback client under HANGAR_AUTH=local,
    the store's own jobs): no account, allowed everything. A signed-in user has `principal` (its
    account name), the name of the `token` it used, its organisations and backend roles.
    """

    name: str = "local"
    face: str = "cli"
    admin: bool = True
    principal: str | None = None
    token: str | None = None
    orgs: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()

    def acts_for(self, owner: str | None) -> bool:
        """Whether this actor may act as `owner` (a user, or an organisation it is a member of);
        None is the local admin."""
        if self.admin:
            return True
        return (
            self.principal is not None
            and owner is not None
            and (owner == self.principal or owner in self.orgs)
        )

    def on(self, face: str) -> Actor:
        """The same actor, speaking through another face."""
        return replace(self, face=face)
