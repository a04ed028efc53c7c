"""The OpenSearch face through opensearch-py 3.2.0 and opensearch-py-ml 1.3.0's MLCommonClient, against a
real server with HANGAR_AUTH=required and accounts made in the core before it starts."""

from __future__ import annotations

import hashlib
import http.server
import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest

sys.path.insert(0, str(Path(__file__).parents[2]))

from harness import ServerProcess, hangar_env

opensearchpy = pytest.importorskip("opensearchpy")
ml_commons = pytest.importorskip("opensearch_py_ml.ml_commons")
from opensearchpy import OpenSearch  # noqa: E402
from opensearchpy.exceptions import (  # noqa: E402
    AuthenticationException,
    ConflictError,
    NotFoundError,
    RequestError,
    TransportError,
)

ML = "/_plugins/_ml"
USERS = {"admin": "osadmin"}
MODEL_CONFIG = {"model_type": "bert", "embedding_dimension": 8, "framework_type": "sentence_transformers"}


class Env:
    def __init__(self, server: ServerProcess, tokens: dict[str, str], tmp: Path) -> None:
        self.server = server
        self.tokens = tokens
        self.tmp = tmp

    def os(self, user: str = "admin") -> Any:
        return OpenSearch(
            hosts=[self.server.url], http_auth=(USERS.get(user, user), self.tokens[user]), timeout=60
        )

    def ml(self, user: str = "admin") -> Any:
        return ml_commons.MLCommonClient(self.os(user))

    def http(self, user: str = "admin") -> httpx.Client:
        return httpx.Client(
            base_url=self.server.url, headers={"Authorization": f"Bearer {self.tokens[user]}"}, timeout=60
        )


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    from modelhangar.core import accounts
    from modelhangar.core.config import load_settings
    from modelhangar.core.store import Store

    tmp = tmp_path_factory.mktemp("opensearch")
    home = tmp / "home"
    store = Store(load_settings(hangar_env(home)))
    tokens = {
        "admin": accounts.add_user(store, "osadmin", admin=True).token,
        "alice": accounts.add_user(store, "alice", roles=["team"]).token,
        "bob": accounts.add_user(store, "bob", roles=["team"]).token,
        "carol": accounts.add_user(store, "carol", roles=["other"]).token,
    }
    store.close()
    server = ServerProcess(home, env={"HANGAR_AUTH": "required"}, log_dir=tmp / "logs").start()
    try:
        yield Env(server, tokens, tmp)
    finally:
        server.stop()


def model_files(tmp: Path, content: bytes, name: str) -> tuple[str, str]:
    zp = tmp / f"{name}.zip"
    zp.write_bytes(content)
    cp = tmp / f"{name}.json"
    cp.write_text(
        json.dumps(
            {"name": name, "version": "1.0.0", "model_format": "TORCH_SCRIPT", "model_config": MODEL_CONFIG}
        )
    )
    return str(zp), str(cp)


def upload(env: Env, content: bytes, name: str, user: str = "admin", group: str = "") -> str:
    """A model registered by MLCommonClient.register_model (meta, then raw chunks), not deployed."""
    zp, cp = model_files(env.tmp, content, name)
    model_id: str = env.ml(user).register_model(zp, cp, model_group_id=group, deploy_model=False)
    return model_id


def settings(env: Env, **values: Any) -> None:
    env.os().cluster.put_settings(
        body={"persistent": {f"plugins.ml_commons.{k}": v for k, v in values.items()}}
    )


# ------------------------------------------------------------------------------ connecting


