"""`hangar user add` and `hangar user roles`: backend roles kept with the account (OpenSearch access)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from modelhangar.core import accounts
from modelhangar.core.config import load_settings
from modelhangar.core.store import Store


def hangar(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANGAR_")} | {"HANGAR_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "modelhangar.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_user_add_and_roles(tmp_path: Path) -> None:
    home = tmp_path / "home"
    added = hangar(home, "user", "add", "alice", "--role", "team", "--role", "ml", "--json")
    assert added.returncode == 0, added.stderr
    doc = json.loads(added.stdout)
    assert doc["roles"] == ["ml", "team"] and doc["token"].startswith("hgr_")
    changed = hangar(home, "user", "roles", "alice", "--add", "ops", "--remove", "team")
    assert changed.returncode == 0 and "alice: roles ml, ops" in changed.stdout
    store = Store(load_settings({"HANGAR_HOME": str(home)}))
    try:
        actor = accounts.authenticate(store, doc["token"], "opensearch")
        assert actor is not None and actor.roles == frozenset({"ml", "ops"})
    finally:
        store.close()
    again = hangar(home, "user", "add", "alice")
    assert again.returncode == 1 and again.stderr.startswith("hangar: ") and "Traceback" not in again.stderr
    unknown = hangar(home, "user", "roles", "nobody", "--add", "x")
    assert unknown.returncode == 1 and "Traceback" not in unknown.stderr
