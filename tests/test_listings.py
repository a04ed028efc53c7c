"""Listings and start-up (issue 16) through real servers: `/api/tags` from the entries rendered when
tags are written equals the catalog at once after every change, others' private models never appear
in any listing, `/v2/_catalog` and tags lists page completely and without overlap, and a server that
answers `/api/version` before building its app answers every face right after."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest

from harness import CLI, MakeGguf, ServerProcess, StartServer, free_port, hangar_env, hangar_json, wait_until
from modelhangar.core.config import load_settings
from modelhangar.core.listing import EMPTY_DETAILS
from modelhangar.core.names import InvalidName, parse_name
from modelhangar.core.store import Store

LISTED_FIELDS = ("name", "model", "modified_at", "size", "digest", "details")
"""What the ollama client reads of each model of `/api/tags`."""


def create(client: ollama.Client, tmp: Path, name: str, data: bytes, system: str | None = None) -> None:
    path = tmp / f"{abs(hash(data))}.gguf"
    path.write_bytes(data)
    digest = client.create_blob(path)
    client.create(model=name, files={path.name: digest}, system=system, stream=False)


def expected_tags(home: Path) -> list[dict[str, Any]]:
    """`/api/tags` as the catalog says it should be, built without the listing entries: every tag with
    an Ollama name, newest first, times in the local zone as Go prints them."""
    store = Store(load_settings({"HANGAR_HOME": str(home)}))
    try:
        records = store.list_tags()
    finally:
        store.close()
    out = []
    for rec in records:
        try:
            name = parse_name(f"{rec.repository}:{rec.tag}").display_shortest()
        except InvalidName:
            continue
        out.append(
            {
                "name": name,
                "model": name,
                "modified_at": datetime.fromtimestamp(rec.modified_at, tz=UTC).astimezone().isoformat(),
                "size": rec.total_size,
                "digest": rec.manifest_digest.removeprefix("sha256:"),
                "details": rec.details or EMPTY_DETAILS,
            }
        )
    return out


def listed(server: ServerProcess) -> list[dict[str, Any]]:
    r = httpx.get(server.url + "/api/tags", timeout=60)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    models: list[dict[str, Any]] = r.json()["models"]
    return [{k: m[k] for k in LISTED_FIELDS} for m in models]


def test_the_listing_is_the_catalog_at_once_after_each_change(
    home: Path, start_server: StartServer, tmp_path: Path, make_gguf: MakeGguf
) -> None:
    server = start_server(home, env={"HANGAR_TRASH_RETENTION": "1h"})
    client = ollama.Client(host=server.url)
    for i, name in enumerate(("alpha", "beta", "gamma:v1")):
        create(client, tmp_path, name, make_gguf(seed=40 + i))
    assert listed(server) == expected_tags(home)
    before = {m.model: m.digest for m in client.list().models}

    create(client, tmp_path, "beta", make_gguf(seed=50), system="changed")  # an overwrite
    after = {m.model: m.digest for m in client.list().models}
    assert after["beta:latest"] != before["beta:latest"]
    client.copy("alpha", "renamed")  # a rename: copy, then delete the old name
    client.delete("alpha")
    names = [m.model for m in client.list().models]
    assert "alpha:latest" not in names and "renamed:latest" in names
    client.delete("gamma:v1")
    assert "gamma:v1" not in [m.model for m in client.list().models]  # safety rule 2: gone at once
    assert listed(server) == expected_tags(home)
    assert [m["name"] for m in listed(server)] == ["renamed:latest", "beta:latest"]

    hangar_json("trash", "restore", "alpha:latest", home=home, host=server.host)
    assert listed(server) == expected_tags(home)  # a restore lists it again, with its old time
    assert "alpha:latest" in [m["name"] for m in listed(server)]


def test_tags_without_an_entry_list_the_same_and_get_one_at_the_next_start(
    home: Path, start_server: StartServer, tmp_path: Path, make_gguf: MakeGguf
) -> None:
    """Tags stored before migration 0014 (or changed behind the store's back) have no current entry:
    the listing renders them from the catalog, and the next start writes their entries."""
    server = start_server(home)
    client = ollama.Client(host=server.url)
    for i in range(3):
        create(client, tmp_path, f"m{i}", make_gguf(seed=60 + i))
    body = httpx.get(server.url + "/api/tags", timeout=60).content
    with sqlite3.connect(home / "catalog.db") as db:
        db.execute("UPDATE tags SET listing = NULL, listing_at = NULL WHERE repository_id % 2 = 1")
        db.execute("UPDATE tags SET modified_at = modified_at - 86400 WHERE name_key = 'latest'")
    assert listed(server) == expected_tags(home)  # each with its changed time, none stale
    server.stop()
    again = start_server(home)

    def rendered() -> bool:
        with sqlite3.connect(home / "catalog.db") as db:
            return db.execute("SELECT count(*) FROM tags WHERE listing_at IS NOT modified_at").fetchone() == (
                0,
            )

    assert wait_until(rendered)
    assert listed(again) == expected_tags(home)
    assert (
        httpx.get(again.url + "/api/tags", timeout=60).content != body
    )  # the times changed; the shape did not


@pytest.fixture
def accounts(home: Path, start_server: StartServer, tmp_path: Path, make_gguf: MakeGguf) -> dict[str, Any]:
    """alice with a private model and a public one, bob with a private one, a server requiring tokens."""
    tokens = {u: hangar_json("user", "add", u, home=home)["token"] for u in ("alice", "bob")}
    server = start_server(home, env={"HANGAR_AUTH": "required"})
    for user, models in (("alice", ("alice/hidden", "alice/shown")), ("bob", ("bob/own",))):
        client = ollama.Client(host=server.url, headers={"Authorization": f"Bearer {tokens[user]}"})
        for i, name in enumerate(models):
            create(client, tmp_path, name, make_gguf(seed=70 + i + len(user)))
    env = {"HANGAR_TOKEN": tokens["alice"]}
    hangar_json("visibility", "alice/shown", "public", home=home, host=server.host, env=env)
    return {"server": server, "tokens": tokens}


def walk(http: httpx.Client, url: str, key: str) -> list[str]:
    """Every page of a paginated listing, following `Link: <...>; rel="next"`."""
    seen: list[str] = []
    next_url: str | None = url
    while next_url:
        r = http.get(next_url)
        assert r.status_code == 200, r.text
        page = r.json()[key]
        assert len(page) <= 2
        seen += page
        link = r.headers.get("link")
        assert link is None or link.endswith('; rel="next"')
        next_url = link.split(";")[0].strip("<>") if link else None
    return seen


def test_others_private_models_are_in_no_listing(accounts: dict[str, Any]) -> None:
    server, tokens = accounts["server"], accounts["tokens"]
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {tokens['bob']}"}, timeout=60
    ) as bob:
        names = [m["name"] for m in bob.get("/api/tags").json()["models"]]
        assert sorted(names) == ["alice/shown:latest", "bob/own:latest"]
        whole = bob.get("/v2/_catalog").json()["repositories"]
        assert whole == ["alice/shown", "bob/own"]
        assert walk(bob, "/v2/_catalog?n=1", "repositories") == whole
        assert bob.get("/v2/alice/hidden/tags/list").status_code == 404
        assert bob.get("/v2/alice/shown/tags/list").json() == {"name": "alice/shown", "tags": ["latest"]}
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {tokens['alice']}"}, timeout=60
    ) as alice:
        names = sorted(m["name"] for m in alice.get("/api/tags").json()["models"])
        assert names == ["alice/hidden:latest", "alice/shown:latest"]
        assert alice.get("/v2/_catalog").json()["repositories"] == ["alice/hidden", "alice/shown"]


def test_catalog_and_tags_lists_page_completely_without_overlap(
    server: ServerProcess, tmp_path: Path, make_gguf: MakeGguf
) -> None:
    client = ollama.Client(host=server.url)
    tags = ["v1", "V2", "a", "b-1", "b_2", "latest", "z"]
    for i, tag in enumerate(tags):
        create(client, tmp_path, f"paged:{tag}", make_gguf(seed=80 + i))
    for i in range(5):
        client.copy("paged:a", f"repo{i}")
    with httpx.Client(base_url=server.url, timeout=30) as http:
        everything = http.get("/v2/library/paged/tags/list").json()["tags"]
        assert everything == sorted(tags)  # byte order: the case each tag was first written in
        for n in (1, 2, 3, 7, 100):
            seen: list[str] = []
            url: str | None = f"/v2/library/paged/tags/list?n={n}"
            while url:
                r = http.get(url)
                page = r.json()["tags"]
                assert 0 < len(page) <= n
                seen += page
                link = r.headers.get("link")
                url = link.split(";")[0].strip("<>") if link else None
            assert seen == everything
        assert http.get("/v2/library/paged/tags/list?n=0").json()["tags"] == []
        whole = http.get("/v2/_catalog").json()["repositories"]
        assert whole == sorted(["library/paged", *(f"library/repo{i}" for i in range(5))])
        assert walk(http, "/v2/_catalog?n=2", "repositories") == whole
        last = whole[2]
        assert http.get("/v2/_catalog", params={"last": last}).json()["repositories"] == whole[3:]


def test_every_face_answers_its_first_request_right_after_start(home: Path) -> None:
    """The app is built after the socket listens: requests sent before that wait and succeed, on
    every face, and none is a 503."""
    srv = ServerProcess(home)
    srv.start(built=False)  # returns once /api/version answers, usually before the faces are imported
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as http:
            assert http.get("/api/tags").json() == {"models": []}
            assert http.get("/v2/").status_code == 200
            assert http.get("/v2/_catalog").json() == {"repositories": []}
            assert http.get("/api/hangar/models").status_code == 200
            assert http.get("/v1/models").status_code in (200, 401)
            assert http.get("/_plugins/_ml/models/nope").status_code == 404
            assert http.get("/ui/").status_code in (200, 302, 303)
            assert http.get("/api/version").json()["version"]
    finally:
        srv.stop()


def test_a_server_that_cannot_open_its_store_stops_with_exit_code_1(home: Path) -> None:
    env = hangar_env(home, env={"HANGAR_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:9/none"})
    proc = subprocess.run(
        [*CLI, "serve", "--host", f"127.0.0.1:{free_port()}", "--data-dir", str(home)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "could not start" in proc.stderr


def test_version_answers_the_same_before_and_after_the_app_is_built(server: ServerProcess) -> None:
    early = httpx.get(server.url + "/api/version", timeout=60)
    httpx.get(server.url + "/api/tags", timeout=60)  # the app is built by now
    late = httpx.get(server.url + "/api/version", timeout=60)
    assert early.content == late.content and json.loads(early.content)["modelhangar"]
    assert early.headers["content-type"] == late.headers["content-type"] == "application/json"
