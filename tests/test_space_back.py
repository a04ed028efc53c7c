"""Space back when promised, and every removal through the planner, tried as a user would.

A real server, the `ollama` client, raw `/v2` requests and the `hangar` CLI: a purged delete frees
its blobs at once or, for blobs just used by an upload, when the reuse fuse ends, by the server's
timer; the plan and `hangar rm` say which and when; `hangar du` explains every byte; an overwrite
puts the old version in the trash (or is refused while something uses it).
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import time
from pathlib import Path

import httpx
import ollama
import pytest

from harness import (
    AUTH_VARIANTS,
    OCI_MANIFEST,
    Auth,
    MakeGguf,
    ServerProcess,
    StartServer,
    blob_file,
    blob_files,
    hangar,
    hangar_json,
    image_manifest,
    wait_until,
)

LIBRARY = "registry.ollama.ai/library/"
SIZE = r"\d+(\.\d)? (B|KB|MB|GB)"


def create(client: ollama.Client, tmp: Path, name: str, gguf: bytes, system: str = "hi") -> None:
    path = tmp / f"{name.replace(':', '_')}.gguf"
    path.write_bytes(gguf)
    client.create(model=name, files={"m.gguf": client.create_blob(path)}, system=system)


def gguf_file(gguf: bytes) -> str:
    return blob_file("sha256:" + hashlib.sha256(gguf).hexdigest())


def disk_bytes(home: Path) -> int:
    return sum(p.stat().st_size for p in (home / "blobs").iterdir() if p.is_file())


def catalog(home: Path, sql: str, *params: object) -> None:
    with sqlite3.connect(home / "catalog.db") as db:
        db.execute(sql, params)


FUSED = {"HANGAR_REUSE_FUSE": "3s", "HANGAR_GC_GRACE": "1h", "HANGAR_TRASH_RETENTION": "0"}
"""A server with a short reuse fuse and the long orphan grace of the defaults."""


@pytest.fixture
def fused(home: Path, start_server: StartServer) -> ServerProcess:
    return start_server(home, env=FUSED)


def cli_env(token: str | None) -> dict[str, str]:
    """The environment of a client command carrying `token` (none for None: the loopback admin)."""
    return {} if token is None else {"HANGAR_TOKEN": token}


@pytest.mark.parametrize("auth", AUTH_VARIANTS)
def test_a_fresh_model_purged_comes_back_when_its_fuse_ends(
    start_server: StartServer, home: Path, tmp_path: Path, make_gguf: MakeGguf, auth: str
) -> None:
    """In the `tokens` run a user (not an admin) creates and deletes, and asks `du` and `audit`."""
    who = Auth(auth, home)
    fused = start_server(home, env={**FUSED, **who.env})
    mine = cli_env(who.user_token)
    client = ollama.Client(host=fused.url, headers=who.user)
    gguf = make_gguf(seed=7)
    create(client, tmp_path, "p2", gguf)
    preview = hangar_json("rm", "--dry-run", "--purge", "p2", "--host", fused.host, home=home, env=mine)
    [would] = preview["results"]
    proc = hangar("rm", "--purge", "p2", "--host", fused.host, home=home, env=mine)
    assert proc.returncode == 0, proc.stderr
    # "freed 0 B; 759 B more in 3 s (at ...): just used by an upload"
    assert re.fullmatch(
        rf"deleted p2 \(freed {SIZE}; {SIZE} more in \d s \(at [0-9:]+\): just used by an upload\)\n",
        proc.stdout,
    ), proc.stdout
    # The store-wide breakdown is the admins' (a user's `du` counts only the models it may read).
    admin = cli_env(who.admin_token)
    du = hangar_json("du", "--host", fused.host, home=home, env=admin)
    assert du["breakdown"]["waiting_fuse"] > 0
    assert du["total"] == disk_bytes(home)
    # The server's timer frees it when the fuse ends; no GC round, no hour-long grace.
    assert wait_until(lambda: gguf_file(gguf) not in blob_files(home), timeout=30)
    du = hangar_json("du", "--host", fused.host, home=home, env=admin)
    assert du["breakdown"]["waiting_fuse"] == 0 and du["total"] == disk_bytes(home)
    # The timer's `reclaim` entries are the store's, not the user's: the admins' audit has them.
    audit = hangar_json("audit", "--host", fused.host, home=home, env=admin)
    reclaimed = sum(
        e["bytes_freed"] for e in audit if e["action"] in ("delete", "reclaim") and not e["dry_run"]
    )
    assert reclaimed == would["plan"]["bytes_freed"]  # the numbers a plan prints are the numbers that happen
    if who.on:
        assert {e["actor"] for e in audit if e["action"] == "delete"} == {"worker"}
        own = hangar_json("audit", "--host", fused.host, home=home, env=mine)
        assert own and {e["actor"] for e in own} == {"worker"}
    who.assert_secret(logs=[fused.log()], home=home)


def test_gc_reclaims_every_blob_past_its_fuse(
    fused: ServerProcess, home: Path, tmp_path: Path, make_gguf: MakeGguf
) -> None:
    client = ollama.Client(host=fused.url)
    gguf = make_gguf(seed=8)
    create(client, tmp_path, "m", gguf)
    assert hangar("rm", "--purge", "m", "--host", fused.host, home=home).returncode == 0
    fused.kill()  # the timer dies with it: hangar gc alone must reclaim once the fuse ended
    env = {"HANGAR_REUSE_FUSE": "3s", "HANGAR_GC_GRACE": "1h", "HANGAR_TRASH_RETENTION": "0"}
    early = hangar_json("gc", "--dry-run", home=home, env=env)
    assert early["blobs"] == [] and early["waiting"][0]["bytes"] > 0
    time.sleep(3.5)  # let the fuse end (not a timing assertion: gc must then reclaim)
    report = hangar_json("gc", home=home, env=env)
    assert "sha256:" + hashlib.sha256(gguf).hexdigest() in report["blobs"]
    assert gguf_file(gguf) not in blob_files(home)


def test_du_explains_every_byte(
    start_server: StartServer, home: Path, tmp_path: Path, make_gguf: MakeGguf
) -> None:
    srv = start_server(home, env={"HANGAR_TRASH_RETENTION": "1h", "HANGAR_GC_GRACE": "1h"})
    client = ollama.Client(host=srv.url)
    create(client, tmp_path, "kept", make_gguf(seed=1))
    create(client, tmp_path, "binned", make_gguf(seed=2))
    assert hangar("rm", "binned", "--host", srv.host, home=home).returncode == 0
    (tmp_path / "stray.bin").write_bytes(b"x" * 99)
    client.create_blob(tmp_path / "stray.bin")  # uploaded, no manifest names it yet
    du = hangar_json("du", "--host", srv.host, home=home)
    assert du["total"] == disk_bytes(home) == sum(du["breakdown"].values())
    assert du["breakdown"]["trash"] > 0 and du["breakdown"]["waiting_grace"] == 99
    text = hangar("du", "--host", srv.host, home=home).stdout.splitlines()
    assert any(line.endswith("held only by the trash") for line in text)
    assert any("uploaded, never named by a manifest" in line for line in text)
    assert text[-1].startswith("total on disk: ")


@pytest.mark.parametrize("auth", AUTH_VARIANTS)
def test_an_overwrite_through_the_ollama_face_goes_to_the_trash_or_is_refused(
    start_server: StartServer, home: Path, tmp_path: Path, make_gguf: MakeGguf, auth: str
) -> None:
    """In the `tokens` run the model and its trash entries are a user's (not an admin)."""
    who = Auth(auth, home)
    mine = cli_env(who.user_token)
    srv = start_server(home, env={"HANGAR_TRASH_RETENTION": "1h", **who.env})
    client = ollama.Client(host=srv.url, headers=who.user)
    create(client, tmp_path, "m", make_gguf(seed=1))
    old = {x.model: x.digest for x in client.list().models}["m:latest"]
    create(client, tmp_path, "m", make_gguf(seed=2))  # Ollama's answer: the overwrite succeeds
    [entry] = hangar_json("trash", "list", "--host", srv.host, home=home, env=mine)
    assert entry["model"] == "m:latest" and entry["manifest_digest"] == "sha256:" + old
    assert entry["replaced_by"] is not None
    text = hangar("trash", "list", "--host", srv.host, home=home, env=mine).stdout
    assert "replaced by" in text
    # Something uses m now: the next overwrite is refused and m stays as it is.
    catalog(
        home,
        "INSERT INTO dependents (kind, id, target_kind, target, target_key, owner, reason, created_at)"
        " VALUES ('deployment', 'prod', 'tag', ?, ?, NULL, 'serves traffic', ?)",
        f"{LIBRARY}m:latest",
        f"{LIBRARY}m:latest",
        time.time(),
    )
    current = {x.model: x.digest for x in client.list().models}["m:latest"]
    with pytest.raises(ollama.ResponseError) as e:
        create(client, tmp_path, "m", make_gguf(seed=3))
    assert "deployment prod: serves traffic" in str(e.value)
    client.copy("m", "m")  # the same version: nothing is replaced, so nothing refuses it
    create(client, tmp_path, "other", make_gguf(seed=4))
    with pytest.raises(ollama.ResponseError) as e:
        client.copy("other", "m")
    assert e.value.status_code == 409
    assert {x.model: x.digest for x in client.list().models}["m:latest"] == current
    audit = hangar_json("audit", "--host", srv.host, home=home, env=mine)
    assert [e["outcome"] for e in audit if e["action"] == "overwrite"] == ["refused", "refused", "ok"]
    who.assert_secret(logs=[srv.log()], home=home)


