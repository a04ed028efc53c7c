"""The web UI's listing figures: what deleting a whole model frees, by the planner's rule (its previews)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from modelhangar.core import browse
from modelhangar.core.planner import Target
from modelhangar.core.store import Actor

if TYPE_CHECKING:
    from conftest import Kit

PREFIX = "registry.ollama.ai/library/"


def test_freed_agrees_with_the_planner_s_preview(kit: Kit) -> None:
    kit.create("base", [b"shared" * 100, b"base-only" * 10])
    kit.create("derived", [b"shared" * 100, b"derived-only" * 7])
    kit.create("derived", [b"shared" * 100, b"v2" * 50], tag="v2")
    kit.create("alone", [b"alone" * 33])
    page = browse.models_page(kit.store, Actor(), sort="size")
    assert {r.name for r in page.rows} == {"base", "derived", "alone"} and page.total == 3
    for row in page.rows:
        plan = kit.planner.preview([[Target("repository", row.repository)]], Actor(), purge=True)[0]
        assert row.freed == plan.bytes_freed, row.name
    assert browse.models_page(kit.store, Actor(), text="deriv").total == 1
