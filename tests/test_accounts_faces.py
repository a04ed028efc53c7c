"""Accounts on the Ollama face, `/api/hangar` and the CLI (issue 10), through real servers with
HANGAR_AUTH=required (and one with the default `local`): the real `ollama` client with a Bearer
header, httpx, and the `hangar` CLI as a subprocess."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest

from harness import MakeGguf, ServerProcess, hangar, hangar_json, wait_until

SECRETS: list[str] = []
"""Every token this module made: none may appear in a log, an audit entry or an error."""
BODIES: list[str] = []
"""Every error body the server answered in these tests."""


class World:
    def __init__(self, home: Path, server: ServerProcess, tmp: Path, tokens: dict[str, str]) -> None:
        self.home, self.server, self.tmp, self.tokens = home, server, tmp, tokens

    def ollama(self, user: str | None) -> ollama.Client:
        headers = {} if user is None else {"Authorization": f"Bearer {self.tokens.get(user, user)}"}
        return ollama.Client(host=self.server.url, headers=headers)

    def http(self, user: str | None) -> httpx.Client:
        headers = {} if user is None else {"Authorization": f"Bearer {self.tokens.get(user, user)}"}
        return httpx.Client(base_url=self.server.url, headers=headers, timeout=30)

    def cli(self, user: str | None, *args: str) -> subprocess.CompletedProcess[str]:
        env = {} if user is None else {"HANGAR_TOKEN": self.tokens.get(user, user)}
        proc = hangar(*args, home=self.home, host=self.server.host, env=env)
        BODIES.append(proc.stderr)
        return proc

    def create(self, user: str, name: str, seed: int, gguf: MakeGguf) -> str:
        path = self.tmp / f"{seed}.gguf"
        path.write_bytes(gguf(seed=seed))
        client = self.ollama(user)
        digest = client.create_blob(path)
        client.create(model=name, files={path.name: digest}, stream=False)
        return digest


def _fails(status: int, call: Any, *args: Any, **kw: Any) -> str:
    with pytest.raises(ollama.ResponseError) as info:
        call(*args, **kw)
    assert info.value.status_code == status, info.value
    BODIES.append(str(info.value.error))
    return str(info.value.error)


def _token(doc: dict[str, Any]) -> str:
    SECRETS.append(doc["token"])
    return str(doc["token"])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, make_gguf_module: MakeGguf) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("accounts")
    home = tmp / "home"
    tokens = {}
    for name, extra in (("alice", []), ("bob", []), ("root", ["--admin"])):
        tokens[name] = _token(hangar_json("user", "add", name, *extra, home=home))
    org = hangar_json("org", "add", "acme", "--member", "alice", home=home)
    assert org["members"] == ["alice"]
    env = {"HANGAR_AUTH": "required", "HANGAR_UPLOAD_SESSIONS_PER_CLIENT": "3"}
    server = ServerProcess(home, env=env, log_dir=tmp / "logs").start()
    try:
        yield World(home, server, tmp, tokens)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def make_gguf_module() -> MakeGguf:
    from modelhangar.testing.gguf_factory import make_gguf as factory

    def make(seed: int = 0, **kw: Any) -> bytes:
        data: bytes = factory(None, seed=seed, **kw)
        return data

    return make


def test_user_add_prints_its_token_once_and_listings_never(world: World) -> None:
    users = hangar_json("user", "list", home=world.home)
    assert {u["name"] for u in users["users"]} >= {"alice", "bob", "root", "acme"}
    listed = hangar("token", "list", home=world.home)
    assert listed.returncode == 0 and "alice" in listed.stdout
    assert not any(s in listed.stdout for s in SECRETS)
    text = hangar("user", "add", "dave", home=world.home)
    assert text.returncode == 0, text.stderr
    token = next(w for w in text.stdout.split() if w.startswith("hgr_"))
    SECRETS.append(token)
    assert "shown this once" in text.stdout


def test_no_token_a_wrong_one_and_a_revoked_one_are_401_on_every_face(world: World) -> None:
    made = hangar_json("token", "add", "bob", "--name", "ci", "--expires", "1h", home=world.home)
    temp = _token(made)
    assert world.ollama(temp).list().models is not None  # works until revoked
    wrong = "hgr_aaaaaaaaaa_" + "B" * 40
    revoked = hangar("token", "revoke", made["prefix"], home=world.home)
    assert revoked.returncode == 0, revoked.stderr
    for who in (None, wrong, temp, "not-even-a-token"):
        _fails(401, world.ollama(who).list)
        _fails(401, world.ollama(who).show, "anything")
        with world.http(who) as http:
            r = http.get("/api/hangar/models")
            assert r.status_code == 401 and isinstance(r.json()["detail"], str)
            BODIES.append(r.text)
            r = http.request("DELETE", "/api/delete", json={"model": "anything"})
            assert r.status_code == 401 and "error" in r.json()
            # /api/version answers without a token, but never to a bad one
            assert http.get("/api/version").status_code == (200 if who is None else 401)
        proc = world.cli(who, "list")
        assert proc.returncode == 1 and "token" in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    proc = world.cli(None, "whoami")
    assert proc.returncode == 1 and "--token or HANGAR_TOKEN" in proc.stderr
    brief = _token(hangar_json("token", "add", "bob", "--name", "brief", "--expires", "1s", home=world.home))

    def expired() -> bool:
        with world.http(brief) as http:
            return http.get("/api/tags").status_code == 401

    assert wait_until(expired, timeout=30)  # an expired token stops working, with nothing to do


def test_another_users_private_model_does_not_exist_for_them(
    world: World, make_gguf_module: MakeGguf
) -> None:
    world.create("alice", "secret", 1, make_gguf_module)
    alice, bob, root = world.ollama("alice"), world.ollama("bob"), world.ollama("root")
    assert "secret:latest" in [m.model for m in alice.list().models]
    assert "secret:latest" in [m.model for m in root.list().models]  # admins see everything
    assert "secret:latest" not in [m.model for m in bob.list().models]
    assert "not found" in _fails(404, bob.show, "secret")
    _fails(404, bob.delete, "secret")
    _fails(404, bob.copy, "secret", "mine")
    with world.http("bob") as http:
        assert "secret:latest" not in [m["model"] for m in http.get("/api/hangar/models").json()["models"]]
        assert "secret:latest" not in [m["model"] for m in http.get("/api/hangar/du").json()["models"]]
        r = http.post("/api/hangar/delete", json={"models": ["secret"]})
        assert r.json()["results"][0]["status"] == "not_found"
        r = http.post("/api/hangar/visibility", json={"model": "secret", "visibility": "public"})
        assert r.status_code == 404
    shown = world.cli("bob", "show", "secret")
    assert shown.returncode == 1 and "not found" in shown.stderr
    # Public: everyone may read it; only its owner (and admins) may change or delete it.
    made_public = world.cli("alice", "visibility", "secret", "public")
    assert made_public.returncode == 0, made_public.stderr
    assert bob.show("secret").modelinfo
    assert "secret:latest" in [m.model for m in bob.list().models]
    _fails(403, bob.delete, "secret")
    bob.copy("secret", "bobs-copy")  # reading it is enough to copy it into one's own name
    _fails(403, bob.copy, "bobs-copy", "secret")  # but not over alice's
    assert world.cli("alice", "visibility", "secret", "private").returncode == 0
    _fails(404, bob.show, "secret")


def test_a_push_into_someone_elses_namespace_is_denied(world: World, make_gguf_module: MakeGguf) -> None:
    digest = world.create("alice", "alice/own", 2, make_gguf_module)
    bob = world.ollama("bob")
    path = world.tmp / "b.gguf"
    path.write_bytes(make_gguf_module(seed=3))
    blob = bob.create_blob(path)
    assert "namespace" in _fails(
        403, bob.create, model="alice/intruder", files={"b.gguf": blob}, stream=False
    )
    world.create("bob", "bobs", 3, make_gguf_module)
    _fails(403, bob.copy, "bobs", "alice/copied")
    r = world.http("bob").post("/api/pull", json={"model": "127.0.0.1:9/alice/x", "stream": False})
    assert r.status_code == 403 and "error" in r.json()
    r = world.http("bob").post(
        "/api/push", json={"model": "127.0.0.1:9/bob/own", "source": "alice/own", "stream": False}
    )
    assert r.status_code == 404  # alice's private model is not there for bob
    # alice's layer cannot be named by its digest alone: bob must upload its bytes himself.
    assert world.http("bob").head(f"/api/blobs/{digest}").status_code == 404
    assert world.http("alice").head(f"/api/blobs/{digest}").status_code == 200
    err = _fails(400, bob.create, model="stolen", files={"x.gguf": digest}, stream=False)
    assert "not found" in err
    assert "alice/intruder:latest" not in [m.model for m in world.ollama("root").list().models]


def test_an_uploaded_blob_is_the_uploaders_only_until_it_is_reclaimed(
    world: World, make_gguf_module: MakeGguf
) -> None:
    path = world.tmp / "loose.gguf"
    path.write_bytes(make_gguf_module(seed=8))
    digest = world.ollama("alice").create_blob(path)
    assert world.http("alice").head(f"/api/blobs/{digest}").status_code == 200
    assert world.http("bob").head(f"/api/blobs/{digest}").status_code == 404
    assert hangar("gc", home=world.home).returncode == 0  # nothing names it: reclaimed (grace 0)
    assert world.ollama("bob").create_blob(path) == digest  # bob uploads the same bytes again
    assert world.http("bob").head(f"/api/blobs/{digest}").status_code == 200
    assert world.http("alice").head(f"/api/blobs/{digest}").status_code == 404  # not alice's any more


def test_an_organisation_member_acts_for_the_organisation(world: World, make_gguf_module: MakeGguf) -> None:
    world.create("alice", "acme/tool", 4, make_gguf_module)
    bob = world.ollama("bob")
    _fails(404, bob.show, "acme/tool")
    _fails(403, bob.copy, "bobs", "acme/bobs")
    added = hangar_json("org", "members", "acme", "--add", "bob", home=world.home)
    assert added["members"] == ["alice", "bob"]
    assert bob.show("acme/tool").modelinfo  # a member reads the organisation's private model
    bob.copy("acme/tool", "acme/tool:v2")
    bob.delete("acme/tool:v2")
    who = world.cli("bob", "whoami")
    assert who.returncode == 0 and "bob" in who.stdout and "acme" in who.stdout, who.stdout
    assert hangar_json("org", "members", "acme", "--remove", "bob", home=world.home)["members"] == ["alice"]
    _fails(404, bob.show, "acme/tool")
    removal = hangar("user", "remove", "acme", home=world.home)
    assert removal.returncode == 1 and "acme/tool" in removal.stderr, removal.stderr


def test_admin_endpoints_over_http(world: World) -> None:
    with world.http("root") as http:
        r = http.post("/api/hangar/users", json={"name": "erin"})
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["name"] == "erin" and doc["token"].startswith("hgr_")
        SECRETS.append(doc["token"])
        assert http.get("/api/hangar/whoami").json()["user"] == "root"
        tokens = http.get("/api/hangar/tokens", params={"user": "erin"}).json()["tokens"]
        assert [t["prefix"] for t in tokens] == [doc["token_prefix"]]
        assert doc["token"] not in json.dumps(tokens)
        rotated = http.post(f"/api/hangar/tokens/{doc['token_prefix']}/rotate").json()
        SECRETS.append(rotated["token"])
        _fails(401, world.ollama(doc["token"]).list)
        assert world.ollama(rotated["token"]).list().models is not None
        assert http.delete("/api/hangar/users/erin").status_code == 200
    with world.http("bob") as http:
        assert http.get("/api/hangar/users").status_code == 403
        assert http.post("/api/hangar/users", json={"name": "mallory"}).status_code == 403
        assert http.post("/api/hangar/gc", json={}).status_code == 403
        own = http.get("/api/hangar/tokens").json()["tokens"]
        assert {t["principal"] for t in own} == {"bob"}
        assert http.get("/api/hangar/tokens", params={"user": "alice"}).status_code == 403
    via_api = world.cli("root", "user", "list", "--host", world.server.host, "--json")
    assert via_api.returncode == 0 and "alice" in via_api.stdout, via_api.stderr
    refused = world.cli("bob", "user", "list", "--host", world.server.host)
    assert refused.returncode == 1 and "not an admin" in refused.stderr


def test_quotas_per_user_answer_the_faces_error_and_keep_nothing(
    world: World, make_gguf_module: MakeGguf
) -> None:
    world.tokens["quinn"] = _token(hangar_json("user", "add", "quinn", home=world.home))
    capped = hangar_json("user", "quota", "quinn", "--max-models", "1", home=world.home)
    assert capped["quota_models"] == 1
    world.create("quinn", "first", 6, make_gguf_module)
    quinn = world.ollama("quinn")
    assert "quota" in _fails(413, quinn.copy, "first", "second")
    path = world.tmp / "q.gguf"
    path.write_bytes(make_gguf_module(seed=7))
    blob = quinn.create_blob(path)
    _fails(413, quinn.create, model="third", files={"q.gguf": blob}, stream=False)
    assert [m.model for m in quinn.list().models] == ["first:latest"]
    hangar_json("user", "quota", "quinn", "--max-models", "0", "--max-bytes", "10", home=world.home)
    _fails(413, quinn.create, model="fourth", files={"q.gguf": blob}, stream=False)
    assert [m.model for m in quinn.list().models] == ["first:latest"]


def test_upload_sessions_are_capped_per_user_not_per_address(world: World) -> None:
    def start(user: str, repo: str) -> httpx.Response:
        with world.http(user) as http:
            return http.post(f"/v2/{repo}/blobs/uploads/")

    answers = [start("alice", "alice/sessions").status_code for _ in range(4)]
    assert answers == [202, 202, 202, 429], answers  # HANGAR_UPLOAD_SESSIONS_PER_CLIENT=3
    refused = start("alice", "alice/sessions")
    assert refused.json()["errors"][0]["code"] == "TOOMANYREQUESTS" and "alice" in refused.text
    assert start("bob", "bob/sessions").status_code == 202  # same address, another user: its own cap


def test_an_upload_session_is_its_openers_alone(world: World) -> None:
    """Bob's session in a namespace both may write to does not exist for Alice, even with its URL:
    her status, chunk, completion and cancel are 404 BLOB_UPLOAD_UNKNOWN and change nothing; Bob
    then finishes it."""
    data = b"bob's layer, in two chunks"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with world.http("bob") as bob, world.http("alice") as alice:
        started = bob.post("/v2/shared/drop/blobs/uploads/")
        assert started.status_code == 202, started.text
        path = httpx.URL(started.headers["location"]).path
        assert bob.patch(path, content=data[:10], headers={"Content-Range": "0-9"}).status_code == 202
        tries = [
            alice.get(path),
            alice.patch(path, content=b"alice's bytes", headers={"Content-Range": "10-22"}),
            alice.put(path, params={"digest": digest}, content=data[10:]),
            alice.delete(path),
        ]
        for r in tries:
            BODIES.append(r.text)
            assert r.status_code == 404 and r.json()["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN", r.text
        status = bob.get(path)
        assert status.status_code == 204 and status.headers["range"] == "0-9"
        done = bob.put(path, params={"digest": digest}, content=data[10:])
        assert done.status_code == 201, done.text
        assert bob.get(f"/v2/shared/drop/blobs/{digest}").content == data


def test_revoking_with_the_whole_token_sends_and_shows_only_its_handle(world: World) -> None:
    """Someone who leaked a token pastes all of it into `token revoke`: it is revoked, and its secret
    reaches neither the server's access log (the path) nor an answer."""
    leaked = _token(hangar_json("token", "add", "bob", "--name", "leaked", home=world.home))
    handle = leaked.rsplit("_", 1)[0]
    assert world.ollama(leaked).list().models is not None
    done = world.cli("bob", "token", "revoke", leaked, "--host", world.server.host, "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["prefix"] == handle, done.stderr
    assert leaked not in done.stdout
    _fails(401, world.ollama(leaked).list)
    with world.http("bob") as http:  # a client that puts the whole token in the path itself
        again = http.post(f"/api/hangar/tokens/{leaked}/revoke")
        BODIES.append(again.text)
        assert again.status_code == 200 and leaked not in again.text
        unknown = http.post(f"/api/hangar/tokens/hgr_zzzzzzzzzz_{'Q' * 40}/rotate")
        BODIES.append(unknown.text)
        assert unknown.status_code == 404 and "Q" * 40 not in unknown.text
    assert wait_until(lambda: f"/api/hangar/tokens/{handle}_<secret>/revoke" in world.server.log())
    assert leaked not in world.server.log() and "Q" * 40 not in world.server.log()


def test_tokens_never_appear_in_logs_audit_entries_or_errors(
    world: World, make_gguf_module: MakeGguf
) -> None:
    world.create("alice", "doomed", 5, make_gguf_module)
    world.ollama("alice").delete("doomed")
    db = sqlite3.connect(world.home / "catalog.db")
    try:
        rows = db.execute("SELECT * FROM audit").fetchall()
    finally:
        db.close()
    assert any("alice" in r and "default" in r for r in rows)
    shown = world.cli("root", "audit", "--json")
    assert shown.returncode == 0 and "alice" in shown.stdout, shown.stderr
    audit = json.dumps(rows) + shown.stdout
    log = world.server.log()
    for secret in SECRETS:
        assert secret not in log
        assert secret not in audit
        assert all(secret not in body for body in BODIES)
        assert secret[len("hgr_") + 11 :] not in log  # not even the secret part alone


def test_local_mode_loopback_without_a_token_is_the_admin(tmp_path: Path, make_gguf_module: MakeGguf) -> None:
    home = tmp_path / "home"
    token = _token(hangar_json("user", "add", "zed", home=home))
    server = ServerProcess(home, log_dir=tmp_path / "logs").start()
    try:
        client = ollama.Client(host=server.url)
        assert client.list().models == []
        who = hangar("whoami", "--json", home=home, host=server.host)
        assert json.loads(who.stdout)["admin"] is True and json.loads(who.stdout)["user"] is None
        bad = ollama.Client(host=server.url, headers={"Authorization": "Bearer hgr_aaaaaaaaaa_" + "C" * 40})
        _fails(401, bad.list)
        zed = ollama.Client(host=server.url, headers={"Authorization": f"Bearer {token}"})
        assert (
            json.loads(hangar("whoami", "--json", "--token", token, home=home, host=server.host).stdout)[
                "user"
            ]
            == "zed"
        )
        assert zed.list().models == []
    finally:
        server.stop()
    # written in the server's batch of last-used times (at the latest when it stops), never per request
    [used] = hangar_json("token", "list", "zed", home=home)["tokens"]
    assert used["last_used_at"] is not None


def test_serve_says_anonymous_access_is_loopback_only(tmp_path: Path) -> None:
    # 192.0.2.1 (TEST-NET-1) cannot be bound here: the server says its note, then fails to listen.
    proc = hangar("serve", "--host", "192.0.2.1:11435", home=tmp_path / "home", timeout=60)
    assert "anonymous access is loopback only" in proc.stderr, proc.stderr
    assert proc.returncode == 1