def test_node_root_health_and_auth(env: Env) -> None:
    client = env.os()
    info = client.info()
    assert info["version"]["distribution"] == "opensearch"
    assert info["version"]["number"].startswith("2.19.")
    assert info["cluster_name"]
    assert client.ping() is True
    assert client.cluster.health()["status"] == "green"
    # Ollama's clients and plain clients still get Ollama's text
    assert httpx.get(env.server.url + "/").text == "Ollama is running"
    assert httpx.get(env.server.url + "/", headers={"User-Agent": "ollama/0.6.3"}).text == "Ollama is running"
    # a wrong token: OpenSearch's 401
    with pytest.raises(AuthenticationException) as exc:
        OpenSearch(hosts=[env.server.url], http_auth=("osadmin", "hgr_nope")).cluster.health()
    assert exc.value.status_code == 401
    no_creds = httpx.get(env.server.url + ML + "/models/x")
    assert (
        no_creds.status_code == 401
        and no_creds.json()["error"]["root_cause"][0]["type"] == "security_exception"
    )
    # an unknown route and a wrong method: OpenSearch's envelope, never Ollama's
    with env.http() as h:
        for r in (h.get("/_cat/indices"), h.post("/_cluster/health"), h.get(ML + "/nothing/here")):
            assert 400 <= r.status_code < 500
            body = r.json()
            assert set(body) == {"error", "status"} and body["error"]["root_cause"][0]["reason"]
        bad = h.post(ML + "/model_groups/_register", content=b"{not json")
        assert bad.status_code == 400 and bad.json()["error"]["type"] == "parsing_exception"


# ------------------------------------------------------------------------------ groups


def test_model_groups(env: Env) -> None:
    client = env.os()
    mac = ml_commons.MLCommonClient(client).model_access_control
    made = mac.register_model_group(
        name="grp-one", description="d"
    )  # py-ml's defaults: private, add_all false
    assert made["status"] == "CREATED"
    gid = made["model_group_id"]
    with pytest.raises(RequestError, match="already being used by a model group"):
        mac.register_model_group(name="grp-one")
    got = client.plugins.ml.get_model_group(model_group_id=gid)
    assert got["name"] == "grp-one" and got["latest_version"] == 0 and "model_group_id" not in got
    assert mac.update_model_group({"description": "new"}, gid)["status"] == "Updated"
    assert client.plugins.ml.get_model_group(model_group_id=gid)["description"] == "new"
    assert mac.get_model_group_id_by_name("grp-one") == gid  # GET _search with a body
    found = client.plugins.ml.search_model_group(body={"query": {"term": {"name.keyword": "grp-one"}}})
    assert [h["_id"] for h in found["hits"]["hits"]] == [gid]
    with pytest.raises(NotFoundError, match="Failed to find model group"):
        client.plugins.ml.get_model_group(model_group_id="nope")
    assert mac.delete_model_group(gid)["result"] == "deleted"
    assert client.plugins.ml.delete_model_group(model_group_id=gid)["result"] == "not_found"


def test_group_with_models_is_not_deleted(env: Env) -> None:
    client = env.os()
    gid = client.plugins.ml.register_model_group(body={"name": "holder"})["model_group_id"]
    mid = upload(env, b"held content", "held", group=gid)
    with pytest.raises(
        ConflictError, match="Cannot delete the model group when it has associated model versions"
    ):
        client.plugins.ml.delete_model_group(model_group_id=gid)
    assert client.plugins.ml.delete_model(model_id=mid)["result"] == "deleted"


# ------------------------------------------------------------------------------ models


