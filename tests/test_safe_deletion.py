"""Issue 5 through a real server and the real CLI: previews, trash, prune, du, audit, bulk."""

from __future__ import annotations

import hashlib
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
    blob_bytes,
    blob_file,
    blob_files,
    hangar,
    hangar_json,
    tree_snapshot,
    wait_until,
)

DAY = 86400.0
LIBRARY = "registry.ollama.ai/library/"


def create(client: ollama.Client, tmp: Path, name: str, gguf: bytes, system: str) -> None:
    path = tmp / f"{name.replace(':', '_').replace('/', '_')}.gguf"
    path.write_bytes(gguf)
    digest = client.create_blob(path)
    client.create(model=name, files={"m.gguf": digest}, system=system)


def tags(server: ServerProcess) -> dict[str, str]:
    doc = httpx.get(server.url + "/api/tags").json()
    return {m["name"]: m["digest"] for m in doc["models"]}


def disk_bytes(home: Path) -> int:
    return blob_bytes(home)


def gguf_blob(gguf: bytes) -> str:
    return blob_file("sha256:" + hashlib.sha256(gguf).hexdigest())


def snapshot(server: ServerProcess, home: Path) -> tuple[list[str], dict[str, str], Any]:
    """Every file of the data directory, the hash of every blob, and the model list."""
    files = sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file())
    return files, tree_snapshot(home), httpx.get(server.url + "/api/tags").json()


def essence(plan: dict[str, Any]) -> tuple[list[str], list[str], int]:
    """What a plan deletes and frees, comparable between a preview and the real delete."""
    return sorted(plan["models"]), sorted(plan["blobs"]), plan["bytes_freed"]


def cli(server: ServerProcess, home: Path, *args: str) -> Any:
    """`hangar ARGS --host HOST --json`, parsed."""
    return hangar_json(*args, "--host", server.host, home=home)


def set_times(home: Path, name: str, modified: float, used: float) -> None:
    """Test setup only: back-date a model's tag in the running server's catalog."""
    with sqlite3.connect(home / "catalog.db") as db:
        db.execute(
            "UPDATE tags SET modified_at=?, last_used_at=? WHERE repository_id="
            "(SELECT id FROM repositories WHERE name_key=?)",
            (modified, used, LIBRARY + name),
        )


def add_dependent(home: Path, model: str, kind: str, ident: str, reason: str) -> None:
    """Test setup only: something outside the store uses `model` (e.g. a deployment)."""
    with sqlite3.connect(home / "catalog.db") as db:
        db.execute(
            "INSERT INTO dependents (kind, id, target_kind, target, target_key, owner, reason, created_at)"
            " VALUES (?, ?, 'tag', ?, lower(?), NULL, ?, ?)",
            (kind, ident, f"{LIBRARY}{model}:latest", f"{LIBRARY}{model}:latest", reason, time.time()),
        )


@pytest.fixture
def trash_server(home: Path, start_server: StartServer) -> ServerProcess:
    return start_server(home, env={"HANGAR_TRASH_RETENTION": "1h"})


# ------------------------------------------------------------------------------------------ previews


