"""A server with HANGAR_AUTH=required, three users and an organisation, for the Replicate face's tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from replicate_site import Site

from harness import ServerProcess


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    from modelhangar.core import accounts
    from modelhangar.core.config import load_settings
    from modelhangar.core.store import Store

    root = tmp_path_factory.mktemp("replicate")
    home = root / "home"
    store = Store(load_settings({"HANGAR_HOME": str(home)}))
    try:
        tokens = {
            name: accounts.add_user(store, name, display_name=name.title()).token
            for name in ("alice", "bob", "carol")
        }
        accounts.add_org(store, "acme", ["alice"], display_name="Acme")
        tokens["runner"] = accounts.add_user(store, "runner1", roles=["runner"]).token
    finally:
        store.close()
    env = {"HANGAR_AUTH": "required", "HANGAR_TRASH_RETENTION": "1h"}
    server = ServerProcess(home, env=env, log_dir=root / "logs").start()
    try:
        yield Site(home, server, tokens, root / "work")
    finally:
        server.stop()