def test_chunked_upload_deploy_undeploy_delete_and_group_goes(env: Env, make_gguf: Any) -> None:
    ml = env.ml()
    client = env.os()
    content = make_gguf(seed=21)
    mid = upload(env, content, "tiny-embed")
    model = ml.get_model_info(mid)
    assert model["model_state"] == "REGISTERED" and model["model_format"] == "TORCH_SCRIPT"
    assert model["algorithm"] == "TEXT_EMBEDDING" and model["model_version"] == "1"
    assert model["model_content_hash_value"] == hashlib.sha256(content).hexdigest()
    gid = model["model_group_id"]
    assert client.plugins.ml.get_model_group(model_group_id=gid)["name"] == "tiny-embed"
    # a second version in the same group
    mid2 = upload(env, b"second version", "tiny-embed", group=gid)
    assert ml.get_model_info(mid2)["model_version"] == "2"
    task = ml.deploy_model(mid)
    assert task["state"] == "COMPLETED"
    assert ml.get_model_info(mid)["model_state"] == "DEPLOYED"
    with pytest.raises(RequestError, match="Model cannot be deleted in deploying or deployed state"):
        ml.delete_model(mid)
    ml.undeploy_model(mid)
    assert ml.get_model_info(mid)["model_state"] == "UNDEPLOYED"
    assert ml.delete_model(mid)["result"] == "deleted"  # at once after undeploy (ml-commons #2419)
    with pytest.raises(NotFoundError, match="Failed to find model"):
        ml.delete_model(mid)
    with pytest.raises(NotFoundError):
        ml.get_model_info(mid)
    deleted = ml.delete_model(mid2)
    assert {k: deleted[k] for k in ("_index", "_id", "result")} == {
        "_index": ".plugins-ml-model",
        "_id": mid2,
        "result": "deleted",
    }
    assert {"_version", "_shards", "_seq_no", "_primary_term"} <= set(deleted)
    with pytest.raises(NotFoundError):  # the last model took its group (the seed)
        client.plugins.ml.get_model_group(model_group_id=gid)


def test_chunks_bigger_than_one_and_hash_mismatch(env: Env) -> None:
    client = env.os()
    content = bytes(range(256)) * 50_000  # 12.8 MB: two chunks
    mid = upload(env, content, "two-chunks")
    assert env.ml().get_model_info(mid)["model_content_size_in_bytes"] == len(content)
    env.ml().delete_model(mid)
    meta = client.plugins.ml.register_model_meta(
        body={
            "name": "liar",
            "version": "1",
            "model_format": "TORCH_SCRIPT",
            "model_config": MODEL_CONFIG,
            "total_chunks": 1,
            "model_content_hash_value": "0" * 64,
        }
    )
    with pytest.raises(RequestError, match="hash"):
        client.plugins.ml.upload_chunk(
            model_id=meta["model_id"], chunk_number="0", body=b"not what was promised"
        )
    with pytest.raises(NotFoundError):  # nothing kept
        client.plugins.ml.get_model(model_id=meta["model_id"])
    with env.http() as h:
        blobs = h.get("/api/hangar/du").json()
    assert hashlib.sha256(b"not what was promised").hexdigest() not in json.dumps(blobs)


class _Files(http.server.BaseHTTPRequestHandler):
    content = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.content)))
        self.end_headers()
        self.wfile.write(self.content)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def files() -> Iterator[tuple[str, type[_Files]]]:
    handler = type("Handler", (_Files,), {"content": b"model served over http " * 1000})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/model.zip", handler
    httpd.shutdown()


def wait_task(client: Any, task_id: str) -> dict[str, Any]:
    for _ in range(200):
        task: dict[str, Any] = client.plugins.ml.get_task(task_id=task_id)
        assert task["state"] in ("CREATED", "COMPLETED", "FAILED")  # never RUNNING without a model id
        if task["state"] != "CREATED":
            return task
        time.sleep(0.05)
    raise AssertionError("task never ended")


