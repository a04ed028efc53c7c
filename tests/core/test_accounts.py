"""Accounts in the core: names, users and organisations, tokens (shown once, hashed, revocable), and
the one permission rule every face asks."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa

from modelhangar.core import accounts, permissions
from modelhangar.core.catalog import schema as t
from modelhangar.core.errors import Conflict, Denied, NotFound, QuotaExceeded
from modelhangar.core.planner import Target
from modelhangar.core.store import Actor, Store
from modelhangar.core.trash import list_trash, restore

if TYPE_CHECKING:
    from conftest import Kit, MakeKit, MakeStore

PREFIX = "registry.ollama.ai/"


def login(store: Store, token: str, face: str = "test") -> Actor:
    actor = accounts.authenticate(store, token, face)
    assert actor is not None
    return actor


@pytest.mark.parametrize("raw", ["", "-x", "x-", "a--b" * 20, "library", "local", "ü", "a b", "a/b"])
def test_names_follow_the_rules(raw: str) -> None:
    with pytest.raises(accounts.InvalidAccountName):
        accounts.check_name(raw)


def test_names_are_lower_cased() -> None:
    assert accounts.check_name("Alice_1") == "alice_1"


def test_a_token_is_shown_once_stored_hashed_and_names_its_user(store: Store) -> None:
    first = accounts.add_user(store, "alice")
    assert first.token.startswith("hgr_") and first.info.prefix in first.token
    with store.catalog.read() as conn:
        stored = [r.hash for r in conn.execute(sa.select(t.tokens))]
    assert stored and first.token not in stored[0] and len(stored[0]) == 64
    actor = login(store, first.token)
    assert (actor.name, actor.principal, actor.token, actor.admin) == ("alice", "alice", "default", False)
    wrong = first.token[:-1] + ("y" if first.token.endswith("x") else "x")  # one character off, always
    assert accounts.authenticate(store, wrong, "test") is None
    assert accounts.authenticate(store, "not a token", "test") is None
    with pytest.raises(Conflict):
        accounts.add_user(store, "Alice")


def test_revoked_expired_and_rotated_tokens_stop_working_at_once(store: Store) -> None:
    accounts.add_user(store, "bob")
    ci = accounts.add_token(store, "bob", name="ci")
    short = accounts.add_token(store, "bob", name="short", expires_in=3600)
    assert login(store, ci.token).token == "ci"
    accounts.revoke_token(store, ci.info.prefix)
    assert accounts.authenticate(store, ci.token, "test") is None
    with store.catalog.write() as conn:
        conn.execute(
            t.tokens.update().where(t.tokens.c.id == short.info.id).values(expires_at=time.time() - 1)
        )
    assert accounts.authenticate(store, short.token, "test") is None
    third = accounts.add_token(store, "bob", name="laptop", expires_in=7200)
    rotated = accounts.rotate_token(store, third.info.prefix[:8])  # a unique beginning is enough
    assert accounts.authenticate(store, third.token, "test") is None
    assert login(store, rotated.token).token == "laptop"
    assert rotated.info.expires_at is not None
    listed = {x.name: x.active() for x in accounts.list_tokens(store, "bob")}
    assert listed == {"default": True, "ci": False, "short": False, "laptop": True} | {"laptop": True}
    with pytest.raises(NotFound):
        accounts.revoke_token(store, "hgr_zzzzzzzzzz")


def test_a_token_checked_again_sees_what_another_server_changed_at_once(make_store: MakeStore) -> None:
    """Two stores on one catalog, as two servers: whatever one commits (a revocation, a role, a
    membership), the other's next check of a token it has just checked sees, though it reads the
    token's row again only when something was committed (`Catalog.read_once(..., reuse=True)`)."""
    here, there = make_store(), make_store()
    bob = accounts.add_user(there, "bob")
    other = accounts.add_token(there, "bob", name="other")
    for _ in range(3):  # warm: the same answer, read once
        assert login(here, bob.token).orgs == frozenset() and login(here, other.token).token == "other"
    accounts.add_org(there, "acme", ["bob"])
    assert login(here, bob.token).orgs == frozenset({"acme"})
    accounts.set_roles(there, "bob", add=["ml_full_access"])
    assert "ml_full_access" in login(here, bob.token).roles
    accounts.revoke_token(there, other.info.prefix)
    assert accounts.authenticate(here, other.token, "test") is None
    assert login(here, bob.token).token == "default"  # the others still work
    assert (
        accounts.authenticate(here, bob.token[:-1] + ("A" if bob.token[-1] != "A" else "B"), "test") is None
    )


def test_an_organisation_s_members_act_for_it(store: Store) -> None:
    alice = accounts.add_user(store, "alice")
    accounts.add_user(store, "bob")
    accounts.add_org(store, "acme", ["alice"])
    actor = login(store, alice.token)
    assert actor.orgs == frozenset({"acme"}) and actor.acts_for("acme") and not actor.acts_for("bob")
    accounts.set_members(store, "acme", add=["bob"], remove=["alice"])
    assert login(store, alice.token).orgs == frozenset()
    assert accounts.require(store, "acme").members == ("bob",)


def test_a_user_who_owns_models_cannot_be_removed(kit: Kit) -> None:
    alice = login(kit.store, accounts.add_user(kit.store, "alice").token)
    kit.store.put_manifest(PREFIX + "alice/m", "latest", kit.manifest([b"w"]), actor=alice)
    with pytest.raises(Conflict, match="alice/m"):
        accounts.remove(kit.store, "alice")
    kit.planner.delete([Target("tag", PREFIX + "alice/m", "latest")], alice, purge=True)
    accounts.remove(kit.store, "alice")
    assert accounts.get(kit.store, "alice") is None


