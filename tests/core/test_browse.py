"""The web UI's listing figures: what deleting a whole model frees, by the planner's rule (its previews)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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


def _check_kept_figures(kit: Kit) -> None:
    """The figures the list sorts by (kept by the writers, core/repo_figures.py) are the ones it shows, and
    each model's `freed` is what deleting it would free (README, "Safety rules" 2)."""
    import sqlalchemy as sa

    from modelhangar.core.catalog import schema as t

    with kit.store.catalog.read() as conn:
        repos = conn.execute(sa.select(t.repositories)).all()
        shown = browse.sizes(conn, [r.id for r in repos])
        for r in repos:
            newest = conn.execute(
                sa.select(sa.func.max(t.tags.c.modified_at)).where(t.tags.c.repository_id == r.id)
            ).scalar()
            assert (r.size, r.versions) == (shown[r.id][0], shown[r.id][2]), r.name
            assert r.modified_at == (newest if newest is not None else r.created_at), r.name
    for sort in browse.SORTS:
        page = browse.models_page(kit.store, Actor(), sort=sort, per_page=100)
        if sort == "size":
            assert [x.size for x in page.rows] == sorted((x.size for x in page.rows), reverse=True)
        for row in page.rows:
            plan = kit.planner.preview([[Target("repository", row.repository)]], Actor(), purge=True)[0]
            assert row.freed == plan.bytes_freed, row.name


def test_kept_figures_follow_every_writer(make_kit: Any) -> None:
    from modelhangar.core import trash

    kit = make_kit(HANGAR_TRASH_RETENTION="1h")
    kit.create("base", [b"shared" * 100, b"base-only" * 10])
    kit.create("derived", [b"shared" * 100, b"derived-only" * 7])
    kit.create("derived", [b"shared" * 100, b"v2" * 50], tag="v2")
    _check_kept_figures(kit)
    kit.store.copy_tag(PREFIX + "derived", "v2", PREFIX + "copy", "latest")
    _check_kept_figures(kit)
    kit.create("derived", [b"shared" * 100, b"v3" * 300], tag="v2")  # an overwrite
    _check_kept_figures(kit)
    assert kit.delete("derived", "v2").ok  # one tag: to the trash
    _check_kept_figures(kit)
    entry = next(e for e in trash.list_trash(kit.store, Actor()) if e.tag == "v2")
    trash.restore(kit.store, entry.id, Actor())
    _check_kept_figures(kit)
    assert kit.planner.delete([Target("repository", PREFIX + "base")], Actor()).ok
    _check_kept_figures(kit)
    trash.empty_trash(kit.store, Actor())
    _check_kept_figures(kit)
    sizes = [r.size for r in browse.models_page(kit.store, Actor(), sort="size").rows]
    assert sizes == sorted(sizes, reverse=True) and len(sizes) == 2
