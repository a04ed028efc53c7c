"""What the web UI says: sizes, times, a deletion plan in words, a bar chart in SVG. No policy here:
every figure comes from the core (the planner's plans, `core/usage.py`, `core/browse.py`)."""

from __future__ import annotations

import time
from collections import defaultdict
from html import escape
from typing import Any

from modelhangar.core.names import display_repository, display_stored
from modelhangar.core.planner import TRASH_REASON, Plan

UNITS = ("B", "KB", "MB", "GB", "TB", "PB")


def size(n: int | float | None) -> str:
    """Decimal units with one decimal, as Ollama prints them: `2.0 GB`, `512 B`."""
    value = float(n or 0)
    for unit in UNITS:
        if abs(value) < 1000 or unit == UNITS[-1]:
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def when(ts: float | None) -> str:
    if ts is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


def ago(ts: float | None, at: float | None = None) -> str:
    if ts is None:
        return "never"
    return span((at or time.time()) - ts) + " ago"


def span(seconds: float) -> str:
    """`3 minutes`, `2 hours`, `5 days`."""
    s = max(0.0, seconds)
    for unit, n in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if s >= n:
            k = int(s // n)
            return f"{k} {unit}{'s' if k != 1 else ''}"
    k = int(s)
    return f"{k} second{'s' if k != 1 else ''}"


def model(stored: str) -> str:
    """A plan's `repository:tag` (or `repository@digest`) in its shortest form."""
    if "@" in stored:
        repo, _, digest = stored.partition("@")
        return f"{display_repository(repo)}@{short_digest(digest)}"
    repo, _, tag = stored.rpartition(":")
    return (display_stored(repo, tag) or stored) if repo else display_repository(stored)


def holder(text: str) -> str:
    if text.startswith("the trash entry of "):
        return "the trash entry of " + model(text.removeprefix("the trash entry of "))
    if ":" in text or "@" in text:
        return model(text)
    return text


def short_digest(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def plan_sentences(plan: Plan, label: str) -> list[str]:
    """The preview in words: what it frees, which layers stay and who keeps them, when space comes back
    (the trash's expiry, and the reuse fuse's delay for blobs an upload just used)."""
    out = [f"Deleting {label} frees {size(plan.bytes_freed)}."]
    kept: dict[str, list[int]] = defaultdict(list)
    for k in plan.kept:
        kept[holder(str(k["used_by"]))].append(int(k["size"]))
    for who, sizes in kept.items():
        n = len(sizes)
        verb = "stays" if n == 1 else "stay"
        pronoun = "it" if n == 1 else "them"
        out.append(f"{_plural(n, 'layer')} ({size(sum(sizes))}) {verb}: {who} uses {pronoun}.")
    if plan.trash and plan.bytes_freed:
        later = [x for x in plan.later if x.get("reason") == TRASH_REASON]
        if later:
            due = max(float(x["at"]) for x in later)
            out.append(
                f"It goes to the trash first: restorable for {span(due - time.time())}; "
                "the space comes back when the trash entry expires or the trash is emptied."
            )
    elif plan.trash:
        out.append("It goes to the trash first, restorable until the trash entry expires.")
    for x in plan.later:  # the reuse fuse (README, "Safety rules" 2), as `hangar rm` says it
        if x.get("reason") != TRASH_REASON and x.get("bytes"):
            left = float(x.get("at") or 0.0) - time.time()
            when = f"in {span(left)}" if left >= 1 else "in a moment"
            out.append(f"{size(x['bytes'])} of it comes back {when}, not at once: {x['reason']}.")
    for w in plan.warnings:
        out.append(f"It will break {w.kind} {w.id}: {w.reason}.")
    return out


def blocker_text(kind: str, ident: str, reason: str) -> str:
    if kind == "permission":
        return f"You may not delete {display_repository(ident)}: {reason}."
    return f"{kind} {ident}: {reason}"


def bar_chart(items: list[tuple[str, int, int, str]], *, width: int = 640) -> str:
    """A horizontal bar chart as inline SVG: per item (label, size, freed, link), a bar of its size with
    the part deleting it frees in a darker shade (the table beside it links each model).
    Drawn on the server; no script, no external asset."""
    if not items:
        return ""
    bar_h, gap, label_w = 22, 10, 180
    top = max(x[1] for x in items) or 1
    plot = width - label_w - 90
    height = len(items) * (bar_h + gap) + 30
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="100%" '
        f'aria-labelledby="chart-title chart-desc" xmlns="http://www.w3.org/2000/svg">',
        '<title id="chart-title">The biggest models</title>',
        '<desc id="chart-desc">Each bar is a model\'s size; its dark part is what deleting it frees.</desc>',
    ]
    for i, (label, total, freed, _link) in enumerate(items):
        y = i * (bar_h + gap)
        w = max(1.0, plot * total / top)
        wf = plot * freed / top
        name = escape(label)
        parts.append(
            "<g>"
            f"<title>{name}: {size(total)}, deleting it frees {size(freed)}</title>"
            f'<text class="label" x="{label_w - 8}" y="{y + bar_h * 0.7:.1f}" text-anchor="end">'
            f"{escape(label if len(label) <= 24 else label[:23] + '…')}</text>"
            f'<rect class="bar" x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" rx="3"/>'
            f'<rect class="freed" x="{label_w}" y="{y}" width="{wf:.1f}" height="{bar_h}" rx="3"/>'
            f'<text class="value" x="{label_w + w + 6:.1f}" y="{y + bar_h * 0.7:.1f}">{size(total)}</text>'
            "</g>"
        )
    y = len(items) * (bar_h + gap) + 12
    parts.append(
        f'<rect class="freed" x="{label_w}" y="{y}" width="14" height="12"/>'
        f'<text class="legend" x="{label_w + 20}" y="{y + 11}">freed by deleting it</text>'
        f'<rect class="bar" x="{label_w + 190}" y="{y}" width="14" height="12"/>'
        f'<text class="legend" x="{label_w + 210}" y="{y + 11}">shared, stays</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def filters() -> dict[str, Any]:
    return {"size": size, "when": when, "ago": ago, "short": short_digest, "model": model, "span": span}
