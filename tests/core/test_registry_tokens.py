"""Registry tokens in the core: signed by the store's key, scoped, short-lived, and only as good as
the API token they were issued for."""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING

from modelhangar.core import accounts, registry_tokens, shared_settings
from modelhangar.core.registry_tokens import Access, RegistryActor
from modelhangar.core.store import Store

if TYPE_CHECKING:
    from conftest import MakeStore

PREFIX = "registry.ollama.ai/"


def _repo(name: str) -> str:
    return PREFIX + name


def _reencode(token: str, **changes: object) -> str:
    """The token with its claims changed and its old signature kept."""
    head, body, mac = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims.update(changes)
    new = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{head}.{new}.{mac}"


def test_grants_are_the_intersection_of_asked_and_held(store: Store) -> None:
    new = accounts.add_user(store, "alice")
    accounts.add_user(store, "bob")
    alice = accounts.authenticate(store, new.token, "oci")
    assert alice is not None
    wanted = [
        Access("repository", "alice/m", ("pull", "push")),
        Access("repository", "bob/m", ("pull", "push")),
        Access("repository", "team/m", ("*",)),
        Access("registry", "catalog", ("*",)),
    ]
    granted = registry_tokens.grant(store, alice, wanted, _repo)
    assert granted == [
        Access("repository", "alice/m", ("pull", "push")),
        Access("repository", "bob/m", ("pull",)),
        Access("repository", "team/m", ("delete", "pull", "push")),
        Access("registry", "catalog", ("*",)),
    ]


def test_verify_checks_signature_expiry_kind_and_the_api_token(store: Store) -> None:
    new = accounts.add_user(store, "carol")
    carol = accounts.authenticate(store, new.token, "oci")
    assert carol is not None
    issued = registry_tokens.issue(store, carol, new.info.id, [Access("repository", "carol/m", ("pull",))])
    actor = registry_tokens.verify(store, issued.token, "oci")
    assert isinstance(actor, RegistryActor) and actor.principal == "carol" and not actor.admin
    assert actor.allows("repository", "carol/m", "pull") and not actor.allows("repository", "carol/m", "push")
    assert registry_tokens.authenticate(store, issued.token, "ollama") is None  # /v2 only
    assert registry_tokens.verify(store, _reencode(issued.token, sub="admin"), "oci") is None
    assert registry_tokens.verify(store, _reencode(issued.token, exp=1), "oci") is None
    signed, signature = issued.token.rsplit(".", 1)  # the signature's first character carries 6 full bits
    tampered = f"{signed}.{'B' if signature.startswith('A') else 'A'}{signature[1:]}"
    assert registry_tokens.verify(store, tampered, "oci") is None
    refresh = registry_tokens.issue(store, carol, new.info.id, [], kind="refresh")
    assert registry_tokens.verify(store, refresh.token, "oci") is None
    assert registry_tokens.verify(store, refresh.token, "oci", kind="refresh") is not None
    accounts.revoke_token(store, new.info.prefix)
    assert registry_tokens.verify(store, issued.token, "oci") is None
    assert registry_tokens.verify(store, refresh.token, "oci", kind="refresh") is None


def test_the_key_is_kept_in_the_catalog_for_every_server(store: Store, make_store: MakeStore) -> None:
    new = accounts.add_user(store, "dave")
    dave = accounts.authenticate(store, new.token, "oci")
    assert dave is not None
    issued = registry_tokens.issue(store, dave, new.info.id, [])
    other = make_store()  # another server of the same catalog
    assert registry_tokens.verify(other, issued.token, "oci") is not None
    with other.catalog.read() as conn:
        assert shared_settings.read(conn, registry_tokens.KEY_SETTING)
