"""The lookups a delete makes use an index on both databases (README, "Safety rules" 4): a delete must
cost what its own model costs, never a scan of tables that grow with the store.

Each statement is the one the core runs (built the same way), asked for its plan with EXPLAIN. On
PostgreSQL, sequential scans are switched off for the session, so the question is whether an index
*can* serve the lookup (tiny test tables would otherwise always be scanned).
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from modelhangar.core.catalog import schema as t
from modelhangar.core.store import Store

D = "sha256:" + "ab" * 32

LOOKUPS: dict[str, tuple[Any, str]] = {
    "who still names this blob": (
        sa.select(sa.literal(1)).where(t.manifest_blobs.c.blob_digest == D).limit(1),
        "ix_manifest_blobs_blob",
    ),
    "which tags hold this manifest": (
        sa.select(t.tags.c.name).where(t.tags.c.manifest_digest == D).limit(1),
        "ix_tags_manifest",
    ),
    "is the manifest still tagged in its repository": (
        sa.select(sa.literal(1)).where(t.tags.c.repository_id == 1, t.tags.c.manifest_digest == D).limit(1),
        "ix_tags_repo_manifest ix_tags_manifest",
    ),
    "which repositories hold this manifest": (
        sa.select(sa.literal(1)).where(t.repo_manifests.c.manifest_digest == D).limit(1),
        "ix_repo_manifests_manifest",
    ),
    "does a trash entry hold this manifest": (
        sa.select(sa.literal(1)).where(t.trash.c.manifest_digest == D).limit(1),
        "ix_trash_manifest",
    ),
    "does an index hold this manifest": (
        sa.select(sa.literal(1)).where(t.manifest_children.c.child_digest == D).limit(1),
        "ix_manifest_children_child",
    ),
    "what depends on this model": (
        sa.select(t.dependents.c.id).where(
            t.dependents.c.target_kind == "tag",
            t.dependents.c.target_key == "registry.ollama.ai/library/m:latest",
        ),
        "ix_dependents_target_key",
    ),
    "who holds a shared blob (the plan's `kept`)": (
        sa.select(t.tags.c.name)
        .select_from(
            t.manifest_blobs.join(t.tags, t.tags.c.manifest_digest == t.manifest_blobs.c.manifest_digest)
        )
        .where(t.manifest_blobs.c.blob_digest == D)
        .limit(1),
        "ix_tags_manifest",
    ),
}


def plan_text(store: Store, stmt: Any) -> str:
    dialect = store.catalog.engine.dialect
    sql = str(stmt.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
    with store.catalog.engine.connect() as conn:
        if store.catalog.is_sqlite:
            rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}").all()
            return "\n".join(str(r[-1]) for r in rows)
        conn.exec_driver_sql("SET enable_seqscan = off")
        return "\n".join(r[0] for r in conn.exec_driver_sql(f"EXPLAIN {sql}").all())


@pytest.mark.parametrize("lookup", sorted(LOOKUPS))
def test_each_lookup_of_a_delete_uses_its_index(store: Store, lookup: str) -> None:
    stmt, indexes = LOOKUPS[lookup]
    text = plan_text(store, stmt)
    assert any(index in text for index in indexes.split()), f"{lookup}: {text}"
    assert "Seq Scan" not in text and not any(
        line.strip().startswith("SCAN") and "INDEX" not in line for line in text.splitlines()
    ), f"{lookup}: {text}"


@pytest.mark.parametrize("sort", ["name", "size", "age"])
def test_a_page_of_the_web_list_walks_an_index(store: Store, sort: str) -> None:
    """The web UI's list orders by columns kept on the row (core/repo_figures.py): a page is an index walk
    of LIMIT rows in that order, never a sort of every repository (README, "The web UI")."""
    from modelhangar.core import browse
    from modelhangar.core.store import Actor

    index = {"name": "name_key", "size": "ix_repositories_size", "age": "ix_repositories_modified"}[sort]
    text = plan_text(store, browse.list_query(Actor(), "", sort).limit(50))  # type: ignore[arg-type]
    assert index in text or (sort == "name" and "sqlite_autoindex_repositories" in text), text
    assert "TEMP B-TREE" not in text and "Sort" not in text.replace("Sort Key", ""), text


@pytest.mark.parametrize("after", [None, "registry.ollama.ai/library/m"])
def test_a_page_of_the_registry_catalog_walks_an_index_from_where_it_starts(
    store: Store, after: str | None
) -> None:
    """`GET /v2/_catalog?n=...&last=...` in byte order: an index search bounded on both sides, from the
    page's own start, never a sort or a scan of the keys before it (README, "Listings")."""
    stmt, params = store._repository_keys_query("registry.ollama.ai/library/", after, 100, None)
    text = plan_text(store, stmt.params(params))
    index = "sqlite_autoindex_repositories" if store.catalog.is_sqlite else "ix_repositories_name_key_c"
    assert index in text and "TEMP B-TREE" not in text and "Sort" not in text, text
    if store.catalog.is_sqlite:
        assert "name_key>? AND name_key<?" in text, text  # both bounds, `after` among them
    else:
        bound = "name_key)::text > " if after else "name_key)::text >= "
        assert bound in text.replace('COLLATE "C"', ""), text
