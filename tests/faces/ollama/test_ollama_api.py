"""The Ollama face through the real `ollama` 0.6.3 client, against a real `hangar serve` process.

One server serves the module (starting one costs seconds); each test works under its own name
prefix and its own GGUF seeds, so what one test stores never touches another's checks.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest

from harness import (
    MakeGguf,
    ServerProcess,
    assert_store_consistent,
    blob_file,
    blob_files,
    image_manifest,
    store_env,
    tree_snapshot,
)
from modelhangar.core.config import load_settings
from modelhangar.core.listing import EMPTY_DETAILS
from modelhangar.core.names import InvalidName, parse_name
from modelhangar.core.store import Store

TEMPLATE_A = "{{ .System }} USER: {{ .Prompt }} ASSISTANT:"
TEMPLATE_B = "<|user|>{{ .Prompt }}<|assistant|>"
_counter = itertools.count(1)


@dataclass
class Ctx:
    """One test's view of the module's server: names under `prefix`, seeds from `seed_base`."""

    server: ServerProcess
    client: Any
    http: httpx.Client
    tmp: Path
    prefix: str
    seed_base: int
    make_gguf: MakeGguf

    @property
    def home(self) -> Path:
        return self.server.home

    @property
    def url(self) -> str:
        return self.server.url

    def n(self, name: str) -> str:
        """This test's model name for `name`."""
        return f"{self.prefix}{name}"

    def names(self) -> set[str]:
        """Listed models of this test, prefix removed."""
        listed = (m.model for m in self.client.list().models)
        return {m.removeprefix(self.prefix) for m in listed if m and m.startswith(self.prefix)}

    def gguf(self, seed: int) -> bytes:
        return self.make_gguf(seed=self.seed_base + seed)

    def upload(self, data: bytes) -> str:
        """`client.create_blob` of `data` (through a file, as the client wants); returns `sha256:<hex>`."""
        hexdigest = hashlib.sha256(data).hexdigest()
        path = self.tmp / f"upload-{hexdigest[:16]}.bin"
        path.write_bytes(data)
        digest: str = self.client.create_blob(path)
        assert digest == f"sha256:{hexdigest}"
        return digest


@pytest.fixture(scope="module")
def module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("ollama-api")
    with ServerProcess(root / "home", log_dir=root) as srv:
        yield srv


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=60) as c:
        yield c


@pytest.fixture
def ctx(module_server: ServerProcess, http: httpx.Client, tmp_path: Path, make_gguf: MakeGguf) -> Ctx:
    n = next(_counter)
    client = ollama.Client(host=module_server.url, timeout=60)
    return Ctx(module_server, client, http, tmp_path, f"t{n}-", 1000 * n, make_gguf)


def parameter_lines(text: str) -> list[tuple[str, ...]]:
    """`show().parameters` (`key<padding>value` lines) as (key, value) pairs."""
    return [tuple(line.split(None, 1)) for line in text.splitlines() if line.strip()]


def full(name: str) -> str:
    return f"registry.ollama.ai/library/{name}:latest"


@pytest.fixture
def three(ctx: Ctx) -> dict[str, str]:
    """alpha and beta share one GGUF (distinct template/system), gamma has its own; returns digests."""
    shared = ctx.upload(ctx.gguf(1))
    own = ctx.upload(ctx.gguf(2))
    ctx.client.create(
        model=ctx.n("alpha"),
        files={"model.gguf": shared},
        template=TEMPLATE_A,
        system="You are alpha.",
        parameters={"temperature": 0.5, "stop": ["<s>", "</s>"]},
        license="MIT",
    )
    ctx.client.create(
        model=ctx.n("beta"), files={"model.gguf": shared}, template=TEMPLATE_B, system="You are beta."
    )
    ctx.client.create(model=ctx.n("gamma"), files={"model.gguf": own})
    return {"shared": shared, "own": own}


