"""The Ollama face through the real `ollama` 0.6.3 client, against a real `hangar serve` process."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest
from harness import ServerProcess, assert_store_consistent, blob_file, blob_files, tree_snapshot

FULL = "registry.ollama.ai/library/{}:latest"
TEMPLATE_A = "{{ .System }} USER: {{ .Prompt }} ASSISTANT:"
TEMPLATE_B = "<|user|>{{ .Prompt }}<|assistant|>"


def upload(client: Any, tmp_path: Path, data: bytes) -> str:
    """`client.create_blob` of `data` (through a file, as the client wants); returns `sha256:<hex>`."""
    path = tmp_path / f"upload-{hashlib.sha256(data).hexdigest()[:16]}.bin"
    path.write_bytes(data)
    digest: str = client.create_blob(path)
    assert digest == "sha256:" + hashlib.sha256(data).hexdigest()
    return digest


def names(client: Any) -> set[str]:
    return {m.model for m in client.list().models}


def parameter_lines(text: str) -> list[tuple[str, str]]:
    """`show().parameters` (`key<padding>value` lines) as (key, value) pairs."""
    return [tuple(line.split(None, 1)) for line in text.splitlines() if line.strip()]  # type: ignore[misc]


@pytest.fixture
def three_models(client: Any, tmp_path: Path, make_gguf: Any) -> dict[str, str]:
    """alpha and beta share one GGUF (distinct template/system), gamma has its own; returns digests."""
    shared = upload(client, tmp_path, make_gguf(seed=1))
    own = upload(client, tmp_path, make_gguf(seed=2))
    client.create(
        model="alpha",
        files={"model.gguf": shared},
        template=TEMPLATE_A,
        system="You are alpha.",
        parameters={"temperature": 0.5, "stop": ["<s>", "</s>"]},
        license="MIT",
    )
    client.create(model="beta", files={"model.gguf": shared}, template=TEMPLATE_B, system="You are beta.")
    client.create(model="gamma", files={"model.gguf": own})
    return {"shared": shared, "own": own}


def test_list_shows_created_models(client: Any, three_models: dict[str, str]) -> None:
    listed = {m.model: m for m in client.list().models}
    assert set(listed) == {"alpha:latest", "beta:latest", "gamma:latest"}
    for m in listed.values():
        assert m.details is not None and m.details.format == "gguf" and m.details.family == "llama"
        assert m.digest is not None and len(m.digest) == 64 and int(m.digest, 16) >= 0
        assert m.size is not None and m.size > 0
        assert m.modified_at is not None
    assert len({m.digest for m in listed.values()}) == 3


def test_show_returns_what_create_was_given(client: Any, three_models: dict[str, str], server: ServerProcess) -> None:
    shown = client.show("alpha")
    assert shown.details is not None
    assert shown.details.format == "gguf"
    assert shown.details.family == "llama"
    assert shown.modelinfo is not None and shown.modelinfo["general.architecture"] == "llama"
    assert shown.template == TEMPLATE_A
    assert shown.license == "MIT"
    assert shown.parameters is not None
    params = parameter_lines(shown.parameters)
    assert ("temperature", "0.5") in params
    assert ("stop", '"<s>"') in params and ("stop", '"</s>"') in params
    assert shown.modelfile is not None and "You are alpha." in shown.modelfile
    # `system` is not a field of the 0.6.3 client's ShowResponse: read it off the wire
    raw = httpx.post(f"{server.url}/api/show", json={"model": "alpha"}).json()
    assert raw["system"] == "You are alpha."
    beta = client.show("beta:latest")
    assert beta.template == TEMPLATE_B
    assert beta.modelinfo is not None and beta.modelinfo["general.architecture"] == "llama"
    gamma = client.show(FULL.format("gamma"))
    assert gamma.modelinfo is not None and gamma.modelinfo["general.architecture"] == "llama"
    assert not gamma.template


def test_shared_blob_stays_until_its_last_model_is_deleted(
    client: Any, three_models: dict[str, str], home: Path
) -> None:
    shared, own = blob_file(three_models["shared"]), blob_file(three_models["own"])
    assert {shared, own} <= blob_files(home)
    assert client.delete("alpha").status == "success"
    assert names(client) == {"beta:latest", "gamma:latest"}
    assert shared in blob_files(home)
    assert client.show("beta").modelinfo is not None
    assert client.delete("beta").status == "success"
    assert shared not in blob_files(home)
    assert own in blob_files(home)
    assert client.delete("gamma").status == "success"
    assert own not in blob_files(home)
    assert names(client) == set()


def test_delete_by_short_and_by_full_name_is_the_same_model(
    client: Any, three_models: dict[str, str]
) -> None:
    assert client.delete(FULL.format("alpha")).status == "success"
    assert "alpha:latest" not in names(client)
    with pytest.raises(ollama.ResponseError) as e:
        client.delete("alpha")
    assert e.value.status_code == 404
    assert client.delete("beta").status == "success"
    with pytest.raises(ollama.ResponseError) as e:
        client.delete(FULL.format("beta"))
    assert e.value.status_code == 404
    assert names(client) == {"gamma:latest"}


def test_delete_is_case_insensitive(client: Any, three_models: dict[str, str]) -> None:
    assert client.delete("GAMMA:LATEST").status == "success"
    assert names(client) == {"alpha:latest", "beta:latest"}
    assert client.show("Alpha").template == TEMPLATE_A


def test_copy_shares_everything_and_survives_the_source(
    client: Any, three_models: dict[str, str], home: Path
) -> None:
    before = tree_snapshot(home)
    assert client.copy("alpha", "alpha-copy:v1").status == "success"
    assert tree_snapshot(home) == before  # no bytes copied
    assert names(client) == {"alpha:latest", "beta:latest", "gamma:latest", "alpha-copy:v1"}
    listed = {m.model: m for m in client.list().models}
    assert listed["alpha-copy:v1"].digest == listed["alpha:latest"].digest
    assert client.delete("alpha").status == "success"
    copied = client.show("alpha-copy:v1")
    assert copied.template == TEMPLATE_A
    assert copied.license == "MIT"
    assert blob_file(three_models["shared"]) in blob_files(home)


def test_copy_over_an_existing_name_replaces_it(client: Any, three_models: dict[str, str]) -> None:
    assert client.copy("beta", "gamma").status == "success"
    assert client.show("gamma").template == TEMPLATE_B
    assert names(client) == {"alpha:latest", "beta:latest", "gamma:latest"}


def test_create_from_an_existing_model(client: Any, three_models: dict[str, str], home: Path) -> None:
    result = client.create(model="alpha-strict", from_="alpha", system="Answer in one word.")
    assert result.status == "success"
    derived = client.show("alpha-strict")
    assert derived.template == TEMPLATE_A  # inherited
    assert derived.license == "MIT"
    assert derived.modelinfo is not None and derived.modelinfo["general.architecture"] == "llama"
    assert derived.modelfile is not None and "Answer in one word." in derived.modelfile
    assert derived.parameters is not None and ("temperature", "0.5") in parameter_lines(derived.parameters)
    assert client.delete("alpha").status == "success"
    assert client.delete("beta").status == "success"
    assert blob_file(three_models["shared"]) in blob_files(home)  # alpha-strict still uses it
    assert client.show("alpha-strict").template == TEMPLATE_A


def test_create_again_replaces_the_model(client: Any, three_models: dict[str, str]) -> None:
    client.create(model="beta", files={"model.gguf": three_models["own"]}, template="new {{ .Prompt }}")
    assert client.show("beta").template == "new {{ .Prompt }}"
    assert names(client) == {"alpha:latest", "beta:latest", "gamma:latest"}


def test_create_with_messages_and_license_list(client: Any, tmp_path: Path, make_gguf: Any) -> None:
    digest = upload(client, tmp_path, make_gguf(seed=5))
    client.create(
        model="ns/chatty:v2",
        files={"model.gguf": digest},
        license=["MIT", "BSD"],
        messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
    )
    assert names(client) == {"ns/chatty:v2"}
    shown = client.show("ns/chatty:v2")
    assert shown.license is not None and "MIT" in shown.license and "BSD" in shown.license


def test_streamed_create_reports_progress_and_success(
    client: Any, tmp_path: Path, make_gguf: Any, server: ServerProcess
) -> None:
    digest = upload(client, tmp_path, make_gguf(seed=3))
    statuses = [p.status for p in client.create(model="streamed", files={"model.gguf": digest}, stream=True)]
    assert statuses and statuses[-1] == "success"
    assert all(statuses)
    body = {"model": "streamed2", "files": {"model.gguf": digest}, "system": "s", "stream": True}
    with httpx.stream("POST", f"{server.url}/api/create", json=body) as r:
        assert r.status_code == 200
        raw = r.read().decode()
    assert raw.endswith("\n")
    lines = raw.split("\n")[:-1]
    assert all(line.strip() for line in lines), f"blank line in the stream: {raw!r}"
    parsed = [json.loads(line) for line in lines]
    assert parsed[-1] == {"status": "success"}
    assert names(client) == {"streamed:latest", "streamed2:latest"}


def test_non_streamed_create_answers_one_object(client: Any, tmp_path: Path, make_gguf: Any) -> None:
    digest = upload(client, tmp_path, make_gguf(seed=4))
    result = client.create(model="plain", files={"model.gguf": digest}, stream=False)
    assert result.status == "success"


def test_ps_lists_no_running_models(client: Any, three_models: dict[str, str]) -> None:
    assert list(client.ps().models) == []


def test_list_is_empty_on_a_new_store(client: Any) -> None:
    assert list(client.list().models) == []


def test_blob_upload_codes_and_head(client: Any, server: ServerProcess, make_gguf: Any, home: Path) -> None:
    data = make_gguf(seed=9)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    url = f"{server.url}/api/blobs/{digest}"
    assert httpx.head(url).status_code == 404
    first = httpx.post(url, content=data, headers={"Content-Type": "application/json"})
    assert first.status_code in (200, 201)
    assert httpx.head(url).status_code == 200
    assert httpx.post(url, content=data).status_code in (200, 201)
    assert httpx.head(f"{server.url}/api/blobs/{blob_file(digest)}").status_code == 200
    assert blob_file(digest) in blob_files(home)


def test_chunked_upload_is_accepted(server: ServerProcess, make_gguf: Any, home: Path) -> None:
    data = make_gguf(seed=10)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()

    def chunks() -> Any:
        for i in range(0, len(data), 1000):
            yield data[i : i + 1000]

    r = httpx.post(f"{server.url}/api/blobs/{digest}", content=chunks())
    assert r.status_code in (200, 201), r.text
    assert blob_file(digest) in blob_files(home)


def test_version_and_root(server: ServerProcess) -> None:
    r = httpx.get(f"{server.url}/api/version")
    assert r.status_code == 200 and isinstance(r.json()["version"], str)
    assert httpx.get(f"{server.url}/").text == "Ollama is running"


def test_store_is_consistent_after_a_session(client: Any, three_models: dict[str, str], home: Path) -> None:
    client.copy("alpha", "delta")
    client.delete("beta")
    client.create(model="epsilon", from_="gamma", template="T")
    assert_store_consistent(home)
    assert names(client) == {"alpha:latest", "delta:latest", "gamma:latest", "epsilon:latest"}