def test_register_from_url(env: Env, files: tuple[str, type[_Files]]) -> None:
    url, handler = files
    client = env.os()
    body = {
        "name": "from-url",
        "version": "1.0.0",
        "model_format": "TORCH_SCRIPT",
        "model_config": MODEL_CONFIG,
        "url": url,
        "model_content_hash_value": hashlib.sha256(handler.content).hexdigest(),
    }
    answer = client.plugins.ml.register_model(body=body)
    assert answer["status"] == "CREATED" and "task_id" in answer
    task = wait_task(client, answer["task_id"])
    assert task["state"] == "COMPLETED", task
    assert client.plugins.ml.get_model(model_id=task["model_id"])["model_content_size_in_bytes"] == len(
        handler.content
    )
    assert (
        client.plugins.ml.search_tasks(body={"query": {"term": {"model_id": task["model_id"]}}})["hits"][
            "total"
        ]["value"]
        >= 1
    )
    # a wrong hash fails the task and keeps nothing
    bad = wait_task(
        client,
        client.plugins.ml.register_model(
            body={**body, "name": "url-bad", "model_content_hash_value": "1" * 64}
        )["task_id"],
    )
    assert bad["state"] == "FAILED" and "hash" in bad["error"]
    kept = client.plugins.ml.search_models(body={"query": {"term": {"name.keyword": "url-bad"}}})
    assert kept["hits"]["total"]["value"] == 0
    groups = client.plugins.ml.search_model_group(body={"query": {"term": {"name.keyword": "url-bad"}}})
    assert groups["hits"]["total"]["value"] == 0
    # a non-admin may not make the server fetch from a loopback address (the egress rules)
    refused = wait_task(
        env.os("alice"),
        env.os("alice").plugins.ml.register_model(body={**body, "name": "url-alice"})["task_id"],
    )
    assert refused["state"] == "FAILED" and "non-public" in refused["error"]
    assert client.plugins.ml.delete_task(task_id=answer["task_id"])["result"] == "deleted"
    with pytest.raises(NotFoundError, match="Failed to find task"):
        client.plugins.ml.get_task(task_id=answer["task_id"])
    client.plugins.ml.delete_model(model_id=task["model_id"])


def test_search_models(env: Env) -> None:
    ml = env.ml()
    ids = [upload(env, f"search {i}".encode(), f"search-{i}") for i in range(3)]
    hits = ml.search_model({"query": {"match_all": {}}, "size": 100})["hits"]
    assert {h["_id"] for h in hits["hits"]} >= set(ids)
    found = ml.search_model(
        {
            "query": {
                "bool": {
                    "must": [{"terms": {"_id": ids}}],
                    "should": [
                        {"term": {"name.keyword": "search-1"}},
                        {"term": {"name.keyword": "search-2"}},
                    ],
                    "minimum_should_match": 1,
                    "must_not": [{"exists": {"field": "chunk_number"}}],
                }
            },
            "sort": [{"name.keyword": {"order": "desc"}}],
            "_source": ["name", "model_state"],
            "size": 5,
        }
    )["hits"]["hits"]
    assert [h["_source"]["name"] for h in found] == ["search-2", "search-1"]
    assert set(found[0]["_source"]) == {"name", "model_state"}
    assert ml.search_model({"query": {"match": {"name": "search"}}, "size": 0})["hits"]["total"]["value"] >= 3
    page = ml.search_model({"query": {"terms": {"_id": ids}}, "from": 1, "size": 1})["hits"]
    assert page["total"]["value"] == 3 and len(page["hits"]) == 1
    with pytest.raises(RequestError, match="unknown query"):
        ml.search_model({"query": {"fuzzy_magic": {}}})
    for i in ids:
        ml.delete_model(i)


def test_remote_models_and_connectors(env: Env) -> None:
    ml = env.os().plugins.ml
    connector = ml.create_connector(
        body={
            "name": "c",
            "protocol": "http",
            "version": "1",
            "parameters": {},
            "credential": {"key": "secret"},
            "actions": [],
        }
    )["connector_id"]
    assert "credential" not in ml.get_connector(connector_id=connector)
    answer = ml.register_model(
        body={"name": "remote-one", "function_name": "remote", "connector_id": connector}
    )
    assert answer["status"] == "CREATED" and answer["model_id"]
    assert ml.get_task(task_id=answer["task_id"])["state"] == "COMPLETED"
    with pytest.raises(ConflictError, match="models are still using this connector"):
        ml.delete_connector(connector_id=connector)
    ml.delete_model(model_id=answer["model_id"])
    assert ml.delete_connector(connector_id=connector)["result"] == "deleted"
    with pytest.raises(NotFoundError):
        ml.get_connector(connector_id=connector)