def test_list_shows_created_models(ctx: Ctx, three: dict[str, str]) -> None:
    listed = {m.model: m for m in ctx.client.list().models if m.model and m.model.startswith(ctx.prefix)}
    assert set(listed) == {ctx.n("alpha:latest"), ctx.n("beta:latest"), ctx.n("gamma:latest")}
    for m in listed.values():
        assert m.details is not None and m.details.format == "gguf" and m.details.family == "llama"
        assert m.digest is not None and len(m.digest) == 64 and int(m.digest, 16) >= 0
        assert m.size is not None and m.size > 0
        assert m.modified_at is not None
    assert len({m.digest for m in listed.values()}) == 3


def test_show_returns_what_create_was_given(ctx: Ctx, three: dict[str, str]) -> None:
    shown = ctx.client.show(ctx.n("alpha"))
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
    raw = ctx.http.post(f"{ctx.url}/api/show", json={"model": ctx.n("alpha")}).json()
    assert raw["system"] == "You are alpha."
    beta = ctx.client.show(ctx.n("beta:latest"))
    assert beta.template == TEMPLATE_B
    assert beta.modelinfo is not None and beta.modelinfo["general.architecture"] == "llama"
    gamma = ctx.client.show(full(ctx.n("gamma")))
    assert gamma.modelinfo is not None and gamma.modelinfo["general.architecture"] == "llama"
    assert not gamma.template


def test_shared_blob_stays_until_its_last_model_is_deleted(ctx: Ctx, three: dict[str, str]) -> None:
    shared, own = blob_file(three["shared"]), blob_file(three["own"])
    assert {shared, own} <= blob_files(ctx.home)
    assert ctx.client.delete(ctx.n("alpha")).status == "success"
    assert ctx.names() == {"beta:latest", "gamma:latest"}
    assert shared in blob_files(ctx.home)
    assert ctx.client.show(ctx.n("beta")).modelinfo is not None
    assert ctx.client.delete(ctx.n("beta")).status == "success"
    assert shared not in blob_files(ctx.home)
    assert own in blob_files(ctx.home)
    assert ctx.client.delete(ctx.n("gamma")).status == "success"
    assert own not in blob_files(ctx.home)
    assert ctx.names() == set()


def test_delete_by_short_and_by_full_name_is_the_same_model(ctx: Ctx, three: dict[str, str]) -> None:
    assert ctx.client.delete(full(ctx.n("alpha"))).status == "success"
    assert ctx.names() == {"beta:latest", "gamma:latest"}
    with pytest.raises(ollama.ResponseError) as e:
        ctx.client.delete(ctx.n("alpha"))
    assert e.value.status_code == 404
    assert ctx.client.delete(ctx.n("beta")).status == "success"
    with pytest.raises(ollama.ResponseError) as e:
        ctx.client.delete(full(ctx.n("beta")))
    assert e.value.status_code == 404
    assert ctx.names() == {"gamma:latest"}


def test_delete_is_case_insensitive(ctx: Ctx, three: dict[str, str]) -> None:
    assert ctx.client.delete(ctx.n("GAMMA:LATEST").upper()).status == "success"
    assert ctx.names() == {"alpha:latest", "beta:latest"}
    assert ctx.client.show(ctx.n("Alpha")).template == TEMPLATE_A


def test_copy_shares_everything_and_survives_the_source(ctx: Ctx, three: dict[str, str]) -> None:
    before = tree_snapshot(ctx.home)
    assert ctx.client.copy(ctx.n("alpha"), ctx.n("alpha-copy:v1")).status == "success"
    assert tree_snapshot(ctx.home) == before  # no bytes copied
    assert ctx.names() == {"alpha:latest", "beta:latest", "gamma:latest", "alpha-copy:v1"}
    listed = {m.model: m for m in ctx.client.list().models}
    assert listed[ctx.n("alpha-copy:v1")].digest == listed[ctx.n("alpha:latest")].digest
    assert ctx.client.delete(ctx.n("alpha")).status == "success"
    assert ctx.client.delete(ctx.n("beta")).status == "success"
    copied = ctx.client.show(ctx.n("alpha-copy:v1"))
    assert copied.template == TEMPLATE_A
    assert copied.license == "MIT"
    assert blob_file(three["shared"]) in blob_files(ctx.home)


def test_copy_over_an_existing_name_replaces_it(ctx: Ctx, three: dict[str, str]) -> None:
    assert ctx.client.copy(ctx.n("beta"), ctx.n("gamma")).status == "success"
    assert ctx.client.show(ctx.n("gamma")).template == TEMPLATE_B
    assert ctx.names() == {"alpha:latest", "beta:latest", "gamma:latest"}