def test_previews_change_nothing_and_match_the_real_operations(
    trash_server: ServerProcess, home: Path, tmp_path: Path, make_gguf: MakeGguf
) -> None:
    srv = trash_server
    client = ollama.Client(host=srv.url)
    shared, trashed = make_gguf(seed=1), make_gguf(seed=2)
    create(client, tmp_path, "a", shared, "a")
    create(client, tmp_path, "b", shared, "b")
    create(client, tmp_path, "c", make_gguf(seed=3), "c")
    create(client, tmp_path, "old", make_gguf(seed=4), "old")
    create(client, tmp_path, "t1", trashed, "t1")
    create(client, tmp_path, "t2", trashed, "t2")
    set_times(home, "old", time.time() - 40 * DAY, time.time() - 40 * DAY)
    assert cli(srv, home, "rm", "t1", "t2")["ok"]  # two trash entries sharing their GGUF layer

    before = snapshot(srv, home)
    rm_purge = cli(srv, home, "rm", "--dry-run", "--purge", "a")
    rm_trash = cli(srv, home, "rm", "--dry-run", "c")
    ollama_dry = httpx.request("DELETE", srv.url + "/api/delete?dry_run=true&purge=true", json={"model": "a"})
    hangar_dry = httpx.post(
        srv.url + "/api/hangar/delete", json={"models": ["a"], "dry_run": True, "purge": True}
    ).json()
    prune_dry = cli(srv, home, "prune", "--dry-run", "--older-than", "30d")
    empty_dry = cli(srv, home, "trash", "empty", "--dry-run")
    gc_dry = httpx.post(srv.url + "/api/hangar/gc", json={"dry_run": True}).json()
    assert snapshot(srv, home) == before

    plan = rm_purge["results"][0]["plan"]
    assert rm_purge["results"][0]["status"] == "would_delete"
    assert {"models", "blobs", "bytes_freed", "blockers"} <= set(plan)
    assert isinstance(plan["bytes_freed"], int) and plan["blockers"] == []
    assert plan["models"] == ["a:latest"] and plan["blobs"] and plan["bytes_freed"] > 0
    kept = {blob_file(k["digest"]): k["used_by"] for k in plan["kept"]}
    assert kept[gguf_blob(shared)] == "b:latest"  # the shared GGUF layer stays, and who keeps it
    assert ollama_dry.status_code == 200
    assert essence(hangar_dry["results"][0]["plan"]) == essence(plan)
    assert sorted(ollama_dry.json()["blobs"]) == sorted(plan["blobs"])
    assert ollama_dry.json()["bytes_freed"] == plan["bytes_freed"]
    assert ollama_dry.json()["models"] == ["a:latest"]  # names as the user typed them, on every face
    assert [r["model"] for r in prune_dry["results"]] == ["old:latest"]
    assert sorted(empty_dry["purged"]) == ["t1:latest", "t2:latest"]
    assert gguf_blob(trashed) in {blob_file(d) for d in empty_dry["blobs"]}
    assert gc_dry["blobs"] == []

    # Each real operation reports exactly what its preview said (they touch disjoint blobs).
    empty = cli(srv, home, "trash", "empty")
    assert (sorted(empty["purged"]), sorted(empty["blobs"]), empty["bytes_freed"]) == (
        sorted(empty_dry["purged"]),
        sorted(empty_dry["blobs"]),
        empty_dry["bytes_freed"],
    )
    assert not {blob_file(d) for d in empty["blobs"]} & blob_files(home)
    real = cli(srv, home, "rm", "--purge", "a")
    assert real["results"][0]["status"] == "deleted"
    assert essence(real["results"][0]["plan"]) == essence(plan)
    assert not {blob_file(d) for d in plan["blobs"]} & blob_files(home)
    assert gguf_blob(shared) in blob_files(home)
    pruned = cli(srv, home, "prune", "--older-than", "30d")
    assert [essence(r["plan"]) for r in pruned["results"]] == [
        essence(r["plan"]) for r in prune_dry["results"]
    ]
    moved = cli(srv, home, "rm", "c")
    assert moved["results"][0]["status"] == "trashed"
    assert essence(moved["results"][0]["plan"]) == essence(rm_trash["results"][0]["plan"])
    assert moved["results"][0]["plan"]["reclaimed"] == "on trash expiry"
    assert {blob_file(d) for d in moved["results"][0]["plan"]["blobs"]} <= blob_files(home)
    assert sorted(tags(srv)) == ["b:latest"]


def test_a_bulk_preview_counts_blobs_only_the_selected_models_share(
    trash_server: ServerProcess, home: Path, tmp_path: Path, make_gguf: MakeGguf
) -> None:
    client = ollama.Client(host=trash_server.url)
    shared = make_gguf(seed=5)
    create(client, tmp_path, "s1", shared, "s1")
    create(client, tmp_path, "s2", shared, "s2")

    def freed(out: dict[str, Any]) -> list[int]:
        return [r["plan"]["bytes_freed"] for r in out["results"]]

    to_trash = cli(trash_server, home, "rm", "--dry-run", "s1", "s2")
    dry = cli(trash_server, home, "rm", "--dry-run", "--purge", "s1", "s2")
    assert freed(to_trash) == freed(dry)  # what the trash frees once both entries expire
    assert freed(dry)[1] > len(shared)  # the shared GGUF goes with the last of the two
    real = cli(trash_server, home, "rm", "--purge", "s1", "s2")
    assert freed(real) == freed(dry)