def test_models_belong_to_their_creator_or_their_namespace_s_account(kit: Kit) -> None:
    store = kit.store
    alice_token = accounts.add_user(store, "alice").token
    bob = login(store, accounts.add_user(store, "bob").token)
    accounts.add_org(store, "acme", ["alice"])
    alice = login(store, alice_token)  # each request reads the memberships anew
    store.put_manifest(PREFIX + "library/tiny", "latest", kit.manifest([b"t"]), actor=alice)
    store.put_manifest(PREFIX + "acme/tool", "latest", kit.manifest([b"a"]), actor=alice)
    owners = {r.repository: r.owner for r in store.list_tags()}
    assert owners == {PREFIX + "library/tiny": "alice", PREFIX + "acme/tool": "acme"}
    with pytest.raises(Denied, match="namespace"):
        store.put_manifest(PREFIX + "acme/other", "latest", kit.manifest([b"b"]), actor=bob)
    with pytest.raises(Denied):
        store.put_manifest(PREFIX + "alice/x", "latest", kit.manifest([b"b"]), actor=bob)
    store.put_manifest(PREFIX + "someone/else", "v1", kit.manifest([b"b"]), actor=bob)  # no such account


def test_private_models_are_invisible_and_public_ones_read_only(kit: Kit) -> None:
    store = kit.store
    alice = login(store, accounts.add_user(store, "alice").token)
    bob = login(store, accounts.add_user(store, "bob").token)
    store.put_manifest(PREFIX + "alice/secret", "latest", kit.manifest([b"s"]), actor=alice)
    store.put_manifest(PREFIX + "alice/open", "latest", kit.manifest([b"o"]), actor=alice)
    store.set_visibility(PREFIX + "alice/open", "public", actor=alice)
    assert {r.repository for r in store.list_tags(actor=bob)} == {PREFIX + "alice/open"}
    assert store.get_tag(PREFIX + "alice/secret", "latest", actor=bob) is None
    assert store.list_repositories(actor=bob) == [PREFIX + "alice/open"]
    assert len(store.list_tags(actor=alice)) == 2 and len(store.list_tags(actor=Actor())) == 2
    # Deleting: a private model of another is not found, a public one is refused.
    plan = kit.planner.delete([Target("tag", PREFIX + "alice/secret", "latest")], bob)
    assert plan.not_found and not plan.blockers
    plan = kit.planner.delete([Target("tag", PREFIX + "alice/open", "latest")], bob)
    assert [b.kind for b in plan.blockers] == ["permission"]
    with pytest.raises(Denied):
        store.put_manifest(PREFIX + "alice/open", "latest", kit.manifest([b"x"]), actor=bob)
    with pytest.raises(NotFound):
        store.copy_tag(PREFIX + "alice/secret", "latest", PREFIX + "bob/copy", "latest", actor=bob)
    copied = store.copy_tag(PREFIX + "alice/open", "latest", PREFIX + "bob/copy", "latest", actor=bob)
    assert copied.owner == "bob"
    with pytest.raises(Denied):
        store.set_visibility(PREFIX + "alice/open", "private", actor=bob)


def test_the_trash_of_others_is_not_there(make_kit: MakeKit) -> None:
    kit = make_kit(HANGAR_TRASH_RETENTION="1h")
    alice = login(kit.store, accounts.add_user(kit.store, "alice").token)
    bob = login(kit.store, accounts.add_user(kit.store, "bob").token)
    kit.store.put_manifest(PREFIX + "alice/m", "latest", kit.manifest([b"w"]), actor=alice)
    [entry_id] = kit.planner.delete([Target("tag", PREFIX + "alice/m", "latest")], alice).trash_ids
    assert list_trash(kit.store, bob) == [] and len(list_trash(kit.store, alice)) == 1
    with pytest.raises(NotFound):
        restore(kit.store, entry_id, bob)
    restored = restore(kit.store, entry_id, alice)
    assert kit.store.get_tag(restored.repository, restored.tag, actor=alice) is not None
    rec = kit.store.repository(PREFIX + "alice/m")
    assert rec.visibility == "private" and rec.owner == "alice"


def test_quotas_refuse_what_would_exceed_them(kit: Kit) -> None:
    store = kit.store
    alice = login(store, accounts.add_user(store, "alice").token)
    accounts.set_quota(store, "alice", max_bytes=None, max_models=1)
    store.put_manifest(PREFIX + "alice/one", "latest", kit.manifest([b"1"]), actor=alice)
    with pytest.raises(QuotaExceeded, match="models"):
        store.put_manifest(PREFIX + "alice/two", "latest", kit.manifest([b"2"]), actor=alice)
    accounts.set_quota(store, "alice", max_bytes=200, max_models=None)
    with pytest.raises(QuotaExceeded, match="bytes"):
        store.put_manifest(PREFIX + "alice/big", "latest", kit.manifest([b"x" * 300]), actor=alice)
    assert {r.repository for r in store.list_tags()} == {PREFIX + "alice/one"}


def test_the_visible_clause_matches_may_read() -> None:
    bob = Actor(name="bob", principal="bob", admin=False, orgs=frozenset({"acme"}))
    for owner in (None, "bob", "acme", "alice"):
        for visibility in permissions.VISIBILITIES:
            expected = visibility == "public" or owner in ("bob", "acme")
            assert permissions.may_read(bob, owner, visibility) == expected
    assert permissions.visible(Actor()) is None
