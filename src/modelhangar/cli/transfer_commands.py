"""`hangar pull` and `hangar push`: the server's transfer progress as progress bars."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from modelhangar.cli.errors import CliError
from modelhangar.cli.wording import model_name

if TYPE_CHECKING:  # imported when a transfer runs, not when the parser is built
    from rich.progress import TaskID

    from modelhangar.cli.client import Client


def _events(client: Client, path: str, body: dict[str, Any], local: str) -> Iterator[dict[str, Any]]:
    """The server's progress events; a missing model (here for a push, at the registry for a pull)
    in the one wording for it."""
    pull = path.endswith("pull")
    try:
        yield from client.stream_ndjson(path, body, model=None if pull else local)
    except CliError as e:
        if pull and str(e) == "pull model manifest: file does not exist":
            name = model_name(body["model"])
            raise CliError(f'model "{name.display_shortest()}" not found at {name.host}') from e
        raise


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

    target = args.destination or args.model
    model_name(args.model)
    model_name(target)
    body: dict[str, Any] = {"model": target, "insecure": args.insecure, "stream": True}
    if args.destination:
        body["source"] = args.model
    with Client(args.host, args.token) as client:
        if args.json:
            events = list(_events(client, path, body, args.model))
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
            for event in _events(client, path, body, args.model):
                digest, total = event.get("digest"), event.get("total")
                if digest and isinstance(total, int):
                    if digest not in tasks:
                        tasks[digest] = progress.add_task(str(event.get("status")), total=total)
                    progress.update(tasks[digest], completed=int(event.get("completed") or 0))
                else:
                    progress.console.print(str(event.get("status")))
    if path.endswith("pull"):
        say(f"pulled {args.model}")
    else:
        say(f"pushed {args.model}" + (f" as {args.destination}" if args.destination else ""))
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    args.destination = None
    return _run(args, "/api/pull")


def cmd_push(args: argparse.Namespace) -> int:
    return _run(args, "/api/push")


def register(add: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add `pull` and `push` with `add(name, func, help, parents)` from main.py."""
    p = add("pull", cmd_pull, "pull a model from a registry (host[:port]/namespace/model:tag)", parents)
    p.add_argument("model", metavar="NAME")
    p.add_argument("--insecure", action="store_true", help="use plain HTTP (a registry on your network)")
    p = add(
        "push",
        cmd_push,
        "push a model to the registry its name (or DEST) points at",
        parents,
        epilog="`hangar push tiny 127.0.0.1:5000/team/tiny:v1` pushes the local model tiny under the "
        "remote name, without renaming it here.",
    )
    p.add_argument("model", metavar="NAME", help="the local model (host[:port]/namespace/model:tag)")
    p.add_argument("destination", metavar="DEST", nargs="?", help="push it under this name (default: NAME)")
    p.add_argument("--insecure", action="store_true", help="use plain HTTP (a registry on your network)")