# ------------------------------------------------------------------------------------------ trash


def test_restore_brings_back_identical_digests_and_refuses_a_taken_name(
    trash_server: ServerProcess, home: Path, tmp_path: Path, make_gguf: MakeGguf
) -> None:
    srv = trash_server
    client = ollama.Client(host=srv.url)
    create(client, tmp_path, "keep", make_gguf(seed=2), "one")
    digest = tags(srv)["keep:latest"]
    out = hangar("rm", "keep", "--host", srv.host, home=home)
    assert out.returncode == 0 and "moved keep to trash" in out.stdout
    assert "keep:latest" not in tags(srv)
    with pytest.raises(ollama.ResponseError):
        client.show("keep")
    listed = cli(srv, home, "trash", "list")
    assert [e["model"] for e in listed] == ["keep:latest"]
    restored = hangar("trash", "restore", "keep", "--host", srv.host, home=home)
    assert restored.returncode == 0 and "restored keep:latest" in restored.stdout
    assert tags(srv)["keep:latest"] == digest
    assert 'SYSTEM """one' in (client.show("keep").modelfile or "")
    assert cli(srv, home, "trash", "list") == []

    # Delete again, take the name with another model: restore is refused and changes nothing.
    client.delete("keep")
    [entry] = cli(srv, home, "trash", "list")
    create(client, tmp_path, "keep", make_gguf(seed=3), "two")
    refused = hangar("trash", "restore", "keep", "--host", srv.host, home=home)
    assert refused.returncode == 1 and "exists again" in refused.stderr
    http = httpx.post(srv.url + "/api/hangar/trash/restore", json={"model": str(entry["id"])})
    assert http.status_code == 409 and "exists again" in http.json()["detail"]
    assert 'SYSTEM """two' in (client.show("keep").modelfile or "")
    assert [e["id"] for e in cli(srv, home, "trash", "list")] == [entry["id"]]
    # Once the name is free again, the entry restores by id with its original digest.
    client.delete("keep")
    http = httpx.post(srv.url + "/api/hangar/trash/restore", json={"model": str(entry["id"])})
    assert http.status_code == 200 and http.json()["restored"] == "keep:latest"
    assert tags(srv)["keep:latest"] == digest
    missing = httpx.post(srv.url + "/api/hangar/trash/restore", json={"model": "nothing-here"})
    assert missing.status_code == 404


def test_the_schedule_expires_the_trash_and_reclaims_its_space(
    home: Path, tmp_path: Path, start_server: StartServer, make_gguf: MakeGguf
) -> None:
    # A grace, so the scheduled GC does not reclaim the uploaded blob before create names it (a blob
    # the trash held is reclaimed after the reuse fuse, 0 here, whatever the grace).
    env = {"HANGAR_TRASH_RETENTION": "2s", "HANGAR_GC_INTERVAL": "1s", "HANGAR_GC_GRACE": "10m"}
    server = start_server(home, env=env)
    client = ollama.Client(host=server.url)
    gguf = make_gguf(seed=4)
    create(client, tmp_path, "brief", gguf, "x")
    client.delete("brief")
    assert gguf_blob(gguf) in blob_files(home)  # kept by the trash entry
    wait_until(lambda: gguf_blob(gguf) not in blob_files(home), timeout=30, interval=0.2)
    assert gguf_blob(gguf) not in blob_files(home)
    assert cli(server, home, "trash", "list") == []
    expired = [e for e in cli(server, home, "audit") if e["action"] == "expire"]
    assert expired and expired[0]["bytes_freed"] > 0 and expired[0]["actor"] == "gc"