# ------------------------------------------------------------------------------ dependents, safe delete


def _users(env: Env, mid: str) -> tuple[str, str, str, str]:
    client = env.os()
    client.ingest.put_pipeline(
        id="ingest-1", body={"processors": [{"text_embedding": {"model_id": mid, "field_map": {"a": "b"}}}]}
    )
    client.search_pipeline.put(
        id="search-1",
        body={"request_processors": [{"neural_query_enricher": {"default_model_id": mid}}]},
    )
    a1 = client.plugins.ml.register_agents(
        body={
            "name": "a1",
            "type": "flow",
            "tools": [{"type": "MLModelTool", "parameters": {"model_id": mid}}],
        }
    )["agent_id"]
    a2 = client.plugins.ml.register_agents(
        body={"name": "a2", "type": "conversational", "llm": {"model_id": mid, "parameters": {}}, "tools": []}
    )["agent_id"]
    return "ingest-1", "search-1", a1, a2


def test_safe_delete_names_every_kind_at_once(env: Env, make_gguf: Any) -> None:
    client = env.os()
    mid = upload(env, b"used by many", "used")
    ingest, search, a1, a2 = _users(env, mid)
    settings(env, safe_delete_model=True)
    try:
        with pytest.raises(ConflictError) as exc:
            client.plugins.ml.delete_model(model_id=mid)
        reason = exc.value.info["error"]["reason"]
        agents = ", ".join(sorted([a1, a2]))
        assert (
            "1 ingest pipelines are still using this model, please delete or update the pipelines first: [ingest-1]"  # noqa: E501
            in reason
        )
        assert (
            "1 search pipelines are still using this model, please delete or update the pipelines first: [search-1]"  # noqa: E501
            in reason
        )
        assert (
            f"2 agents are still using this model, please delete or update the agents first, all visible agents are: [{agents}]"  # noqa: E501
            in reason
        )
        assert len(exc.value.info["error"]["root_cause"]) == 3
        # transient wins over persistent
        client.cluster.put_settings(body={"transient": {"plugins.ml_commons.safe_delete_model": False}})
        got = client.cluster.get_settings()
        assert got["transient"]["plugins"]["ml_commons"]["safe_delete_model"] == "false"
        client.cluster.put_settings(body={"transient": {"plugins.ml_commons.safe_delete_model": None}})
        # a pipeline changed to another model no longer blocks; deleted users neither
        client.ingest.put_pipeline(
            id=ingest, body={"processors": [{"text_embedding": {"model_id": "other"}}]}
        )
        client.search_pipeline.delete(id=search)
        client.plugins.ml.delete_agent(agent_id=a1)
        with pytest.raises(ConflictError) as exc:
            client.plugins.ml.delete_model(model_id=mid)
        assert exc.value.info["error"]["reason"] == (
            f"1 agents are still using this model, please delete or update the agents first, all visible agents are: [{a2}]"  # noqa: E501
        )
        client.plugins.ml.delete_agent(agent_id=a2)
        assert client.plugins.ml.delete_model(model_id=mid)["result"] == "deleted"
    finally:
        settings(env, safe_delete_model=None)
        client.ingest.delete_pipeline(id=ingest)


