"""Commands on models through a running server: list, show, cp, rm, du, trash."""

from __future__ import annotations

import argparse
import json
import math
import time
from datetime import datetime
from typing import Any

from modelhangar.cli.client import Client, response_json
from modelhangar.cli.confirm import asks, confirm
from modelhangar.cli.errors import CliError
from modelhangar.cli.output import human_size, human_time, parse_time, plural, print_json, print_table, say
from modelhangar.cli.wording import model_name, not_found, shown, trash_miss


def _models(doc: Any) -> list[dict[str, Any]]:
    models = doc.get("models") if isinstance(doc, dict) else None
    if not isinstance(models, list):
        raise CliError("the server's model list has no `models` array")
    return [m for m in models if isinstance(m, dict)]


def _newest_first(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def key(m: dict[str, Any]) -> tuple[float, str]:
        dt = parse_time(m.get("modified_at"))
        return (-(dt.timestamp() if dt else 0.0), str(m.get("model") or m.get("name") or ""))

    return sorted(models, key=key)


def cmd_list(args: argparse.Namespace) -> int:
    with Client(args.host, args.token) as client:
        response = client.request("GET", "/api/hangar/models", allow=(404,))
        with_unique = response.status_code != 404
        doc = response_json(response) if with_unique else client.get_json("/api/tags")
    models = _models(doc)
    if args.json:
        print_json(models)
        return 0
    headers = ["NAME", "ID", "SIZE", *(["UNIQUE"] if with_unique else []), "MODIFIED"]
    rows = []
    for m in _newest_first(models):
        row = [
            str(m.get("model") or m.get("name") or "?"),
            str(m.get("digest") or "")[:12],
            human_size(m.get("size")),
        ]
        if with_unique:
            row.append(human_size(m.get("unique_size")))
        row.append(human_time(m.get("modified_at")))
        rows.append(row)
    print_table(headers, rows)
    return 0


# ---------------------------------------------------------------------------------------------- show


def _parameter_count(n: Any) -> str:
    if not isinstance(n, int | float) or n <= 0:
        return ""
    for suffix, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{suffix}"
    return str(int(n))


def _model_section(doc: dict[str, Any]) -> list[tuple[str, str]]:
    details = doc.get("details") if isinstance(doc.get("details"), dict) else {}
    info = doc.get("model_info") if isinstance(doc.get("model_info"), dict) else {}
    assert isinstance(details, dict) and isinstance(info, dict)
    arch = str(info.get("general.architecture") or details.get("family") or "")
    rows = [
        ("architecture", arch),
        (
            "parameters",
            str(details.get("parameter_size") or _parameter_count(info.get("general.parameter_count"))),
        ),
        ("context length", str(info.get(f"{arch}.context_length", ""))),
        ("embedding length", str(info.get(f"{arch}.embedding_length", ""))),
        ("quantization", str(details.get("quantization_level") or "")),
        ("format", str(details.get("format") or "")),
    ]
    return [(k, v) for k, v in rows if v]


def _section(title: str, lines: list[str]) -> None:
    if not lines:
        return
    say(f"  {title}")
    for line in lines:
        say(f"    {line}")
    say("")


def _pairs(rows: list[tuple[str, str]]) -> list[str]:
    width = max((len(k) for k, _ in rows), default=0)
    return [f"{k:<{width}}    {v}" for k, v in rows]


def _excerpt(text: str, max_lines: int) -> list[str]:
    lines = text.strip("\n").splitlines()
    return [*lines[:max_lines], "..."] if len(lines) > max_lines else lines


def _short_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _missing(client: Client, raw: str) -> CliError:
    """Not found; or, when the trash holds a model of that name, how to get it back."""
    name = shown(raw)
    response = client.request("GET", "/api/hangar/trash", allow=(404,))
    doc = response_json(response) if response.status_code < 400 else None
    entries = doc.get("entries") if isinstance(doc, dict) else None
    for e in entries if isinstance(entries, list) else []:
        if isinstance(e, dict) and str(e.get("model")).lower() == name.lower():
            return CliError(
                f'model "{name}" is in the trash (deleted {human_time(e.get("deleted_at"))}); '
                f"restore it with: hangar trash restore {name}"
            )
    return not_found(raw)


def cmd_show(args: argparse.Namespace) -> int:
    model_name(args.model)
    with Client(args.host, args.token) as client:
        body = {"model": args.model, "verbose": args.verbose}
        response = client.request("POST", "/api/show", json_body=body, allow=(404,))
        if response.status_code == 404:
            raise _missing(client, args.model)
        doc = response_json(response)
    if not isinstance(doc, dict):
        raise CliError("the server's answer to /api/show is not a JSON object")
    if args.json:
        print_json(doc)
        return 0
    for flag in ("modelfile", "parameters", "template", "system", "license"):
        if getattr(args, flag):
            print(str(doc.get(flag) or ""))
            return 0
    _section("Model", _pairs(_model_section(doc)))
    caps = doc.get("capabilities")
    _section("Capabilities", [str(c) for c in caps] if isinstance(caps, list) else [])
    _section("Parameters", str(doc.get("parameters") or "").splitlines())
    _section("System", _excerpt(str(doc.get("system") or ""), 3))
    _section("Template", _excerpt(str(doc.get("template") or ""), 5 if not args.verbose else 10_000))
    _section("License", _excerpt(str(doc.get("license") or ""), 2 if not args.verbose else 10_000))
    info = doc.get("model_info")
    if args.verbose and isinstance(info, dict):
        _section("Metadata", _pairs([(str(k), _short_value(v)) for k, v in sorted(info.items())]))
    return 0


def cmd_cp(args: argparse.Namespace) -> int:
    source, destination = model_name(args.source), model_name(args.destination)
    with Client(args.host, args.token) as client:
        body = {"source": args.source, "destination": args.destination}
        client.request("POST", "/api/copy", json_body=body, model=args.source)
    if args.json:
        print_json({"source": source.display_shortest(), "destination": destination.display_shortest()})
    else:
        say(f"copied '{args.source}' to '{args.destination}'")
    return 0


# ---------------------------------------------------------------------------------------------- rm


def _blockers(plan: dict[str, Any] | None, fallback: str | None) -> str:
    items = plan.get("blockers") if plan else None
    if isinstance(items, list) and items:
        return "; ".join(
            f"{b.get('kind', '')} {b.get('id', '')}: {b.get('reason', '')}" if isinstance(b, dict) else str(b)
            for b in items
        )
    return (fallback or "refused").removeprefix("refused: ")


def _blob_count(plan: dict[str, Any]) -> str:
    n = len(plan.get("blobs") or [])
    return f"{n} blob" if n == 1 else f"{n} blobs"


def _kept(plan: dict[str, Any]) -> str:
    kept = [k for k in plan.get("kept") or [] if isinstance(k, dict)]
    if not kept:
        return ""
    size = sum(int(k.get("size") or 0) for k in kept)
    users = sorted({_display(str(k.get("used_by"))) for k in kept})
    noun = "blob" if len(kept) == 1 else "blobs"
    return f"; keeps {len(kept)} shared {noun} ({human_size(size)}) used by {', '.join(users)}"


def time_until(at: Any, *, now: float | None = None) -> str:
    """`in 42 s`, `in 12 min`, `in 24 hours` (and the clock time) for a POSIX time ahead."""
    if not isinstance(at, int | float) or isinstance(at, bool):
        return "later"
    delta = at - (time.time() if now is None else now)
    if delta <= 0.5:
        return "now"
    if delta < 120:
        span = f"{math.ceil(delta)} s"
    elif delta < 7200:
        span = f"{round(delta / 60)} min"
    elif delta < 172800:
        span = f"{round(delta / 3600)} hours"
    else:
        span = f"{round(delta / 86400)} days"
    clock = datetime.fromtimestamp(at).strftime("%H:%M:%S" if delta < 86400 else "%Y-%m-%d %H:%M")
    return f"in {span} (at {clock})"


TRASH_REASON = "kept in the trash"


def _later(plan: dict[str, Any]) -> str:
    """`; 3.1 GB more in 42 s: just used by an upload` for each later part of a plan."""
    parts = []
    for item in plan.get("later") or []:
        if isinstance(item, dict) and item.get("reason") != TRASH_REASON:
            when = time_until(item.get("at"))
            parts.append(f"{human_size(item.get('bytes'))} more {when}: {item.get('reason')}")
    return "".join(f"; {p}" for p in parts)


def _expiry(plan: dict[str, Any]) -> str:
    """` in 24 hours (at ...)`: when the trash entry of a plan expires."""
    ats = [
        float(x.get("at") or 0.0)
        for x in plan.get("later") or []
        if isinstance(x, dict) and x.get("reason") == TRASH_REASON
    ]
    return f" {time_until(max(ats))}" if ats else ""


def rm_line(result: dict[str, Any]) -> str:
    """One line per model for `hangar rm`: what goes now, what goes later and when, and why."""
    name = str(result.get("model"))
    status = result.get("status")
    plan = result.get("plan") if isinstance(result.get("plan"), dict) else None
    total = human_size(int(plan.get("bytes_freed") or 0)) if plan else "0 B"
    now_ = human_size(int(plan.get("bytes_now") or 0)) if plan else "0 B"
    if status == "deleted" and plan is not None:
        return f"deleted {name} (freed {now_}{_later(plan)})"
    if status == "trashed" and plan is not None:
        return (
            f"moved {name} to trash (frees {total} when it expires{_expiry(plan)}; "
            f"hangar trash restore {name})"
        )
    if status == "would_delete" and plan is not None:
        if plan.get("trash"):
            what = (
                f"moves it to the trash, frees {total} ({_blob_count(plan)}) when it expires{_expiry(plan)}"
            )
        else:
            what = f"frees {now_} now ({_blob_count(plan)}){_later(plan)}"
        return f"would delete {name}: {what}{_kept(plan)}"
    if status == "not_found":
        return f"not found: {name}"
    if status == "refused":
        return f"refused {name}: {_blockers(plan, result.get('error'))}"
    if status == "invalid":
        return f"invalid name: {name}"
    return f"{status} {name}: {result.get('error') or ''}".rstrip(": ")


def result_line(result: dict[str, Any]) -> str:
    """`rm_line`, but a missing model or an invalid name in the server's one wording for it."""
    if result.get("status") in ("not_found", "invalid") and result.get("error"):
        return str(result["error"])
    return rm_line(result)


def _delete(client: Client, body: dict[str, Any]) -> dict[str, Any]:
    response = client.request("POST", "/api/hangar/delete", json_body=body, allow=(404,))
    if response.status_code == 404:
        raise CliError(f"the server at {client.address} has no modelhangar API (POST /api/hangar/delete)")
    doc = response_json(response)
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
        raise CliError("the server's answer to /api/hangar/delete has no `results`")
    return doc


def preview_lines(doc: dict[str, Any]) -> tuple[list[str], int]:
    """The lines of a dry run's results, and how many models it would delete."""
    results = [r for r in doc.get("results") or [] if isinstance(r, dict)]
    return [result_line(r) for r in results], sum(r.get("status") == "would_delete" for r in results)


def cmd_rm(args: argparse.Namespace) -> int:
    body = {"models": args.models, "dry_run": args.dry_run, "purge": args.purge}
    with Client(args.host, args.token) as client:
        if args.purge and len(args.models) > 1 and not args.dry_run and asks(args.yes):
            lines, n = preview_lines(_delete(client, {**body, "dry_run": True}))
            if n:
                confirm(lines, f"delete {plural(n, 'model')} for good (no trash)?")
        doc = _delete(client, body)
    if args.json:
        print_json(doc)
    else:
        for result in doc["results"]:
            say(result_line(result if isinstance(result, dict) else {}))
    return 0 if doc.get("ok") else 1


# ---------------------------------------------------------------------------------------------- du, trash


DU_PAGE = 1000


def _sharers_text(m: dict[str, Any]) -> str:
    names = [str(s) for s in m.get("shared_with") or []]
    count = int(m.get("shared_with_count") or len(names))
    if not names:
        return "-"
    more = count - len(names)
    return ", ".join(names) + (f" and {more} more" if more > 0 else "")


def cmd_du(args: argparse.Namespace) -> int:
    with Client(args.host, args.token) as client:
        doc = client.get_json(f"/api/hangar/du?limit={DU_PAGE}")
        models = _models(doc)
        while len(models) < int(doc.get("model_count") or 0):
            page = client.get_json(f"/api/hangar/du?limit={DU_PAGE}&offset={len(models)}")
            more = _models(page)
            if not more:
                break
            models += more
    doc["models"] = models
    if args.json:
        print_json(doc)
        return 0
    rows = [
        [
            str(m.get("model")),
            human_size(m.get("size")),
            human_size(m.get("unique_size")),
            human_size(m.get("shared_size")),
            _sharers_text(m),
        ]
        for m in models
    ]
    print_table(["NAME", "SIZE", "UNIQUE", "SHARED", "SHARED WITH"], rows)
    say("")
    breakdown = doc.get("breakdown") if isinstance(doc.get("breakdown"), dict) else {}
    labels = doc.get("categories") if isinstance(doc.get("categories"), dict) else {}
    until = doc.get("waiting_until") if isinstance(doc.get("waiting_until"), dict) else {}
    lines = []
    for key, n in breakdown.items():
        if not n and key != "models":
            continue
        label = str(labels.get(key, key))
        if key in until:
            label += f", the last {time_until(until[key])}"
        lines.append([human_size(n), label])
    print_table(["BYTES", "WHERE"], lines)
    say(f"total on disk: {human_size(doc.get('total'))} in {doc.get('blobs')} blobs")
    return 0


def _expires_in(value: Any) -> str:
    text = human_time(value)
    return text.removesuffix(" from now") if text.endswith(" from now") else "at the next gc"


def cmd_trash_list(args: argparse.Namespace) -> int:
    with Client(args.host, args.token) as client:
        doc = client.get_json("/api/hangar/trash")
    entries = doc.get("entries") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise CliError("the server's trash list has no `entries`")
    if args.json:
        print_json(entries)
        return 0
    rows = [
        [
            str(e.get("id")),
            str(e.get("model"))
            + (
                f" (replaced by {str(e['replaced_by']).removeprefix('sha256:')[:12]})"
                if e.get("replaced_by")
                else ""
            ),
            human_size(e.get("size")),
            human_time(e.get("deleted_at")),
            _expires_in(e.get("expires_at")),
        ]
        for e in entries
        if isinstance(e, dict)
    ]
    print_table(["ID", "NAME", "SIZE", "DELETED", "EXPIRES IN"], rows)
    return 0


def _display(name: str) -> str:
    """Ollama's shortest form of a model name (`mine` → `mine:latest`); other text unchanged."""
    return shown(name)


def cmd_trash_restore(args: argparse.Namespace) -> int:
    if not args.model.isdigit():
        model_name(args.model)
    ident = args.model if args.model.isdigit() else _display(args.model)
    body: dict[str, Any] = {"model": ident}
    if args.as_name is not None:
        body["as"] = model_name(args.as_name).display_shortest()
    with Client(args.host, args.token) as client:
        response = client.request("POST", "/api/hangar/trash/restore", json_body=body, allow=(404,))
        if response.status_code == 404:
            raise trash_miss(args.model)
        doc = response_json(response)
    restored = doc.get("restored") if isinstance(doc, dict) else None
    if args.json:
        print_json(doc)
    else:
        say(f"restored {restored or args.model}")
    return 0