def test_hangar_gc_reclaims_the_trash_once_it_expired(
    home: Path, tmp_path: Path, start_server: StartServer, make_gguf: MakeGguf
) -> None:
    server = start_server(home, env={"HANGAR_TRASH_RETENTION": "2s", "HANGAR_GC_INTERVAL": "1h"})
    client = ollama.Client(host=server.url)
    gguf = make_gguf(seed=6)
    create(client, tmp_path, "brief", gguf, "x")
    client.delete("brief")
    reports = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        report = hangar_json("gc", home=home)
        reports.append(report)
        if report["expired_trash"]:
            break
        assert gguf_blob(gguf) in blob_files(home)  # not expired yet: still restorable, still on disk
        time.sleep(0.3)
    assert reports[-1]["expired_trash"] == [f"{LIBRARY}brief:latest"]
    assert gguf_blob(gguf) in {blob_file(d) for d in reports[-1]["blobs"]}
    assert gguf_blob(gguf) not in blob_files(home)
    assert cli(server, home, "trash", "list") == []


# ------------------------------------------------------------------------------------------ prune


PRUNE_RULES = [
    (["--older-than", "30d"], ["keep-me", "old-idle", "old-used"]),
    (["--unused-for", "14d"], ["keep-me", "new-idle", "old-idle"]),
    (["--older-than", "30d", "--unused-for", "14d"], ["keep-me", "old-idle"]),
    (["--older-than", "30d", "--match", "old-*"], ["old-idle", "old-used"]),
    (["--unused-for", "14d", "--match", "*-idle:latest"], ["new-idle", "old-idle"]),
    (["--keep-last", "1"], []),  # one tag per repository: each is its repository's newest
]


def test_prune_rules_select_exactly_the_expected_models(
    trash_server: ServerProcess, home: Path, tmp_path: Path, make_gguf: MakeGguf
) -> None:
    srv = trash_server
    client = ollama.Client(host=srv.url)
    now = time.time()
    ages = {  # name: (days since modified, days since used)
        "old-used": (40, 1),
        "old-idle": (40, 20),
        "new-idle": (2, 20),
        "new-used": (1, 1),
        "keep-me": (50, 50),
    }
    for i, (name, (age, idle)) in enumerate(ages.items()):
        create(client, tmp_path, name, make_gguf(seed=10 + i), name)
        set_times(home, name, now - age * DAY, now - idle * DAY)
    everything = sorted(f"{n}:latest" for n in ages)
    assert sorted(tags(srv)) == everything

    for rule, expected in PRUNE_RULES:
        names = [f"{n}:latest" for n in expected]
        dry = cli(srv, home, "prune", "--dry-run", *rule)
        assert sorted(r["model"] for r in dry["results"]) == names, rule
        assert all(r["status"] == "would_delete" for r in dry["results"])
        assert sorted(tags(srv)) == everything
        real = cli(srv, home, "prune", *rule)
        assert sorted(r["model"] for r in real["results"]) == names, rule
        assert all(r["status"] == "trashed" for r in real["results"])
        assert sorted(tags(srv)) == sorted(set(everything) - set(names)), rule
        for name in names:  # back for the next rule, with its times (restore keeps them)
            answer = httpx.post(srv.url + "/api/hangar/trash/restore", json={"model": name})
            assert answer.status_code == 200, answer.text

    # The HTTP API takes the same rules as strings and ints.
    body = {"older_than": "30d", "unused_for": "14d", "match": "*", "dry_run": True}
    doc = httpx.post(srv.url + "/api/hangar/prune", json=body).json()
    assert sorted(r["model"] for r in doc["results"]) == ["keep-me:latest", "old-idle:latest"]
    assert httpx.post(srv.url + "/api/hangar/prune", json={"match": "*"}).status_code == 400
    bad = httpx.post(srv.url + "/api/hangar/prune", json={"older_than": "soon"})
    assert bad.status_code == 400 and "older_than" in bad.json()["detail"][0]["loc"]  # the schema says why
    assert hangar("prune", "--host", srv.host, home=home).returncode == 1  # no rule: refused
    purged = cli(srv, home, "prune", "--purge", "--older-than", "30d", "--unused-for", "14d")
    assert [r["status"] for r in purged["results"]] == ["deleted", "deleted"]
    assert sorted(tags(srv)) == ["new-idle:latest", "new-used:latest", "old-used:latest"]


