"""A state machine over the store: random creates, copies, deletes, restores, expiries and GCs.

After every step the store must hold exactly the models the machine expects, every reference
must resolve, nothing may leak (the blob files are exactly those live manifests, trash entries
and abandoned uploads need), and fsck must find nothing but the abandoned uploads.

With `tokens`, every step acts as a non-admin user, looked up by its API token first (what every
request with a token costs), and the token is rotated now and then: the old one stops at once.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from modelhangar.core import accounts, dependents, gc
from modelhangar.core.catalog import schema as t
from modelhangar.core.digests import sha256_digest
from modelhangar.core.errors import Conflict, Refused
from modelhangar.core.manifests import parse_manifest
from modelhangar.core.store import Actor, Store
from modelhangar.core.trash import list_trash, restore

if TYPE_CHECKING:
    from conftest import FreshStore, Kit

PREFIX = "registry.ollama.ai/library/"
POOL = [b"layer %d:" % i + b"x" * (7 * i) for i in range(6)]  # distinct sizes, so byte counts tell them apart
NAMES = ["alpha", "beta", "gamma"]
TAGS = ["latest", "v1"]

Key = tuple[str, str]


USER = "machinist"


class StoreMachine(RuleBasedStateMachine):
    def __init__(self, fresh_store: FreshStore, kit_of: Callable[[Store], Kit], tokens: bool = False) -> None:
        super().__init__()
        self._stack = contextlib.ExitStack()
        self.store = self._stack.enter_context(fresh_store(HANGAR_TRASH_RETENTION="1h"))
        self.kit = kit_of(self.store)
        self.token = accounts.add_user(self.store, USER).token if tokens else None
        self.models: dict[Key, str] = {}  # (repository, tag) -> manifest digest
        self.trash: dict[int, tuple[Key, str]] = {}
        self.abandoned: set[str] = set()
        self.pinned: set[Key] = set()
        self.blobs_of: dict[str, set[str]] = {}  # manifest digest -> blob digests

    def teardown(self) -> None:
        self._stack.close()

    # ------------------------------------------------------------------ helpers

    def held_blobs(self) -> set[str]:
        manifests = set(self.models.values()) | {d for _, d in self.trash.values()}
        return {b for m in manifests for b in self.blobs_of[m]}

    def needed_blobs(self) -> set[str]:
        return self.held_blobs() | self.abandoned

    def loose(self) -> set[str]:
        """Uploads no manifest holds (abandoned, or made for an overwrite that was refused)."""
        return self.abandoned - self.held_blobs()

    def snapshot(self) -> dict[str, Any]:
        return self.kit.snapshot()

    def actor(self) -> Actor:
        """Who acts: the local admin, or the user its token says (looked up now, as each request does)."""
        if self.token is None:
            return Actor()
        found = accounts.authenticate(self.store, self.token, "ollama")
        assert found is not None and found.principal == USER and not found.admin
        return found

    # ------------------------------------------------------------------ rules

    @rule(
        name=st.sampled_from(NAMES),
        tag=st.sampled_from(TAGS),
        layers=st.sets(st.integers(0, len(POOL) - 1), min_size=1, max_size=4),
    )
    def create(self, name: str, tag: str, layers: set[int]) -> None:
        content = self.kit.manifest([POOL[i] for i in sorted(layers)])
        key = (PREFIX + name, tag)
        digest = str(sha256_digest(content))
        self.blobs_of[digest] = {b.digest for b in parse_manifest(content).blobs}
        actor = self.actor()
        if self._refused_overwrite(key, digest):
            with pytest.raises(Refused):
                self.store.put_manifest(key[0], tag, content, actor=actor)
            self.abandoned |= self.blobs_of[digest] - self.needed_blobs()  # uploaded for nothing
            return
        self.store.put_manifest(key[0], tag, content, actor=actor)
        self._moved(key, digest)

    @rule(data=st.data(), name=st.sampled_from(NAMES), tag=st.sampled_from(TAGS))
    def copy(self, data: st.DataObject, name: str, tag: str) -> None:
        if not self.models:
            return
        src = data.draw(st.sampled_from(sorted(self.models)))
        key = (PREFIX + name, tag)
        actor = self.actor()
        if self._refused_overwrite(key, self.models[src]):
            with pytest.raises(Refused):
                self.store.copy_tag(src[0], src[1], key[0], tag, actor=actor)
            return
        self.store.copy_tag(src[0], src[1], key[0], tag, actor=actor)
        self._moved(key, self.models[src])

    @rule(data=st.data())
    def pin(self, data: st.DataObject) -> None:
        """A deployment starts using a model: neither a delete nor an overwrite may remove it now."""
        if not self.models:
            return
        key = data.draw(st.sampled_from(sorted(self.models)))
        with self.store.catalog.write() as conn:
            dependents.record(conn, "deployment", "prod", "tag", f"{key[0]}:{key[1]}", reason="serves")
        self.pinned.add(key)

    @rule()
    def unpin(self) -> None:
        with self.store.catalog.write() as conn:
            dependents.forget(conn, "deployment", "prod")
        self.pinned.clear()

    def _refused_overwrite(self, key: Key, new: str) -> bool:
        return key in self.pinned and self.models.get(key) not in (None, new)

    def _moved(self, key: Key, digest: str) -> None:
        """A tag now points at `digest`: the version it pointed at, if no other tag of its repository
        points there too, went to the trash, listed with what replaced it."""
        old = self.models.get(key)
        self.models[key] = digest
        if old is None or old == digest:
            return
        if any(k[0] == key[0] and d == old for k, d in self.models.items()):
            return
        [entry] = [e for e in list_trash(self.store) if e.id not in self.trash]
        assert (entry.repository, entry.tag, entry.manifest_digest) == (key[0], key[1], old)
        assert entry.replaced_by == digest
        self.trash[entry.id] = (key, old)

    @rule(name=st.sampled_from(NAMES), tag=st.sampled_from(TAGS), purge=st.booleans())
    def delete(self, name: str, tag: str, purge: bool) -> None:
        key = (PREFIX + name, tag)
        actor = self.actor()
        before = self.kit.blob_files()
        plan = self.kit.delete(name, tag, actor=actor, purge=purge)
        after = self.kit.blob_files()
        if key not in self.models:
            assert plan.not_found == [f"{key[0]}:{key[1]}"] and not plan.executed
            assert after == before
            return
        if key in self.pinned:
            assert [b.kind for b in plan.blockers] == ["deployment"] and not plan.executed
            assert after == before
            return
        assert plan.ok and plan.executed and plan.models == [f"{key[0]}:{key[1]}"]
        digest = self.models.pop(key)
        if purge:
            self.abandoned -= set(plan.blobs)
            assert set(before) - set(after) == set(plan.blobs)
            assert sum(before.values()) - sum(after.values()) == plan.bytes_freed
        else:
            assert after == before
            [entry_id] = plan.trash_ids
            self.trash[entry_id] = (key, digest)

    @rule(name=st.sampled_from(NAMES), tag=st.sampled_from(TAGS), purge=st.booleans())
    def dry_run_delete(self, name: str, tag: str, purge: bool) -> None:
        actor = self.actor()  # first: a token's first use writes its last-used time
        before = self.snapshot()
        plan = self.kit.delete(name, tag, actor=actor, purge=purge, dry_run=True)
        assert not plan.executed
        key = (PREFIX + name, tag)
        assert plan.ok == (key in self.models and key not in self.pinned)
        assert self.snapshot() == before

    @rule(data=st.data())
    def restore(self, data: st.DataObject) -> None:
        if not self.trash:
            return
        entry_id = data.draw(st.sampled_from(sorted(self.trash)))
        key, digest = self.trash[entry_id]
        actor = self.actor()
        if key in self.models:
            with pytest.raises(Conflict):
                restore(self.store, entry_id, actor)
            return
        restore(self.store, entry_id, actor)
        del self.trash[entry_id]
        self.models[key] = digest

    @rule()
    def expire_trash(self) -> None:
        self.kit.execute(t.trash.update().values(expires_at=time.time() - 1))
        report = gc.collect(self.store)
        assert sorted(report.expired_trash) == sorted(f"{k[0]}:{k[1]}" for k, _ in self.trash.values())
        self.trash.clear()
        self.abandoned.clear()

    @rule()
    def collect(self) -> None:
        report = gc.collect(self.store)
        assert set(report.blobs) == self.loose()
        self.abandoned.clear()

    @rule(data=st.binary(min_size=1, max_size=16))
    def abandon_upload(self, data: bytes) -> None:
        """An upload whose manifest never comes (GC reclaims it)."""
        commit = self.store.put_blob_bytes(b"abandoned:" + data)
        self.abandoned.add(commit.digest)

    @precondition(lambda self: self.token is not None)
    @rule()
    def rotate_token(self) -> None:
        """The user's token replaced by a new one: the old one is refused at once, the new one works."""
        old = self.token
        assert old is not None
        self.token = accounts.rotate_token(self.store, old.rsplit("_", 1)[0]).token
        assert accounts.authenticate(self.store, old, "ollama") is None
        self.actor()

    # ------------------------------------------------------------------ invariants

    @invariant()
    def a_users_models_are_its_own(self) -> None:
        with self.store.catalog.read() as conn:
            owners = {r.owner for r in conn.execute(sa.select(t.repositories.c.owner))}
        assert owners <= ({USER} if self.token is not None else {None})

    @invariant()
    def references_resolve(self) -> None:
        with self.store.catalog.read() as conn:
            manifests = {r.digest for r in conn.execute(sa.select(t.manifests.c.digest))}
            held = {r.manifest_digest for r in conn.execute(sa.select(t.tags.c.manifest_digest))}
            held |= {r.manifest_digest for r in conn.execute(sa.select(t.trash.c.manifest_digest))}
            refs = conn.execute(
                sa.select(t.manifest_blobs.c.blob_digest, t.blobs.c.state, t.blobs.c.size).join(
                    t.blobs, t.blobs.c.digest == t.manifest_blobs.c.blob_digest, isouter=True
                )
            ).all()
        assert held <= manifests
        for r in refs:
            assert r.state == "present", r.blob_digest
            assert self.store.blobs.size(r.blob_digest) == r.size, r.blob_digest

    @invariant()
    def fsck_finds_only_abandoned_uploads(self) -> None:
        problems = {(p.kind, p.subject) for p in gc.fsck(self.store)}
        assert problems == {("blob-unreferenced", d) for d in self.loose()}

    @invariant()
    def models_and_trash_are_as_expected(self) -> None:
        listed = {(r.repository, r.tag): r.manifest_digest for r in self.store.list_tags()}
        assert listed == self.models
        trashed = {e.id: ((e.repository, e.tag), e.manifest_digest) for e in list_trash(self.store)}
        assert trashed == self.trash

    @invariant()
    def nothing_leaks(self) -> None:
        assert set(self.kit.blob_files()) == self.needed_blobs()


def run_machine(
    fresh_store: FreshStore, kit_of: Callable[[Store], Kit], examples: int, tokens: bool = False
) -> None:
    run_state_machine_as_test(  # type: ignore[no-untyped-call]
        lambda: StoreMachine(fresh_store, kit_of, tokens),
        settings=settings(
            max_examples=examples,
            stateful_step_count=30,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        ),
    )


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("auth", "examples"), [("anonymous", 25), ("tokens", 10)])
def test_store_state_machine_sqlite(
    fresh_store: FreshStore, kit_of: Callable[[Store], Kit], auth: str, examples: int
) -> None:
    run_machine(fresh_store, kit_of, examples=examples, tokens=auth == "tokens")


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_store_state_machine_postgres(fresh_store: FreshStore, kit_of: Callable[[Store], Kit]) -> None:
    run_machine(fresh_store, kit_of, examples=6)