def test_safe_delete_off_deletes_and_previews_list_users(env: Env) -> None:
    client = env.os()
    mid = upload(env, b"used but deletable", "used-off")
    ingest, search, a1, a2 = _users(env, mid)
    model = client.plugins.ml.get_model(model_id=mid)
    group = client.plugins.ml.get_model_group(model_group_id=model["model_group_id"])
    name = f"opensearch/{group['name']}:{model['model_version']}"
    with env.http() as h:
        preview = h.post("/api/hangar/delete", json={"models": [name], "dry_run": True}).json()
        warned = {(w["kind"], w["id"]) for w in preview["results"][0]["plan"]["warnings"]}
        assert warned == {
            ("ingest pipeline", ingest),
            ("search pipeline", search),
            ("agent", a1),
            ("agent", a2),
        }
        assert name in json.dumps(h.get("/api/hangar/du").json())
    assert client.plugins.ml.delete_model(model_id=mid)["result"] == "deleted"
    with env.http() as h:
        audit = h.get("/api/hangar/audit").json()
    assert any(name in json.dumps(e) for e in audit["entries"])
    client.ingest.delete_pipeline(id=ingest)
    client.search_pipeline.delete(id=search)
    for a in (a1, a2):
        client.plugins.ml.delete_agent(agent_id=a)
    with pytest.raises(NotFoundError):
        client.ingest.get_pipeline(id=ingest)


# ------------------------------------------------------------------------------ access control


def test_access_modes_with_two_users(env: Env) -> None:
    settings(env, model_access_control_enabled=True)
    try:
        alice, bob, carol = env.os("alice"), env.os("bob"), env.os("carol")
        private = alice.plugins.ml.register_model_group(
            body={"name": "alice-private", "access_mode": "private"}
        )
        shared = alice.plugins.ml.register_model_group(
            body={"name": "alice-team", "access_mode": "restricted", "backend_roles": ["team"]}
        )
        with pytest.raises(RequestError, match="backend roles only for a model group with the restricted"):
            alice.plugins.ml.register_model_group(
                body={"name": "x", "access_mode": "private", "backend_roles": ["team"]}
            )
        with pytest.raises(RequestError, match="You don't have the backend roles specified"):
            alice.plugins.ml.register_model_group(
                body={"name": "x", "access_mode": "restricted", "backend_roles": ["nope"]}
            )
        p_mid = upload(env, b"alice private", "alice-private", user="alice", group=private["model_group_id"])
        s_mid = upload(env, b"alice team", "alice-team", user="alice", group=shared["model_group_id"])
        with pytest.raises(TransportError) as exc:
            bob.plugins.ml.get_model(model_id=p_mid)
        assert exc.value.status_code == 403
        assert "User doesn't have privilege to perform this operation on this model" in str(exc.value)
        with pytest.raises(TransportError) as exc:
            bob.plugins.ml.delete_model(model_id=p_mid)
        assert exc.value.status_code == 403
        assert bob.plugins.ml.get_model(model_id=s_mid)["name"] == "alice-team"  # shares the role
        with pytest.raises(TransportError):
            carol.plugins.ml.get_model(model_id=s_mid)
        seen = {
            h["_id"]
            for h in bob.plugins.ml.search_models(body={"query": {"match_all": {}}, "size": 100})["hits"][
                "hits"
            ]
        }
        assert s_mid in seen and p_mid not in seen
        assert bob.plugins.ml.delete_model(model_id=s_mid)["result"] == "deleted"
        assert alice.plugins.ml.delete_model(model_id=p_mid)["result"] == "deleted"
        with pytest.raises(TransportError):
            bob.cluster.put_settings(body={"persistent": {"plugins.ml_commons.safe_delete_model": True}})
    finally:
        settings(env, model_access_control_enabled=None)


# ------------------------------------------------------------------------------ shared with Ollama