def test_keep_last_keeps_the_newest_tags_of_a_repository(
    server: ServerProcess, home: Path, tmp_path: Path, make_gguf: MakeGguf
) -> None:
    client = ollama.Client(host=server.url)
    now = time.time()
    for i in range(4):
        create(client, tmp_path, f"series:v{i}", make_gguf(seed=30 + i), str(i))
        with sqlite3.connect(home / "catalog.db") as db:
            db.execute("UPDATE tags SET modified_at=? WHERE name_key=?", (now - (4 - i) * DAY, f"v{i}"))
    dry = cli(server, home, "prune", "--dry-run", "--keep-last", "2")
    assert sorted(r["model"] for r in dry["results"]) == ["series:v0", "series:v1"]
    doc = cli(server, home, "prune", "--keep-last", "2")
    assert sorted(r["model"] for r in doc["results"]) == ["series:v0", "series:v1"]
    assert sorted(tags(server)) == ["series:v2", "series:v3"]


# ------------------------------------------------------------------------------------------ du


def test_du_totals_equal_the_bytes_on_disk(
    trash_server: ServerProcess, home: Path, tmp_path: Path, make_gguf: MakeGguf
) -> None:
    srv = trash_server
    client = ollama.Client(host=srv.url)
    shared = make_gguf(seed=5)
    create(client, tmp_path, "x", shared, "x")
    create(client, tmp_path, "y", shared, "y")
    create(client, tmp_path, "z", make_gguf(seed=6), "z")
    du = cli(srv, home, "du")
    assert du == httpx.get(srv.url + "/api/hangar/du").json()
    assert du["total"] == disk_bytes(home) and du["trash"] == 0
    assert all({"model", "size", "unique_size"} <= set(m) for m in du["models"])
    unique = {m["model"]: m["unique_size"] for m in du["models"]}
    assert unique["x:latest"] < len(shared)  # the GGUF layer is shared with y

    client.delete("x")  # to the trash: still on disk, counted in the total and as trash
    du = cli(srv, home, "du")
    assert du["total"] == disk_bytes(home) and du["trash"] > 0
    assert "x:latest" not in {m["model"] for m in du["models"]}
    assert {m["model"]: m["unique_size"] for m in du["models"]}["y:latest"] < len(shared)

    real = cli(srv, home, "rm", "--purge", "z")
    assert real["results"][0]["plan"]["bytes_freed"] == unique["z:latest"]
    du = cli(srv, home, "du")
    assert du["total"] == disk_bytes(home)
    cli(srv, home, "trash", "empty")
    du = cli(srv, home, "du")
    assert du["total"] == disk_bytes(home) and du["trash"] == 0
    [only] = du["models"]
    assert only["model"] == "y:latest" and only["unique_size"] == only["size"]


# ------------------------------------------------------------------------------------------ bulk and audit


def test_bulk_rm_deletes_what_it_can_with_one_result_per_model(
    server: ServerProcess, home: Path, tmp_path: Path, make_gguf: MakeGguf
) -> None:
    client = ollama.Client(host=server.url)
    create(client, tmp_path, "p", make_gguf(seed=7), "p")
    create(client, tmp_path, "q", make_gguf(seed=8), "q")
    out = hangar("rm", "p", "nope", "q", "--host", server.host, home=home)
    assert out.returncode == 1
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("deleted p (freed ")
    assert lines[1] == 'model "nope:latest" not found'
    assert lines[2].startswith("deleted q (freed ")
    assert tags(server) == {}
    create(client, tmp_path, "r", make_gguf(seed=9), "r")
    batch = httpx.post(server.url + "/api/hangar/delete", json={"models": ["p", "../bad", "r"]}).json()
    assert [(r["model"], r["status"]) for r in batch["results"]] == [
        ("p", "not_found"),
        ("../bad", "invalid"),
        ("r", "deleted"),
    ]
    assert batch["ok"] is False and tags(server) == {}


