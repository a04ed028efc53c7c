"""`hangar prune`, `hangar trash empty` and `hangar audit`: retention and the record of deletions."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from modelhangar.cli.client import Client
from modelhangar.cli.confirm import asks, confirm
from modelhangar.cli.errors import CliError
from modelhangar.cli.model_commands import preview_lines, result_line
from modelhangar.cli.output import human_size, plural, print_json, print_table, say


def cmd_prune(args: argparse.Namespace) -> int:
    if all(x is None for x in (args.older_than, args.unused_for, args.keep_last, args.untagged_for)):
        raise CliError("prune needs --older-than, --unused-for, --keep-last or --untagged-for")
    body = {
        "older_than": args.older_than,
        "unused_for": args.unused_for,
        "keep_last": args.keep_last,
        "untagged_for": args.untagged_for,
        "match": args.match,
        "dry_run": args.dry_run,
        "purge": args.purge,
    }
    with Client(args.host, args.token) as client:
        if not args.dry_run and asks(args.yes):
            lines, n = preview_lines(client.post_json("/api/hangar/prune", {**body, "dry_run": True}))
            if n:
                confirm(lines, f"delete {plural(n, 'model')}{' for good (no trash)' if args.purge else ''}?")
        doc = client.post_json("/api/hangar/prune", body)
    if args.json:
        print_json(doc)
    else:
        results = doc.get("results") or []
        for result in results:
            say(result_line(result))
        if not results:
            say("nothing to prune")
    return 0 if doc.get("ok", True) else 1


def cmd_trash_empty(args: argparse.Namespace) -> int:
    body = {"older_than": args.older_than, "dry_run": args.dry_run}
    with Client(args.host, args.token) as client:
        if not args.dry_run and asks(args.yes):
            preview = client.post_json("/api/hangar/trash/empty", {**body, "dry_run": True})
            if names := preview.get("purged") or []:
                freed = human_size(preview.get("bytes_freed"))
                lines = [*(f"would purge {n}" for n in names), f"would free {freed}"]
                confirm(lines, f"purge {plural(len(names), 'trash entry', 'trash entries')} for good?")
        doc = client.post_json("/api/hangar/trash/empty", body)
    ok = doc.get("ok", True) is not False
    if args.json:
        print_json(doc)
        return 0 if ok else 1
    names = doc.get("purged") or []
    if not names:
        say("nothing to purge")
        return 0 if ok else 1
    verb = "would purge" if args.dry_run else "purged"
    for name in names:
        say(f"{verb} {name}")
    say(f"{'would free' if args.dry_run else 'freed'} {human_size(doc.get('bytes_freed'))}")
    return 0 if ok else 1


def _when(ts: Any) -> str:
    return datetime.fromtimestamp(float(ts)).strftime("%Y-%m-%d %H:%M:%S") if ts is not None else "-"


def cmd_audit(args: argparse.Namespace) -> int:
    path = "/api/hangar/audit" + (f"?{urlencode({'since': args.since})}" if args.since else "")
    with Client(args.host, args.token) as client:
        doc = client.get_json(path)
    entries: list[dict[str, Any]] = [e for e in doc.get("entries") or [] if isinstance(e, dict)]
    if args.json:
        print_json(entries)
        return 0
    rows = [
        [
            _when(e.get("at")),
            str(e.get("actor")),
            str(e.get("face")),
            str(e.get("action")),
            str(e.get("target"))[:60],
            "yes" if e.get("dry_run") else "",
            str(e.get("outcome")),
            human_size(e.get("bytes_freed")),
        ]
        for e in entries
    ]
    print_table(["TIME", "ACTOR", "FACE", "ACTION", "TARGET", "DRY RUN", "OUTCOME", "FREED"], rows)
    return 0
