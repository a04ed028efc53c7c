"""`hangar user|token|org`: accounts, on HANGAR_HOME directly (like `gc`), or through a server's
`/api/hangar` admin endpoints when `--host` is given; `hangar visibility` and `hangar whoami` ask
the server (with `--token` / HANGAR_TOKEN).

A token's secret is printed once, when it is made (`user add`, `token add`, `token rotate`), and
never again: listings show its prefix `hgr_<id>`, which `token revoke` and `token rotate` take.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from modelhangar.cli.errors import CliError
from modelhangar.cli.output import human_time, print_json, print_table, say
from modelhangar.cli.settings import duration, settings_from_env
from modelhangar.core.errors import HangarError

if TYPE_CHECKING:
    from modelhangar.cli.client import Client
    from modelhangar.core.store import Store

Local = Callable[["Store", argparse.Namespace], Any]
Remote = Callable[["Client", argparse.Namespace], Any]


def _run(args: argparse.Namespace, local: Local, remote: Remote) -> Any:
    """`local(store, args)` on the data directory, or `remote(client, args)` when `--host` was given."""
    if getattr(args, "host", None):
        from modelhangar.cli.client import Client

        with Client(args.host, getattr(args, "token", None)) as client:
            return remote(client, args)
    from modelhangar.cli.store_commands import open_store

    with open_store(settings_from_env(getattr(args, "data_dir", None))) as store:
        try:
            return local(store, args)
        except HangarError as e:
            raise CliError(str(e)) from e


def _p(segment: str) -> str:
    return quote(segment, safe="")


def _handle(prefix: str) -> str:
    """What a server is sent of a token to revoke or rotate: its handle, never its secret even when
    the whole token was given (`accounts.handle`)."""
    from modelhangar.core import accounts

    return accounts.handle(prefix)


def _print_token(doc: dict[str, Any], what: str) -> None:
    say(what)
    say(f"token: {doc['token']}")
    say("(shown this once: keep it now; `hangar token list` shows only its prefix)")


# ---------------------------------------------------------------------------------------------- users


def cmd_user_add(args: argparse.Namespace) -> int:
    def local(store: Store, a: argparse.Namespace) -> Any:
        from modelhangar.core import accounts

        return accounts.created_user(
            accounts.add_user(store, a.name, admin=a.admin, roles=a.role or ()), a.admin, a.role or ()
        )

    def remote(client: Client, a: argparse.Namespace) -> Any:
        body = {"name": a.name, "admin": a.admin, "roles": a.role or []}
        return client.post_json("/api/hangar/users", body)

    doc = _run(args, local, remote)
    if args.json:
        print_json(doc)
    else:
        kind = "admin" if doc.get("admin") else "user"
        _print_token(doc, f"created {kind} {doc['name']}")
    return 0


def _principals_table(users: list[dict[str, Any]]) -> None:
    rows = []
    for u in users:
        kind = "admin" if u.get("admin") else u["kind"]
        related = ", ".join(u.get("members") or u.get("orgs") or []) or "-"
        rows.append(
            [u["name"], kind, ", ".join(u.get("roles") or []) or "-", related, human_time(u["created_at"])]
        )
    print_table(["NAME", "KIND", "ROLES", "ORGS / MEMBERS", "CREATED"], rows)


def cmd_user_list(args: argparse.Namespace) -> int:
    def local(store: Store, a: argparse.Namespace) -> Any:
        from modelhangar.core import accounts

        return {"users": [p.to_dict() for p in accounts.list_all(store)]}

    doc = _run(args, local, lambda c, a: c.get_json("/api/hangar/users"))
    if args.json:
        print_json(doc)
    else:
        _principals_table(doc["users"])
    return 0


def cmd_user_remove(args: argparse.Namespace) -> int:
    def local(store: Store, a: argparse.Namespace) -> Any:
        from modelhangar.core import accounts

        gone = accounts.remove(store, a.name)
        return {"removed": gone.name, "kind": gone.kind}

    def remote(client: Client, a: argparse.Namespace) -> Any:
        from modelhangar.cli.client import response_json

        return response_json(client.request("DELETE", f"/api/hangar/users/{_p(a.name)}"))

    doc = _run(args, local, remote)
    if args.json:
        print_json(doc)
    else:
        say(f"removed {'organisation' if doc['kind'] == 'organization' else 'user'} {doc['removed']}")
    return 0


def cmd_user_roles(args: argparse.Namespace) -> int:
    add, remove = args.add or [], args.remove or []

    def local(store: Store, a: argparse.Namespace) -> Any:
        from modelhangar.core import accounts

        return accounts.set_roles(store, a.name, add=add, remove=remove).to_dict()

    def remote(client: Client, a: argparse.Namespace) -> Any:
        return client.post_json(f"/api/hangar/users/{_p(a.name)}/roles", {"add": add, "remove": remove})

    doc = _run(args, local, remote)
    if args.json:
        print_json(doc)
    else:
        say(f"{doc['name']}: roles {', '.join(doc['roles']) or '(none)'}")
    return 0


def cmd_user_quota(args: argparse.Namespace) -> int:
    """Cap what a user or organisation may store; `none` lifts a cap, an omitted one stays."""

    def local(store: Store, a: argparse.Namespace) -> Any:
        from modelhangar.core import accounts

        now = accounts.require(store, a.name)
        size = now.quota_bytes if a.max_bytes is None else a.max_bytes
        count = now.quota_models if a.max_models is None else a.max_models
        return accounts.set_quota(store, a.name, max_bytes=size or None, max_models=count or None).to_dict()

    def remote(client: Client, a: argparse.Namespace) -> Any:
        raise CliError("user quota works on the data directory only (no --host)")

    doc = _run(args, local, remote)
    if args.json:
        print_json(doc)
    else:
        size = "no cap" if doc["quota_bytes"] is None else f"{doc['quota_bytes']} bytes"
        count = "no cap" if doc["quota_models"] is None else f"{doc['quota_models']} models"
        say(f"{doc['name']}: at most {size}, {count}")
    return 0


# ---------------------------------------------------------------------------------------------- tokens


def cmd_token_add(args: argparse.Namespace) -> int:
    def local(store: Store, a: argparse.Namespace) -> Any:
        from modelhangar.core import accounts

        expires = None if a.expires is None else duration(a.expires) or None  # 0: never
        return accounts.add_token(store, a.user, name=a.name, expires_in=expires).to_dict()

    def remote(client: Client, a: argparse.Namespace) -> Any:
        return client.post_json("/api/hangar/tokens", {"user": a.user, "name": a.name, "expires": a.expires})

    doc = _run(args, local, remote)
    if args.json:
        print_json(doc)
    else:
        _print_token(doc, f"made token {doc['prefix']} ({doc['name']}) for {doc['principal']}")
    return 0


def _when(ts: Any, never: str = "-") -> str:
    return never if ts is None else human_time(ts)


def cmd_token_list(args: argparse.Namespace) -> int:
    def local(store: Store, a: argparse.Namespace) -> Any:
        from modelhangar.core import accounts

        return {"tokens": [t.to_dict() for t in accounts.list_tokens(store, a.user)]}

    def remote(client: Client, a: argparse.Namespace) -> Any:
        query = "" if a.user is None else f"?user={quote(a.user, safe='')}"
        return client.get_json(f"/api/hangar/tokens{query}")

    doc = _run(args, local, remote)
    if args.json:
        print_json(doc)
        return 0
    rows = []
    for t in doc["tokens"]:
        status = "revoked" if t["revoked_at"] is not None else "active" if t["active"] else "expired"
        rows.append(
            [
                t["prefix"],
                t["principal"],
                t["name"],
                _when(t["created_at"]),
                _when(t["last_used_at"], "never"),
                _when(t["expires_at"], "never"),
                status,
            ]
        )
    print_table(["PREFIX", "USER", "NAME", "CREATED", "LAST USED", "EXPIRES", "STATUS"], rows)
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    def local(store: Store, a: argparse.Namespace) -> Any:
        from modelhangar.core import accounts

        return accounts.revoke_token(store, a.prefix).to_dict()

    doc = _run(
        args, local, lambda c, a: c.post_json(f"/api/hangar/tokens/{_p(_handle(a.prefix))}/revoke", {})
    )
    if args.json:
        print_json(doc)
    else:
        say(f"revoked token {doc['prefix']} ({doc['name']}) of {doc['principal']}")
    return 0


def cmd_token_rotate(args: argparse.Namespace) -> int:
    def local(store: Store, a: argparse.Namespace) -> Any:
        from modelhangar.core import accounts

        return accounts.rotate_token(store, a.prefix).to_dict()

    doc = _run(
        args, local, lambda c, a: c.post_json(f"/api/hangar/tokens/{_p(_handle(a.prefix))}/rotate", {})
    )
    if args.json:
        print_json(doc)
    else:
        _print_token(doc, f"replaced by token {doc['prefix']} ({doc['name']}) of {doc['principal']}")
    return 0


# ---------------------------------------------------------------------------------------------- orgs


def cmd_org_add(args: argparse.Namespace) -> int:
    members = args.member or []

    def local(store: Store, a: argparse.Namespace) -> Any:
        from modelhangar.core import accounts

        return accounts.add_org(store, a.org, members).to_dict()

    doc = _run(args, local, lambda c, a: c.post_json("/api/hangar/orgs", {"name": a.org, "members": members}))
    if args.json:
        print_json(doc)
    else:
        say(f"created organisation {doc['name']}: members {', '.join(doc['members']) or '(none)'}")
    return 0


def cmd_org_members(args: argparse.Namespace) -> int:
    add, remove = args.add or [], args.remove or []

    def local(store: Store, a: argparse.Namespace) -> Any:
        from modelhangar.core import accounts

        return accounts.set_members(store, a.org, add=add, remove=remove).to_dict()

    def remote(client: Client, a: argparse.Namespace) -> Any:
        return client.post_json(f"/api/hangar/orgs/{_p(a.org)}/members", {"add": add, "remove": remove})

    doc = _run(args, local, remote)
    if args.json:
        print_json(doc)
    else:
        say(f"{doc['name']}: members {', '.join(doc['members']) or '(none)'}")
    return 0


# ---------------------------------------------------------------------------------------------- client


def cmd_visibility(args: argparse.Namespace) -> int:
    from modelhangar.cli.client import Client

    with Client(args.host, args.token) as client:
        doc = client.post_json(
            "/api/hangar/visibility", {"model": args.model, "visibility": args.visibility}, model=args.model
        )
    if args.json:
        print_json(doc)
    else:
        say(f"{doc['model']} is {doc['visibility']}")
    return 0


def cmd_whoami(args: argparse.Namespace) -> int:
    from modelhangar.cli.client import Client

    with Client(args.host, args.token) as client:
        doc = client.get_json("/api/hangar/whoami")
    if args.json:
        print_json(doc)
        return 0
    if doc.get("user") is None:
        say(f"{doc['name']} (the local admin: no token, on this machine)")
        return 0
    extra = [f"token {doc['token_name']}"] if doc.get("token_name") else []
    if doc.get("admin"):
        extra.insert(0, "admin")
    if doc.get("orgs"):
        extra.append(f"member of {', '.join(doc['orgs'])}")
    say(f"{doc['user']} ({'; '.join(extra)})" if extra else doc["user"])
    return 0
