"""`hangar`: argument parsing and dispatch; every failure ends as one line on stderr and exit code 1."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

from modelhangar import __version__
from modelhangar.cli import transfer_commands
from modelhangar.cli.errors import CliError, UsageError
from modelhangar.cli.settings import duration, duration_text, host_port

Command = Callable[[argparse.Namespace], int]


class _Commands:
    """A command module imported when one of its commands runs, so each command (`hangar serve`
    above all) imports only what it needs."""

    def __init__(self, module: str) -> None:
        self._module = f"modelhangar.cli.{module}"

    def __getattr__(self, name: str) -> Command:
        def command(args: argparse.Namespace) -> int:
            func: Command = getattr(importlib.import_module(self._module), name)
            return func(args)

        command.__name__ = name
        return command


account_commands = _Commands("account_commands")
create_command = _Commands("create_command")
model_commands = _Commands("model_commands")
policy_commands = _Commands("policy_commands")
store_commands = _Commands("store_commands")
serve_command = _Commands("serve_command")

EPILOG = """\
model commands talk to a running `hangar serve` at HANGAR_HOST (default 127.0.0.1:11435) or --host;
store commands (gc, fsck, import-ollama, export-ollama) open HANGAR_HOME (default ~/.hangar) or
--data-dir directly and are safe to run beside a server; migrate-blobs needs the servers stopped.
"""


class Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of printing usage and exiting with 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(self.prog, message)


def _client_opts(default: Any = None) -> Parser:
    p = Parser(add_help=False)
    p.add_argument(
        "--host",
        metavar="HOST:PORT",
        default=default,
        help="the server to talk to (default: $HANGAR_HOST or 127.0.0.1:11435)",
    )
    p.add_argument(
        "--token",
        metavar="TOKEN",
        default=default,
        help="the API token to send (default: $HANGAR_TOKEN; none on this machine's loopback)",
    )
    return p


def _store_opts() -> Parser:
    p = Parser(add_help=False)
    p.add_argument(
        "--data-dir", metavar="DIR", help="the data directory (default: $HANGAR_HOME or ~/.hangar)"
    )
    return p


def _json_opt(default: Any = False) -> Parser:
    p = Parser(add_help=False)
    p.add_argument(
        "--json", action="store_true", default=default, help="print JSON for scripts instead of text"
    )
    return p


def _yes(p: Parser, when: str) -> None:
    p.add_argument(
        "-y",
        "--yes",
        action="store_true",
        help=f"do not ask for confirmation {when} (it is asked only on a terminal)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="hangar",
        description="modelhangar: a self-hosted model registry with safe deletion.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"hangar {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    client, store, js = _client_opts(), _store_opts(), _json_opt()

    def add(name: str, func: Command, help: str, parents: list[Parser], **kw: Any) -> Parser:
        p: Parser = sub.add_parser(name, help=help, description=help, parents=parents, **kw)
        p.set_defaults(func=func)
        return p

    p = add("serve", serve_command.cmd_serve, "run the server (Ollama's API and modelhangar's)", [store])
    p.add_argument("--json", action="store_true", help="log JSON lines (one object per request) on stderr")
    p.add_argument(
        "--host",
        metavar="HOST:PORT",
        type=host_port,
        help="address to listen on (default: $HANGAR_HOST or 127.0.0.1:11435)",
    )
    p.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate (chain) file")
    p.add_argument("--tls-key", metavar="PEM", help="the private key of --tls-cert")

    add("list", model_commands.cmd_list, "list models", [client, js], aliases=["ls"])

    p = add("show", model_commands.cmd_show, "show a model's details", [client, js])
    p.add_argument("model", metavar="NAME")
    what = p.add_mutually_exclusive_group()
    for flag in ("modelfile", "parameters", "template", "system", "license"):
        what.add_argument(f"--{flag}", action="store_true", help=f"print only the {flag}")
    p.add_argument("-v", "--verbose", action="store_true", help="all metadata, full template and license")

    p = add(
        "cp",
        model_commands.cmd_cp,
        "copy a model to a new name (no bytes are copied)",
        [client, js],
        aliases=["copy"],
    )
    p.add_argument("source", metavar="SRC")
    p.add_argument("destination", metavar="DST")

    p = add("rm", model_commands.cmd_rm, "delete models (to the trash unless --purge)", [client, js])
    p.add_argument("models", metavar="NAME", nargs="+")
    p.add_argument(
        "--dry-run", action="store_true", help="say what would be deleted and freed; change nothing"
    )
    p.add_argument("--purge", action="store_true", help="skip the trash: free the space now")
    _yes(p, "before purging several models")

    p = add(
        "create", create_command.cmd_create, "create a model from a Modelfile or a base model", [client, js]
    )
    p.add_argument("model", metavar="NAME")
    p.add_argument("--from", dest="base", metavar="BASE", help="base model (a name, or a local .gguf file)")
    p.add_argument("-f", "--file", metavar="MODELFILE", help="path to a Modelfile (default: ./Modelfile)")

    transfer_commands.register(add, [client, js])

    add("du", model_commands.cmd_du, "disk usage per model: total, unique and shared bytes", [client, js])

    p = add("trash", model_commands.cmd_trash_list, "list or restore deleted models", [client, js])
    trash = p.add_subparsers(dest="trash_command", metavar="ACTION", parser_class=Parser)
    # options given before the action must survive the action's parser: it leaves them unset
    client_inner, js_inner = _client_opts(argparse.SUPPRESS), _json_opt(argparse.SUPPRESS)
    tp = trash.add_parser(
        "list",
        help="list the trash (the default)",
        description="list the trash",
        parents=[client_inner, js_inner],
    )
    tp.set_defaults(func=model_commands.cmd_trash_list)
    tp = trash.add_parser(
        "restore",
        help="restore a deleted model",
        description="restore a deleted model",
        parents=[client_inner, js_inner],
    )
    tp.add_argument("model", metavar="NAME|ID", help="the model name it was deleted under, or its trash id")
    tp.add_argument(
        "--as", dest="as_name", metavar="NEWNAME", help="restore under this name (the old one is taken again)"
    )
    tp.set_defaults(func=model_commands.cmd_trash_restore)
    tp = trash.add_parser(
        "empty",
        help="purge the trash now (frees its space)",
        description="purge the trash now (frees its space)",
        parents=[client_inner, js_inner],
    )
    tp.add_argument(
        "--older-than", metavar="DURATION", type=duration_text, help="only entries deleted before"
    )
    tp.add_argument("--dry-run", action="store_true", help="say what would be purged; change nothing")
    _yes(tp, "before purging")
    tp.set_defaults(func=policy_commands.cmd_trash_empty)

    p = add("prune", policy_commands.cmd_prune, "delete models a retention rule selects", [client, js])
    p.add_argument(
        "--older-than", metavar="DURATION", type=duration_text, help="modified longer ago than this"
    )
    p.add_argument(
        "--unused-for", metavar="DURATION", type=duration_text, help="not pulled/shown/used for this"
    )
    p.add_argument("--keep-last", metavar="N", type=int, help="keep the N newest tags of each repository")
    p.add_argument(
        "--untagged-for",
        metavar="DURATION",
        type=duration_text,
        help="also delete manifests untagged this long (registry pushes by digest, tags moved away)",
    )
    p.add_argument("--match", metavar="PATTERN", default="*", help="only models whose name matches this glob")
    p.add_argument("--dry-run", action="store_true", help="say what would be deleted; change nothing")
    p.add_argument("--purge", action="store_true", help="skip the trash")
    _yes(p, "before deleting")

    p = add(
        "audit",
        policy_commands.cmd_audit,
        "the audit log of deletions, restores, prunes and GC",
        [client, js],
    )
    p.add_argument("--since", metavar="DURATION", type=duration_text, help="only entries newer than this")

    p = add("gc", store_commands.cmd_gc, "reclaim space nothing references (expired trash too)", [store, js])
    p.add_argument("--dry-run", action="store_true", help="say what would be reclaimed; change nothing")
    p.add_argument(
        "--grace",
        metavar="DURATION",
        type=duration,
        help="leave blobs touched this recently (default: $HANGAR_GC_GRACE or 1h)",
    )

    p = add(
        "fsck", store_commands.cmd_fsck, "check the store's consistency (exit 1 on problems)", [store, js]
    )
    p.add_argument("--verify", action="store_true", help="also hash every blob (reads all bytes)")

    p = add(
        "migrate-blobs",
        store_commands.cmd_migrate_blobs,
        "move the store's blobs to a bucket or a directory (servers stopped; resumable, verified)",
        [store, js],
    )
    p.add_argument(
        "--to",
        metavar="PLACE",
        required=True,
        help="s3://BUCKET[/PREFIX], file:/DIR or a directory (blobs go to DIR/blobs), or `local` "
        "for the data directory's own files",
    )
    p.add_argument(
        "--delete-source",
        action="store_true",
        help="delete the old copies once every blob verified in the new place and the store switched",
    )
    p.add_argument(
        "--allow-unknown",
        action="store_true",
        help="go on although the destination holds blobs this store does not know "
        "(its old copies; its GC then reclaims them)",
    )
    p.add_argument("--jobs", metavar="N", type=_jobs, default=4, help="blobs copied at once (default 4)")

    p = add(
        "import-ollama",
        store_commands.cmd_import_ollama,
        "adopt the models of an Ollama models directory",
        [store, js],
    )
    p.add_argument(
        "dir",
        metavar="DIR",
        nargs="?",
        help="Ollama's models directory (default: $OLLAMA_MODELS or ~/.ollama/models)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a model the store holds under the same name with another manifest "
        "(the old one goes to the trash)",
    )

    p = add(
        "export-ollama",
        store_commands.cmd_export_ollama,
        "write models into a directory in Ollama's layout",
        [store, js],
    )
    p.add_argument("dir", metavar="DIR", help="the target models directory (created if absent)")
    p.add_argument("models", metavar="MODEL", nargs="*", help="models to export (default: all)")
    _account_commands(sub, client, js)
    return parser


ACCOUNTS_EPILOG = """\
these work on HANGAR_HOME (or --data-dir) directly, like gc, with no server needed; with --host
they go through that server's /api/hangar admin endpoints instead (send an admin's --token).
"""


def _account_commands(sub: Any, client: Parser, js: Parser) -> None:
    """`user`, `token`, `org` (store commands, or through a server with --host), `visibility`, `whoami`."""
    both = [_store_opts(), _client_opts(), _json_opt()]

    def group(name: str, help: str) -> Any:
        p = sub.add_parser(name, help=help, description=help, epilog=ACCOUNTS_EPILOG)
        p.set_defaults(func=lambda args: _group_help(p))
        return p.add_subparsers(dest=f"{name}_command", metavar="ACTION", parser_class=Parser)

    def action(group: Any, name: str, func: Command, help: str) -> Parser:
        p: Parser = group.add_parser(name, help=help, description=help, parents=both, epilog=ACCOUNTS_EPILOG)
        p.set_defaults(func=func)
        return p

    users = group("user", "users: add (prints the first token once), list, remove, roles")
    p = action(users, "add", account_commands.cmd_user_add, "create a user and print its first token once")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--admin", action="store_true", help="an admin may do everything")
    p.add_argument("--role", action="append", metavar="ROLE", help="a backend role (repeatable)")
    action(users, "list", account_commands.cmd_user_list, "list users and organisations")
    p = action(
        users, "remove", account_commands.cmd_user_remove, "remove a user (refused while it owns models)"
    )
    p.add_argument("name", metavar="NAME")
    p = action(users, "roles", account_commands.cmd_user_roles, "add or remove a user's backend roles")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--add", action="append", metavar="ROLE", help="a role to add (repeatable)")
    p.add_argument("--remove", action="append", metavar="ROLE", help="a role to remove (repeatable)")

    p = action(users, "quota", account_commands.cmd_user_quota, "cap what a user or organisation may store")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--max-bytes", type=_cap, metavar="BYTES", help="bytes it may store (0: no cap)")
    p.add_argument("--max-models", type=_cap, metavar="N", help="models (tags) it may hold (0: no cap)")

    tokens = group("token", "API tokens: add (printed once), list, revoke, rotate")
    p = action(tokens, "add", account_commands.cmd_token_add, "make a token for a user and print it once")
    p.add_argument("user", metavar="USER")
    p.add_argument("--name", default="default", metavar="N", help="the token's name (default: default)")
    p.add_argument("--expires", metavar="DURATION", type=duration_text, help="expire after this, e.g. 30d")
    p = action(tokens, "list", account_commands.cmd_token_list, "list tokens by prefix (never the secrets)")
    p.add_argument("user", metavar="USER", nargs="?", help="only this user's tokens")
    p = action(
        tokens, "revoke", account_commands.cmd_token_revoke, "revoke a token: it stops working at once"
    )
    p.add_argument(
        "prefix", metavar="PREFIX", help="the token's prefix hgr_<id> (a unique beginning is enough)"
    )
    p = action(
        tokens, "rotate", account_commands.cmd_token_rotate, "replace a token by a new one (printed once)"
    )
    p.add_argument("prefix", metavar="PREFIX")

    orgs = group("org", "organisations: add, members")
    p = action(orgs, "add", account_commands.cmd_org_add, "create an organisation (its members act for it)")
    p.add_argument("org", metavar="ORG")
    p.add_argument("--member", nargs="+", action="extend", metavar="USER", help="its members")
    p = action(orgs, "members", account_commands.cmd_org_members, "add or remove an organisation's members")
    p.add_argument("org", metavar="ORG")
    p.add_argument("--add", nargs="+", action="extend", metavar="USER", help="users to add")
    p.add_argument("--remove", nargs="+", action="extend", metavar="USER", help="users to remove")

    p = sub.add_parser(
        "visibility",
        help="make a model public (everyone may read it) or private (its owner only)",
        description="make a model public (everyone may read it) or private (its owner only)",
        parents=[client, js],
    )
    p.add_argument("model", metavar="NAME")
    p.add_argument("visibility", choices=["public", "private"])
    p.set_defaults(func=account_commands.cmd_visibility)
    p = sub.add_parser(
        "whoami",
        help="who the server thinks you are",
        description="who the server thinks you are",
        parents=[client, js],
    )
    p.set_defaults(func=account_commands.cmd_whoami)


def _jobs(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 64:
        raise argparse.ArgumentTypeError(f"invalid job count {text!r}: a whole number from 1 to 64")
    return int(text)


def _cap(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"invalid cap {text!r}: a whole number, 0 for none")
    return int(text)


def _group_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 1


def _fail(message: str) -> int:
    print(f"hangar: {message}", file=sys.stderr, flush=True)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        func: Command | None = getattr(args, "func", None)
        if func is None:
            parser.print_help(sys.stderr)
            return 1
        return func(args)
    except UsageError as e:
        return _fail(f"{e} (see `{e.prog} --help`)")
    except CliError as e:
        return _fail(str(e))
    except SystemExit as e:  # --help, --version
        return e.code if isinstance(e.code, int) else 0 if e.code is None else _fail(str(e.code))
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 1
    except Exception as e:
        if os.environ.get("HANGAR_DEBUG"):
            traceback.print_exc()
        return _fail(f"unexpected error: {type(e).__name__}: {e} (set HANGAR_DEBUG=1 for a traceback)")


if __name__ == "__main__":
    raise SystemExit(main())
