"""A store for the web UI's tests: two users with models that share a layer, another user's public model,
many scratch models to page through, and a version a deployment depends on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import ollama

from modelhangar.core import accounts
from modelhangar.core.config import load_settings
from modelhangar.core.store import Store
from modelhangar.testing.gguf_factory import make_gguf

SCRATCH = 60


@dataclass
class Seeded:
    alice_token: str
    bob_token: str
    chat_version: str
    """The manifest digest of alice/chat:latest (a deployment is recorded on it)."""


def store_of(home: Path) -> Store:
    return Store(load_settings({"HANGAR_HOME": str(home)}))


def make_users(home: Path) -> tuple[str, str]:
    store = store_of(home)
    try:
        return accounts.add_user(store, "alice").token, accounts.add_user(store, "bob").token
    finally:
        store.close()


def _client(url: str, token: str | None = None) -> ollama.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    return ollama.Client(host=url, headers=headers)


def _create(client: ollama.Client, tmp: Path, name: str, seed: int, elems: int, **kw: object) -> None:
    path = tmp / f"{name.replace('/', '_')}.gguf"
    path.write_bytes(make_gguf(None, seed=seed, tensor_elems=elems))
    digest = client.create_blob(path)
    client.create(model=name, files={path.name: digest}, **kw)  # type: ignore[arg-type]


def seed(url: str, home: Path, tmp: Path, alice_token: str, bob_token: str) -> Seeded:
    alice, bob, admin = _client(url, alice_token), _client(url, bob_token), _client(url)
    _create(alice, tmp, "alice/base", 1, 60_000)
    alice.create(model="alice/chat", from_="alice/base", system="You are a helpful assistant.")
    _create(alice, tmp, "alice/notes", 2, 5_000)
    _create(bob, tmp, "bob/tool", 3, 20_000)
    _create(admin, tmp, "scratch-base", 4, 1_000)
    for i in range(SCRATCH):
        admin.copy("scratch-base", f"scratch-{i:03d}")
    store = store_of(home)
    try:
        store.set_visibility("registry.ollama.ai/bob/tool", "public", actor=accounts_actor(store, bob_token))
        rec = store.get_tag("registry.ollama.ai/alice/chat", "latest")
        assert rec is not None
        return Seeded(alice_token, bob_token, rec.manifest_digest)
    finally:
        store.close()


def accounts_actor(store: Store, token: str):  # type: ignore[no-untyped-def]
    actor = accounts.authenticate(store, token, "test")
    assert actor is not None
    return actor