def test_create_from_an_existing_model(ctx: Ctx, three: dict[str, str]) -> None:
    result = ctx.client.create(
        model=ctx.n("alpha-strict"), from_=ctx.n("alpha"), system="Answer in one word."
    )
    assert result.status == "success"
    derived = ctx.client.show(ctx.n("alpha-strict"))
    assert derived.template == TEMPLATE_A  # inherited
    assert derived.license == "MIT"
    assert derived.modelinfo is not None and derived.modelinfo["general.architecture"] == "llama"
    assert derived.modelfile is not None and "Answer in one word." in derived.modelfile
    assert derived.parameters is not None and ("temperature", "0.5") in parameter_lines(derived.parameters)
    assert ctx.client.delete(ctx.n("alpha")).status == "success"
    assert ctx.client.delete(ctx.n("beta")).status == "success"
    assert blob_file(three["shared"]) in blob_files(ctx.home)  # alpha-strict still uses it
    assert ctx.client.show(ctx.n("alpha-strict")).template == TEMPLATE_A


def test_create_again_replaces_the_model(ctx: Ctx, three: dict[str, str]) -> None:
    ctx.client.create(model=ctx.n("beta"), files={"model.gguf": three["own"]}, template="new {{ .Prompt }}")
    assert ctx.client.show(ctx.n("beta")).template == "new {{ .Prompt }}"
    assert ctx.names() == {"alpha:latest", "beta:latest", "gamma:latest"}


def test_create_with_messages_a_namespace_and_a_license_list(ctx: Ctx) -> None:
    digest = ctx.upload(ctx.gguf(5))
    ctx.client.create(
        model=f"{ctx.prefix}ns/chatty:v2",
        files={"model.gguf": digest},
        license=["MIT", "BSD"],
        messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
    )
    assert ctx.names() == {"ns/chatty:v2"}
    shown = ctx.client.show(f"{ctx.prefix}ns/chatty:v2")
    assert shown.license is not None and "MIT" in shown.license and "BSD" in shown.license


def test_streamed_create_reports_progress_and_success(ctx: Ctx) -> None:
    digest = ctx.upload(ctx.gguf(3))
    progress = ctx.client.create(model=ctx.n("streamed"), files={"model.gguf": digest}, stream=True)
    statuses = [p.status for p in progress]
    assert statuses and statuses[-1] == "success"
    assert all(statuses)
    body = {"model": ctx.n("streamed2"), "files": {"model.gguf": digest}, "system": "s", "stream": True}
    with ctx.http.stream("POST", f"{ctx.url}/api/create", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/x-ndjson")
        raw = r.read().decode()
    assert raw.endswith("\n")
    lines = raw.split("\n")[:-1]
    assert all(line.strip() for line in lines), f"blank line in the stream: {raw!r}"
    parsed = [json.loads(line) for line in lines]
    assert parsed[-1] == {"status": "success"}
    assert ctx.names() == {"streamed:latest", "streamed2:latest"}


def test_non_streamed_create_answers_one_object(ctx: Ctx) -> None:
    digest = ctx.upload(ctx.gguf(4))
    result = ctx.client.create(model=ctx.n("plain"), files={"model.gguf": digest}, stream=False)
    assert result.status == "success"
    raw = ctx.http.post(
        f"{ctx.url}/api/create", json={"model": ctx.n("plain2"), "from": ctx.n("plain"), "stream": False}
    )
    assert raw.status_code == 200
    assert raw.json() == {"status": "success"}


def test_ps_lists_no_running_models(ctx: Ctx, three: dict[str, str]) -> None:
    assert list(ctx.client.ps().models) == []


def test_blob_upload_codes_and_head(ctx: Ctx) -> None:
    data = ctx.gguf(9)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    url = f"{ctx.url}/api/blobs/{digest}"
    assert ctx.http.head(url).status_code == 404
    first = ctx.http.post(url, content=data, headers={"Content-Type": "application/json"})
    assert first.status_code in (200, 201)
    assert ctx.http.head(url).status_code == 200
    assert ctx.http.post(url, content=data).status_code in (200, 201)
    assert ctx.http.head(f"{ctx.url}/api/blobs/{blob_file(digest)}").status_code == 200
    assert blob_file(digest) in blob_files(ctx.home)


def test_chunked_upload_is_accepted(ctx: Ctx) -> None:
    data = ctx.gguf(10)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(data), 1000):
            yield data[i : i + 1000]

    r = ctx.http.post(f"{ctx.url}/api/blobs/{digest}", content=chunks())
    assert r.status_code in (200, 201), r.text
    assert blob_file(digest) in blob_files(ctx.home)
    ctx.client.create(model=ctx.n("chunked"), files={"model.gguf": digest})
    assert ctx.names() == {"chunked:latest"}


