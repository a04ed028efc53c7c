"""Issue 5 through a real server and the real CLI: previews, trash, prune, du, audit, bulk."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest

from harness import (
    MakeGguf,
    ServerProcess,
    StartServer,
    blob_file,
    blob_files,
    hangar,
    hangar_json,
    tree_snapshot,
)

DAY = 86400.0


def create(client: ollama.Client, tmp: Path, name: str, gguf: bytes, system: str) -> None:
    path = tmp / f"{name.replace(':', '_').replace('/', '_')}.gguf"
    path.write_bytes(gguf)
    digest = client.create_blob(path)
    client.create(model=name, files={"m.gguf": digest}, system=system)


def tags(server: ServerProcess) -> dict[str, str]:
    doc = httpx.get(server.url + "/api/tags").json()
    return {m["name"]: m["digest"] for m in doc["models"]}


def disk_bytes(home: Path) -> int:
    return sum(p.stat().st_size for p in (home / "blobs").iterdir() if p.is_file())


@pytest.fixture
def trash_server(home: Path, start_server: StartServer) -> ServerProcess:
    return start_server(home, env={"HANGAR_TRASH_RETENTION": "1h"})


def test_previews_change_nothing_and_match_the_real_delete(
    trash_server: ServerProcess, home: Path, tmp_path: Path, make_gguf: MakeGguf
) -> None:
    client = ollama.Client(host=trash_server.url)
    shared = make_gguf(seed=1)
    create(client, tmp_path, "a", shared, "a")
    create(client, tmp_path, "b", shared, "b")
    before, listing = tree_snapshot(home), tags(trash_server)
    rm = hangar_json("rm", "--dry-run", "a", home=home, host=trash_server.host)
    http = httpx.request("DELETE", trash_server.url + "/api/delete?dry_run=true", json={"model": "a"}).json()
    prune = hangar_json("prune", "--dry-run", "--keep-last", "0", home=home, host=trash_server.host)
    empty = hangar_json("trash", "empty", "--dry-run", home=home, host=trash_server.host)
    assert tree_snapshot(home) == before and tags(trash_server) == listing
    plan = rm["results"][0]["plan"]
    assert rm["results"][0]["status"] == "would_delete"
    assert {"models", "blobs", "bytes_freed", "blockers"} <= set(plan)
    assert plan["models"] == ["a:latest"] and plan["blockers"] == []
    assert set(http["blobs"]) == set(plan["blobs"]) and len(plan["blobs"]) >= 1
    assert sorted(r["model"] for r in prune["results"]) == ["a:latest", "b:latest"]
    assert empty["purged"] == []
    # The shared GGUF layer is kept, and who keeps it is named.
    assert any(k["used_by"] == "b:latest" for k in plan["kept"])
    real = hangar_json("rm", "--purge", "a", home=home, host=trash_server.host)
    assert real["results"][0]["status"] == "deleted"
    assert set(real["results"][0]["plan"]["blobs"]) == set(plan["blobs"])
    assert real["results"][0]["plan"]["bytes_freed"] == plan["bytes_freed"]
    assert not {blob_file(d) for d in plan["blobs"]} & blob_files(home)


def test_restore_brings_back_identical_digests_and_refuses_a_taken_name(
    trash_server: ServerProcess, home: Path, tmp_path: Path, make_gguf: MakeGguf
) -> None:
    client = ollama.Client(host=trash_server.url)
    create(client, tmp_path, "keep", make_gguf(seed=2), "one")
    digest = tags(trash_server)["keep:latest"]
    out = hangar("rm", "keep", home=home, host=trash_server.host)
    assert out.returncode == 0 and "moved keep to trash" in out.stdout
    assert "keep:latest" not in tags(trash_server)
    listed = hangar_json("trash", "list", home=home, host=trash_server.host)
    assert [e["model"] for e in listed] == ["keep:latest"]
    assert hangar("trash", "restore", "keep", home=home, host=trash_server.host).returncode == 0
    assert tags(trash_server)["keep:latest"] == digest
    assert "SYSTEM \"\"\"one" in (client.show("keep").modelfile or "")
    # Delete again, take the name with another model: restore is refused, nothing changes.
    hangar("rm", "keep", home=home, host=trash_server.host)
    create(client, tmp_path, "keep", make_gguf(seed=3), "two")
    refused = hangar("trash", "restore", "keep", home=home, host=trash_server.host)
    assert refused.returncode == 1 and "exists again" in refused.stderr
    assert "SYSTEM \"\"\"two" in (client.show("keep").modelfile or "")


def test_trash_expiry_reclaims_space(
    home: Path, tmp_path: Path, start_server: StartServer, make_gguf: MakeGguf
) -> None:
    server = start_server(home, env={"HANGAR_TRASH_RETENTION": "2s", "HANGAR_GC_INTERVAL": "1s"})
    client = ollama.Client(host=server.url)
    gguf = make_gguf(seed=4)
    create(client, tmp_path, "brief", gguf, "x")
    model_blob = blob_file("sha256:" + hashlib.sha256(gguf).hexdigest())
    client.delete("brief")
    assert model_blob in blob_files(home)  # kept by the trash entry
    deadline = time.monotonic() + 30
    while model_blob in blob_files(home) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert model_blob not in blob_files(home)
    actions = [e["action"] for e in hangar_json("audit", home=home, host=server.host)]
    assert "expire" in actions


def set_times(home: Path, name: str, modified: float, used: float) -> None:
    with sqlite3.connect(home / "catalog.db") as db:
        db.execute(
            "UPDATE tags SET modified_at=?, last_used_at=? WHERE repository_id="
            "(SELECT id FROM repositories WHERE name_key=?)",
            (modified, used, f"registry.ollama.ai/library/{name}"),
        )


def test_prune_rules_select_exactly_the_expected_models(
    server: ServerProcess, home: Path, tmp_path: Path, make_gguf: MakeGguf
) -> None:
    client = ollama.Client(host=server.url)
    now = time.time()
    ages = {
        "old-used": (40, 1),
        "old-idle": (40, 20),
        "new-idle": (2, 20),
        "new-used": (1, 1),
        "keep-me": (50, 50),
    }
    for i, (name, (age, idle)) in enumerate(ages.items()):
        create(client, tmp_path, name, make_gguf(seed=10 + i), name)
        set_times(home, name, now - age * DAY, now - idle * DAY)

    def selected(*args: str) -> list[str]:
        doc = hangar_json("prune", "--dry-run", *args, home=home, host=server.host)
        return sorted(r["model"].removesuffix(":latest") for r in doc["results"])

    assert selected("--older-than", "30d") == ["keep-me", "old-idle", "old-used"]
    assert selected("--unused-for", "14d") == ["keep-me", "new-idle", "old-idle"]
    assert selected("--older-than", "30d", "--unused-for", "14d") == ["keep-me", "old-idle"]
    assert selected("--older-than", "30d", "--match", "old-*") == ["old-idle", "old-used"]
    assert selected("--keep-last", "1") == []  # one tag per repository: each is its repository's newest
    assert hangar("prune", home=home, host=server.host).returncode == 1  # no rule: refused
    real = hangar("prune", "--older-than", "30d", "--unused-for", "14d", home=home, host=server.host)
    assert real.returncode == 0
    assert sorted(tags(server)) == ["new-idle:latest", "new-used:latest", "old-used:latest"]


def test_keep_last_keeps_the_newest_tags_of_a_repository(
    server: ServerProcess, home: Path, tmp_path: Path, make_gguf: MakeGguf
) -> None:
    client = ollama.Client(host=server.url)
    for i in range(4):
        create(client, tmp_path, f"series:v{i}", make_gguf(seed=30 + i), str(i))
        time.sleep(0.01)
    doc = hangar_json("prune", "--keep-last", "2", home=home, host=server.host)
    assert sorted(r["model"] for r in doc["results"]) == ["series:v0", "series:v1"]
    assert sorted(tags(server)) == ["series:v2", "series:v3"]


def test_du_totals_equal_the_bytes_on_disk(
    trash_server: ServerProcess, home: Path, tmp_path: Path, make_gguf: MakeGguf
) -> None:
    client = ollama.Client(host=trash_server.url)
    shared = make_gguf(seed=5)
    create(client, tmp_path, "x", shared, "x")
    create(client, tmp_path, "y", shared, "y")
    create(client, tmp_path, "z", make_gguf(seed=6), "z")
    du = hangar_json("du", home=home, host=trash_server.host)
    assert du["total"] == disk_bytes(home)
    assert {"model", "size", "unique_size"} <= set(du["models"][0])
    unique = {m["model"]: m["unique_size"] for m in du["models"]}
    plan = hangar_json("rm", "--dry-run", "--purge", "z", home=home, host=trash_server.host)
    assert plan["results"][0]["plan"]["bytes_freed"] == unique["z:latest"]
    client.delete("x")  # to the trash: still on disk, counted as trash
    du = hangar_json("du", home=home, host=trash_server.host)
    assert du["total"] == disk_bytes(home) and du["trash"] > 0


def test_bulk_rm_and_audit(
    trash_server: ServerProcess, home: Path, tmp_path: Path, make_gguf: MakeGguf
) -> None:
    client = ollama.Client(host=trash_server.url)
    create(client, tmp_path, "p", make_gguf(seed=7), "p")
    create(client, tmp_path, "q", make_gguf(seed=8), "q")
    out = hangar("rm", "p", "nope", "q", home=home, host=trash_server.host)
    assert out.returncode == 1
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 3 and lines[1] == "not found: nope"
    assert tags(trash_server) == {}
    batch = httpx.post(trash_server.url + "/api/hangar/delete", json={"models": ["p", "../bad"]}).json()
    assert [r["status"] for r in batch["results"]] == ["not_found", "invalid"] and batch["ok"] is False
    assert hangar("trash", "restore", "p", home=home, host=trash_server.host).returncode == 0
    assert hangar("trash", "empty", home=home, host=trash_server.host).returncode == 0
    assert hangar("gc", home=home).returncode == 0
    entries: list[dict[str, Any]] = httpx.get(trash_server.url + "/api/hangar/audit?since=1h").json()[
        "entries"
    ]
    seen = {(e["action"], e["outcome"], e["dry_run"]) for e in entries}
    assert {("delete", "ok", False), ("delete", "not_found", False), ("restore", "ok", False)} <= seen
    assert ("purge", "ok", False) in seen and ("gc", "ok", False) in seen
    assert json.loads(json.dumps(hangar_json("audit", "--since", "1h", home=home, host=trash_server.host)))


def test_the_server_applies_retention_policies_from_the_config_file(
    home: Path, tmp_path: Path, start_server: StartServer, make_gguf: MakeGguf
) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text('[[retention]]\nmatch = "scratch-*"\nolder_than = "30d"\n')
    server = start_server(home, env={"HANGAR_GC_INTERVAL": "1s"})
    client = ollama.Client(host=server.url)
    for i, name in enumerate(("scratch-old", "scratch-new", "precious")):
        create(client, tmp_path, name, make_gguf(seed=40 + i), name)
    set_times(home, "scratch-old", time.time() - 40 * DAY, time.time())
    set_times(home, "precious", time.time() - 40 * DAY, time.time())
    deadline = time.monotonic() + 30
    while "scratch-old:latest" in tags(server) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sorted(tags(server)) == ["precious:latest", "scratch-new:latest"]
    entries = httpx.get(server.url + "/api/hangar/audit").json()["entries"]
    assert any(e["action"] == "prune" and e["actor"] == "retention" for e in entries)