def test_content_shared_with_ollama_is_stored_once(env: Env, make_gguf: Any) -> None:
    data = make_gguf(seed=77)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    oc = ollama.Client(host=env.server.url, headers={"Authorization": f"Bearer {env.tokens['admin']}"})
    path = env.tmp / "shared.gguf"
    path.write_bytes(data)
    assert oc.create_blob(path) == digest
    oc.create(model="shared-ollama", files={"shared.gguf": digest})
    mid = upload(env, data, "shared-os")

    blob_files = list((env.server.home / "blobs").rglob("*" + digest.split(":")[1] + "*"))
    assert len(blob_files) == 1  # stored once
    assert env.ml().delete_model(mid)["result"] == "deleted"
    with env.http() as h:
        assert h.head(f"/api/blobs/{digest}").status_code == 200  # the Ollama model still holds it
    assert oc.show("shared-ollama").modelfile is not None
    mid = upload(env, data, "shared-os")  # and the other way round
    oc.delete("shared-ollama")
    with env.http() as h:
        assert h.head(f"/api/blobs/{digest}").status_code == 200
    assert env.ml().get_model_info(mid)["model_content_hash_value"] == digest.split(":")[1]
    env.ml().delete_model(mid)
    with env.http() as h:  # neither holds it now: gone
        assert h.head(f"/api/blobs/{digest}").status_code == 404


def test_other_faces_see_models_and_keep_ml_commons_rules(env: Env) -> None:
    ml = env.ml()
    mid = upload(env, b"seen from the hangar face", "seen-elsewhere")
    model = ml.get_model_info(mid)
    name = f"opensearch/seen-elsewhere:{model['model_version']}"
    ml.deploy_model(mid)
    with env.http() as h:
        refused = h.post("/api/hangar/delete", json={"models": [name]}).json()
        assert refused["results"][0]["status"] == "refused"
        assert "deployed" in refused["results"][0]["error"]
        ml.undeploy_model(mid)
        listed = h.post(ML + "/models/_search", json={"query": {"match_all": {}}, "size": 1000}).json()
        assert mid in {hit["_id"] for hit in listed["hits"]["hits"]}
        assert h.post("/api/hangar/delete", json={"models": [name]}).json()["ok"]
        for query in ({"match_all": {}}, {"term": {"name": "seen-elsewhere"}}):  # both search paths
            listed = h.post(ML + "/models/_search", json={"query": query, "size": 1000}).json()
            assert mid not in {hit["_id"] for hit in listed["hits"]["hits"]}
    with pytest.raises(NotFoundError, match="Failed to find model"):
        ml.get_model_info(mid)
    with pytest.raises(NotFoundError):
        ml.delete_model(mid)


BAD_BODIES = [
    ("POST", ML + "/model_groups/_register", {"name": 5}),
    ("POST", ML + "/model_groups/_register", {"name": "g", "access_mode": "secret"}),
    ("POST", ML + "/models/_register", {"name": "n"}),
    (
        "POST",
        ML + "/models/_register",
        {"name": "n", "model_format": "TORCH_SCRIPT", "url": "file:///etc/passwd"},
    ),
    (
        "POST",
        ML + "/models/_register_meta",
        {"name": "n", "model_format": "TORCH_SCRIPT", "total_chunks": "x"},
    ),
    (
        "POST",
        ML + "/models/_search",
        {"query": {"bool": {"should": [{"match_all": {}}], "minimum_should_match": "x"}}},
    ),
    ("POST", ML + "/models/_search", {"_source": {"includes": 5}}),
    ("POST", ML + "/models/_search", {"size": "ten"}),
    ("PUT", "/_ingest/pipeline/p", {"processors": 5}),
    ("POST", ML + "/agents/_register", {"name": "a", "type": "robot"}),
    ("PUT", "/_cluster/settings", {"persistent": {"plugins.ml_commons.safe_delete_model": "maybe"}}),
    ("POST", ML + "/models/_undeploy", {"model_ids": "x"}),
    ("POST", ML + "/models/nope/upload_chunk/0", None),
]


@pytest.mark.parametrize(("method", "path", "body"), BAD_BODIES)
def test_bad_input_is_a_4xx_in_opensearch_format(env: Env, method: str, path: str, body: Any) -> None:
    with env.http() as h:
        r = h.request(method, path, content=b"[]" if body is None else json.dumps(body).encode())
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["status"] == r.status_code and r.json()["error"]["root_cause"][0]["reason"]
