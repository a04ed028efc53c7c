"""`hangar user add` and `hangar user roles`: accounts and their backend roles (OpenSearch's access
control), on HANGAR_HOME directly like the other store commands (`core/accounts.py` does the work)."""

from __future__ import annotations

import argparse
from typing import Any

from modelhangar.cli.errors import CliError
from modelhangar.cli.output import print_json, say
from modelhangar.cli.settings import settings_from_env
from modelhangar.cli.store_commands import open_store
from modelhangar.core.errors import HangarError


def cmd_user_add(args: argparse.Namespace) -> int:
    from modelhangar.core import accounts

    with open_store(settings_from_env(args.data_dir)) as store:
        try:
            new = accounts.add_user(store, args.name, admin=args.admin, roles=args.role or ())
        except HangarError as e:
            raise CliError(str(e)) from e
        except Exception as e:  # a name already taken: the catalog's unique key
            if accounts.get(store, args.name) is not None:
                raise CliError(f"user {args.name.lower()} exists already") from e
            raise
        user = accounts.require(store, args.name)
    if args.json:
        print_json({**user.to_dict(), "token": new.token})
    else:
        say(
            f"user {user.name} added{' (admin)' if args.admin else ''}, roles: {', '.join(user.roles) or '-'}"
        )
        say(f"token (shown once): {new.token}")
    return 0


def cmd_user_roles(args: argparse.Namespace) -> int:
    from modelhangar.core import accounts

    with open_store(settings_from_env(args.data_dir)) as store:
        try:
            user = accounts.set_roles(store, args.name, add=args.add or (), remove=args.remove or ())
        except HangarError as e:
            raise CliError(str(e)) from e
    if args.json:
        print_json(user.to_dict())
    else:
        say(f"{user.name}: {', '.join(user.roles) or 'no roles'}")
    return 0


def register(add: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add `user add` and `user roles` with `add(name, func, help, parents)` from main.py."""
    p = add("user", cmd_user_roles, "add users, change their backend roles", [])
    sub = p.add_subparsers(dest="user_command", metavar="ACTION", required=True, parser_class=type(p))
    up = sub.add_parser("add", help="add a user (prints its first token)", parents=parents)
    up.add_argument("name", metavar="NAME")
    up.add_argument("--role", action="append", metavar="ROLE", help="a backend role (repeat for more)")
    up.add_argument("--admin", action="store_true", help="an admin: allowed everything")
    up.set_defaults(func=cmd_user_add)
    rp = sub.add_parser("roles", help="add or remove a user's backend roles", parents=parents)
    rp.add_argument("name", metavar="NAME")
    rp.add_argument("--add", action="append", metavar="ROLE")
    rp.add_argument("--remove", action="append", metavar="ROLE")
    rp.set_defaults(func=cmd_user_roles)