def test_version_and_root(ctx: Ctx) -> None:
    r = ctx.http.get(f"{ctx.url}/api/version")
    assert r.status_code == 200 and isinstance(r.json()["version"], str)
    assert ctx.http.get(f"{ctx.url}/").text == "Ollama is running"


def test_store_is_consistent_after_a_session(ctx: Ctx, three: dict[str, str]) -> None:
    ctx.client.copy(ctx.n("alpha"), ctx.n("delta"))
    ctx.client.delete(ctx.n("beta"))
    ctx.client.create(model=ctx.n("epsilon"), from_=ctx.n("gamma"), template="T")
    assert_store_consistent(ctx.home)
    assert ctx.names() == {"alpha:latest", "delta:latest", "gamma:latest", "epsilon:latest"}


def test_list_is_empty_on_a_new_store(client: Any) -> None:
    """(A server of its own: the module's server holds other tests' models.)"""
    assert list(client.list().models) == []
    assert list(client.ps().models) == []


def test_the_listing_is_the_catalog_as_ollama_prints_it(ctx: Ctx, three: dict[str, str]) -> None:
    """/api/tags (streamed, built by hand) says what the catalog holds, in Ollama's shapes: the same
    document as building it model by model from the records, and what the ollama client parses."""
    ctx.client.create(model=f"team/{ctx.n('namespaced')}", files={"model.gguf": three["own"]})
    config, layer = b'{"architecture":"none"}', b"not a model at all"
    for data in (config, layer):  # an image pushed through /v2: no Ollama details
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        r = ctx.http.post(
            f"{ctx.url}/v2/library/{ctx.n('plain')}/blobs/uploads/?digest={digest}", content=data
        )
        assert r.status_code == 201, r.text
    r = ctx.http.put(
        f"{ctx.url}/v2/library/{ctx.n('plain')}/manifests/v1",
        content=image_manifest(config, [layer]),
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert r.status_code == 201, r.text
    store = Store(load_settings(store_env(ctx.home)))
    try:
        records = store.list_tags()
    finally:
        store.close()
    expected = []
    for rec in records:
        try:
            name = parse_name(f"{rec.repository}:{rec.tag}").display_shortest()
        except InvalidName:
            continue
        expected.append(
            {
                "name": name,
                "model": name,
                "modified_at": datetime.fromtimestamp(rec.modified_at, tz=UTC).astimezone().isoformat(),
                "size": rec.total_size,
                "digest": rec.manifest_digest.removeprefix("sha256:"),
                "details": rec.details or EMPTY_DETAILS,
            }
        )
    got = ctx.http.get(f"{ctx.url}/api/tags")
    assert got.status_code == 200 and got.headers["content-type"] == "application/json"
    assert got.json() == {"models": expected}
    mine = {ctx.n(x) + ":latest" for x in ("alpha", "beta", "gamma")}
    mine |= {f"team/{ctx.n('namespaced')}:latest", f"{ctx.n('plain')}:v1"}
    assert mine <= {m["model"] for m in expected}
    parsed = {m.model: m for m in ctx.client.list().models}
    for m in expected:
        p = parsed[m["model"]]
        assert (p.size, p.digest, p.details.format, p.details.family) == (
            m["size"],
            m["digest"],
            m["details"]["format"],
            m["details"]["family"],
        )
        assert p.modified_at == datetime.fromisoformat(m["modified_at"])
    assert parsed[ctx.n("alpha") + ":latest"].details.format == "gguf"