def test_every_operation_is_audited(
    trash_server: ServerProcess, home: Path, tmp_path: Path, make_gguf: MakeGguf
) -> None:
    srv = trash_server
    client = ollama.Client(host=srv.url)
    for i, name in enumerate(("p", "q", "busy", "stale")):
        create(client, tmp_path, name, make_gguf(seed=20 + i), name)
    set_times(home, "stale", time.time() - 40 * DAY, time.time() - 40 * DAY)
    add_dependent(home, "busy", "deployment", "prod-chat", "serves traffic")

    assert hangar("rm", "--dry-run", "p", "--host", srv.host, home=home).returncode == 0
    assert hangar("rm", "p", "nope", "--host", srv.host, home=home).returncode == 1
    refused = hangar("rm", "busy", "--host", srv.host, home=home)
    assert refused.returncode == 1
    assert "refused busy: deployment prod-chat: serves traffic" in refused.stdout
    conflict = httpx.request("DELETE", srv.url + "/api/delete", json={"model": "busy"})
    assert conflict.status_code == 409 and conflict.json()["plan"]["blockers"][0]["id"] == "prod-chat"
    assert "busy:latest" in tags(srv)
    assert hangar("trash", "restore", "p", "--host", srv.host, home=home).returncode == 0
    client.delete("q")
    assert cli(srv, home, "trash", "empty")["purged"] == ["q:latest"]
    assert cli(srv, home, "prune", "--older-than", "30d")["results"][0]["model"] == "stale:latest"
    assert hangar("gc", home=home).returncode == 0
    assert httpx.post(srv.url + "/api/hangar/gc", json={"dry_run": False}).status_code == 200

    entries: list[dict[str, Any]] = cli(srv, home, "audit")
    assert entries == httpx.get(srv.url + "/api/hangar/audit").json()["entries"]
    assert entries == sorted(entries, key=lambda e: (e["at"], e["id"]), reverse=True)
    seen = {(e["action"], e["face"], e["outcome"], e["dry_run"]) for e in entries}
    assert {
        ("delete", "hangar", "ok", True),  # rm --dry-run
        ("delete", "hangar", "ok", False),
        ("delete", "hangar", "not_found", False),
        ("delete", "hangar", "refused", False),
        ("delete", "ollama", "refused", False),
        ("delete", "ollama", "ok", False),
        ("restore", "hangar", "ok", False),
        ("purge", "hangar", "ok", False),
        ("prune", "hangar", "ok", False),
        ("gc", "cli", "ok", False),
        ("gc", "hangar", "ok", False),
    } <= seen
    refusal = next(e for e in entries if e["outcome"] == "refused")
    assert refusal["detail"]["blockers"] == [
        {"kind": "deployment", "id": "prod-chat", "reason": "serves traffic"}
    ]
    purge = next(e for e in entries if e["action"] == "purge")
    assert purge["bytes_freed"] > 0 and purge["target"].startswith("trash:")
    assert len(cli(srv, home, "audit", "--since", "1h")) == len(entries)
    since = httpx.get(srv.url + "/api/hangar/audit", params={"since": "1h"}).json()["entries"]
    assert since == entries
    assert httpx.get(srv.url + "/api/hangar/audit", params={"since": "0s"}).json()["entries"] == []
    assert httpx.get(srv.url + "/api/hangar/audit", params={"since": "later"}).status_code == 400


def test_the_new_endpoints_are_in_the_openapi_schema(server: ServerProcess) -> None:
    schema = httpx.get(server.url + "/openapi.json").json()
    paths = schema["paths"]
    for path in ("/api/hangar/prune", "/api/hangar/trash/empty", "/api/hangar/delete"):
        body = paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert "$ref" in body, path
    assert {"older_than", "unused_for", "keep_last", "match", "dry_run", "purge"} <= set(
        schema["components"]["schemas"]["PruneRequest"]["properties"]
    )
    assert {p["name"] for p in paths["/api/hangar/audit"]["get"]["parameters"]} == {"since", "limit"}
    assert "get" in paths["/api/hangar/du"]


def test_the_server_applies_retention_policies_from_the_config_file(
    home: Path, tmp_path: Path, start_server: StartServer, make_gguf: MakeGguf
) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text('[[retention]]\nmatch = "scratch-*"\nolder_than = "30d"\n')
    # A grace, so the 1 s GC does not reclaim an uploaded blob before create names it.
    server = start_server(home, env={"HANGAR_GC_INTERVAL": "1s", "HANGAR_GC_GRACE": "10m"})
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
