"""`hangar pull` and `hangar push`: the server's transfer progress as progress bars."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported when a transfer runs, not when the parser is built
    from rich.progress import TaskID


def _run(args: argparse.Namespace, path: str) -> int:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from modelhangar.cli.client import Client
    from modelhangar.cli.output import console, print_json, say

    body = {"model": args.model, "insecure": args.insecure, "stream": True}
    events: list[dict[str, Any]] = []
    with Client(args.host) as client:
        if args.json:
            events = list(client.stream_ndjson(path, body))
            print_json(events[-1] if events else {})
            return 0
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
        )
        tasks: dict[str, TaskID] = {}
        with Progress(*columns, console=console(stderr=True), transient=False) as progress:
            for event in client.stream_ndjson(path, body):
                digest, total = event.get("digest"), event.get("total")
                if digest and isinstance(total, int):
                    if digest not in tasks:
                        tasks[digest] = progress.add_task(str(event.get("status")), total=total)
                    progress.update(tasks[digest], completed=int(event.get("completed") or 0))
                else:
                    progress.console.print(str(event.get("status")))
    say(f"{'pulled' if path.endswith('pull') else 'pushed'} {args.model}")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    return _run(args, "/api/pull")


def cmd_push(args: argparse.Namespace) -> int:
    return _run(args, "/api/push")


def register(add: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add `pull` and `push` with `add(name, func, help, parents)` from main.py."""
    for name, func, help in (
        ("pull", cmd_pull, "pull a model from a registry (host[:port]/namespace/model:tag)"),
        ("push", cmd_push, "push a model to the registry its name points at"),
    ):
        p = add(name, func, help, parents)
        p.add_argument("model", metavar="NAME")
        p.add_argument("--insecure", action="store_true", help="use plain HTTP (a registry on your network)")