def put(srv: ServerProcess, path: str, content: bytes = b"", **headers: str) -> httpx.Response:
    return httpx.put(srv.url + path, content=content, headers=headers)


def push_image(srv: ServerProcess, name: str, tag: str, layer: bytes) -> str:
    config = b'{"architecture":"amd64","os":"linux"}'
    for blob in (config, layer):
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        r = httpx.post(f"{srv.url}/v2/{name}/blobs/uploads/?digest={digest}", content=blob)
        assert r.status_code == 201, r.text
    manifest = image_manifest(config, [layer])
    r = put(srv, f"/v2/{name}/manifests/{tag}", manifest, **{"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201, r.text
    return "sha256:" + hashlib.sha256(manifest).hexdigest()


def test_a_registry_tag_delete_or_move_keeps_the_manifest_until_untagged_retention(
    server: ServerProcess, home: Path
) -> None:
    first = push_image(server, "team/img", "v1", b"layer one")
    second = push_image(server, "team/img", "v1", b"layer two")  # the tag moves: first stays untagged
    assert httpx.get(f"{server.url}/v2/team/img/manifests/{first}").status_code == 200
    r = httpx.delete(f"{server.url}/v2/team/img/manifests/v1")
    assert r.status_code == 202
    assert httpx.get(f"{server.url}/v2/team/img/manifests/v1").status_code == 404
    assert httpx.get(f"{server.url}/v2/team/img/manifests/{second}").status_code == 200
    assert httpx.get(f"{server.url}/v2/team/img/tags/list").json()["tags"] in ([], None)
    none = hangar_json("prune", "--untagged-for", "7d", "--host", server.host, home=home)
    assert none["results"] == []
    catalog(home, "UPDATE repo_manifests SET untagged_at = ?", time.time() - 8 * 86400)
    done = hangar_json("prune", "--untagged-for", "7d", "--host", server.host, home=home)
    assert sorted(r["model"] for r in done["results"]) == sorted(f"team/img@{d}" for d in (first, second))
    assert all(r["status"] == "deleted" for r in done["results"])
    for digest in (first, second):
        assert httpx.get(f"{server.url}/v2/team/img/manifests/{digest}").status_code == 404
