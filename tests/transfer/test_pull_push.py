"""Pull and push with the real `ollama` client: between two modelhangar servers (over the OCI face),
through Debian's docker-registry, and from scripted registries that misbehave."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import ollama
import pytest
from registry_fakes import DOCKER_V2, FakeRegistry, Relay, digest_of, ollama_manifest

from harness import (
    AUTH_VARIANTS,
    Auth,
    MakeGguf,
    ServerProcess,
    StartServer,
    assert_store_consistent,
    blob_file,
    blob_files,
    hangar,
    image_manifest,
    model_blobs,
    read_blob,
)
from modelhangar.core.names import parse_name
from modelhangar.core.partials import push_record_path
from modelhangar.transfer.push import PUSH_CHUNK, mount_sources

CONFIG = b'{"model_format":"gguf","model_family":"llama","architecture":"amd64","os":"linux"}'


def listing(server: ServerProcess, headers: dict[str, str] | None = None) -> dict[str, str]:
    models = httpx.get(server.url + "/api/tags", headers=headers).json()["models"]
    return {m["name"]: m["digest"] for m in models}


def needs_v2(server: ServerProcess) -> None:
    """Skip unless the server has its OCI registry face (`/v2/`)."""
    if httpx.get(server.url + "/v2/").status_code == 404:
        pytest.skip("the OCI registry face (/v2/) is not served yet")


def upload_model(client: ollama.Client, tmp_path: Path, name: str, gguf: bytes, **kw: str) -> str:
    path = tmp_path / f"{name.replace('/', '_').replace(':', '_')}.gguf"
    path.write_bytes(gguf)
    client.create(model=name, files={"m.gguf": client.create_blob(path)}, **kw)
    return "sha256:" + hashlib.sha256(gguf).hexdigest()


def partials(home: Path) -> dict[str, int]:
    root = home / "partials"
    return {p.name: p.stat().st_size for p in root.iterdir()} if root.exists() else {}


@pytest.fixture
def pair(tmp_path: Path, start_server: StartServer) -> tuple[ServerProcess, ServerProcess]:
    return start_server(tmp_path / "a"), start_server(tmp_path / "b")


@pytest.fixture
def registry() -> Iterator[FakeRegistry]:
    reg = FakeRegistry()
    yield reg
    reg.close()


# ---------------------------------------------------------------- two modelhangar servers


def test_pull_then_push_back(
    pair: tuple[ServerProcess, ServerProcess], tmp_path: Path, make_gguf: MakeGguf
) -> None:
    a, b = pair
    needs_v2(a)
    ca, cb = ollama.Client(host=a.url), ollama.Client(host=b.url)
    gguf_digest = upload_model(ca, tmp_path, "tiny", make_gguf(seed=21), system="pulled")
    remote = f"127.0.0.1:{a.port}/library/tiny:latest"

    events = list(cb.pull(remote, insecure=True, stream=True))
    statuses = [e.status for e in events]
    assert statuses[0] == "pulling manifest" and statuses[-3:] == [
        "verifying sha256 digest",
        "writing manifest",
        "success",
    ]
    assert any(e.status == f"pulling {gguf_digest[7:19]}" and e.completed == e.total for e in events)
    assert listing(b)[remote] == listing(a)["tiny:latest"]  # same manifest bytes, same digest
    assert model_blobs(b.home)[remote] == model_blobs(a.home)["registry.ollama.ai/library/tiny:latest"]
    assert blob_file(gguf_digest) in blob_files(b.home)
    assert "SYSTEM" in (cb.show(remote).modelfile or "")
    assert partials(b.home) == {}
    # A second pull finds every blob present and transfers nothing new.
    assert cb.pull(remote, insecure=True).status == "success"

    copy = f"127.0.0.1:{a.port}/library/copy2:latest"
    cb.copy(remote, copy)
    pushed = [e.status for e in cb.push(copy, insecure=True, stream=True)]
    assert pushed[0] == "retrieving manifest" and pushed[-2:] == ["pushing manifest", "success"]
    assert f"pushing {gguf_digest[7:19]}" in pushed
    assert listing(a)["copy2:latest"] == listing(a)["tiny:latest"]


def test_pull_errors(pair: tuple[ServerProcess, ServerProcess]) -> None:
    a, b = pair
    needs_v2(a)
    cb = ollama.Client(host=b.url)
    with pytest.raises(ollama.ResponseError) as err:
        cb.pull(f"127.0.0.1:{a.port}/library/nope:latest", insecure=True)
    assert err.value.status_code == 404 and err.value.error == "pull model manifest: file does not exist"
    with pytest.raises(ollama.ResponseError) as err:
        list(cb.pull(f"127.0.0.1:{a.port}/library/nope:latest", insecure=True, stream=True))
    assert "file does not exist" in err.value.error
    bad = httpx.post(b.url + "/api/pull", json={"model": "../../etc/passwd", "stream": False})
    assert bad.status_code == 400 and bad.json() == {"error": "invalid model name"}
    plain = httpx.post(b.url + "/api/pull", json={"model": f"http://127.0.0.1:{a.port}/x/y", "stream": False})
    assert plain.status_code == 400 and plain.json() == {"error": "insecure protocol http"}
    with pytest.raises(ollama.ResponseError) as err:
        list(cb.push(f"127.0.0.1:{a.port}/library/absent:latest", insecure=True, stream=True))
    assert "not found" in err.value.error
    assert listing(b) == {}


def test_hangar_pull_and_push(
    pair: tuple[ServerProcess, ServerProcess], tmp_path: Path, make_gguf: MakeGguf
) -> None:
    a, b = pair
    needs_v2(a)
    upload_model(ollama.Client(host=a.url), tmp_path, "cli", make_gguf(seed=22))
    remote = f"127.0.0.1:{a.port}/library/cli:latest"
    pulled = hangar("pull", "--insecure", remote, home=b.home, host=b.host)
    assert pulled.returncode == 0, pulled.stderr
    assert f"pulled {remote}" in pulled.stdout and remote in listing(b)
    pushed = hangar("push", "--insecure", remote, home=b.home, host=b.host)
    assert pushed.returncode == 0, pushed.stderr
    failed = hangar("pull", "--insecure", f"127.0.0.1:{a.port}/library/nope:latest", home=b.home, host=b.host)
    missing = f'hangar: model "127.0.0.1:{a.port}/library/nope:latest" not found at 127.0.0.1:{a.port}'
    assert failed.returncode == 1 and missing in failed.stderr


@pytest.mark.parametrize("auth", AUTH_VARIANTS)
def test_a_pull_cut_off_by_a_crash_resumes_after_both_servers_restart(
    tmp_path: Path, start_server: StartServer, make_gguf: MakeGguf, auth: str
) -> None:
    """SIGKILL the source mid-pull; the partial survives a crash of the puller; the next pull resumes it.
    In the `tokens` run the puller needs a token on every request (the source serves anonymously)."""
    who = Auth(auth, tmp_path / "b")
    a = start_server(tmp_path / "a")
    needs_v2(a)
    digest = upload_model(
        ollama.Client(host=a.url), tmp_path, "big", make_gguf(seed=24, tensor_elems=16 << 20)
    )
    size = 64 << 20
    relay = Relay(a.url, rate=32e6)  # slow enough that the kill lands mid-blob
    try:
        # A user (not an admin) pulls from a loopback registry only where HANGAR_PULL_FROM names it.
        b_env = {**who.env, "HANGAR_PULL_FROM": relay.host} if who.on else {}
        b = start_server(tmp_path / "b", env=b_env)
        dead = b
        remote = f"{relay.host}/library/big:latest"
        with pytest.raises(ollama.ResponseError):
            for event in ollama.Client(host=b.url, headers=who.user).pull(remote, insecure=True, stream=True):
                if event.digest == digest and 0 < (event.completed or 0) < (event.total or 0):
                    a.kill()
        have = partials(b.home).get(f"{blob_file(digest)}.partial", 0)
        assert 0 < have < size + 1024
        b.kill()  # the partial survives a crash of the puller too
        a = start_server(tmp_path / "a", port=a.port)
        b = start_server(tmp_path / "b", env=b_env)
        relay.rate = None
        before = len(relay.requests)
        events = list(ollama.Client(host=b.url, headers=who.user).pull(remote, insecure=True, stream=True))
        assert events[-1].status == "success"
        first = next(e for e in events if e.digest == digest)
        assert first.completed == have  # progress starts where the partial left off
        gets = [r for r in relay.requests[before:] if r.method == "GET" and digest in r.path]
        assert [r.headers.get("range") for r in gets] == [f"bytes={have}-"]
        assert gets[0].sent == first.total - have  # only the rest crossed the wire
        assert partials(b.home) == {}
        assert listing(b, who.user)[remote] == listing(a)["big:latest"]
        assert hashlib.sha256(read_blob(b.home, digest)).hexdigest() == digest[7:]
        if who.on:
            assert httpx.get(b.url + "/api/tags").status_code == 401
            # The user's token is for the puller: it never travels to the registry pulled from.
            assert all(who.user_token not in json.dumps(dict(r.headers)) for r in relay.requests)
        who.assert_secret(logs=[dead.log(), b.log(), a.log()], home=b.home)
    finally:
        relay.close()


def test_a_partial_left_by_an_earlier_run_is_resumed_or_dropped_when_corrupt(
    tmp_path: Path, start_server: StartServer, make_gguf: MakeGguf
) -> None:
    a = start_server(tmp_path / "a")
    needs_v2(a)
    gguf = make_gguf(seed=25, tensor_elems=500_000)  # about 2 MB
    digest = upload_model(ollama.Client(host=a.url), tmp_path, "big", gguf)
    partial = tmp_path / "b" / "partials" / f"{blob_file(digest)}.partial"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(gguf[: len(gguf) // 2])
    b = start_server(tmp_path / "b")
    remote = f"127.0.0.1:{a.port}/library/big:latest"
    cb = ollama.Client(host=b.url)
    events = list(cb.pull(remote, insecure=True, stream=True))
    assert next(e for e in events if e.digest == digest).completed == len(gguf) // 2
    assert not partial.exists()
    # A corrupt partial fails the digest check, is dropped, and the next pull fetches it whole.
    cb.delete(remote)
    httpx.post(b.url + "/api/hangar/gc", json={"dry_run": False})
    partial.write_bytes(b"x" * (len(gguf) // 2))
    with pytest.raises(ollama.ResponseError) as err:
        cb.pull(remote, insecure=True)
    assert "digest mismatch, file must be downloaded again" in err.value.error
    assert not partial.exists()
    assert cb.pull(remote, insecure=True).status == "success"
    assert listing(b)[remote] == listing(a)["big:latest"]


# ---------------------------------------------------------------- Debian's docker-registry


def test_push_to_and_pull_from_docker_registry(
    pair: tuple[ServerProcess, ServerProcess], docker_registry: str, tmp_path: Path, make_gguf: MakeGguf
) -> None:
    a, b = pair
    ca, cb = ollama.Client(host=a.url), ollama.Client(host=b.url)
    gguf = make_gguf(seed=23, tensor_elems=9 << 20)  # 36 MiB: goes up in PATCH chunks
    assert len(gguf) > 2 * PUSH_CHUNK
    upload_model(ca, tmp_path, "tiny", gguf, system="via registry")
    remote = f"{docker_registry}/lib/tiny:latest"
    ca.copy("tiny", remote)
    assert ca.push(remote, insecure=True).status == "success"
    assert ca.push(remote, insecure=True).status == "success"  # every blob already there
    assert cb.pull(remote, insecure=True).status == "success"
    assert listing(b)[remote] == listing(a)["tiny:latest"]
    assert model_blobs(b.home)[remote] == model_blobs(a.home)["registry.ollama.ai/library/tiny:latest"]
    assert "via registry" in (cb.show(remote).modelfile or "")
    raw = httpx.get(
        f"http://{docker_registry}/v2/lib/tiny/manifests/latest", headers={"Accept": DOCKER_V2}
    ).content
    assert digest_of(raw)[7:] == listing(a)["tiny:latest"]  # pushed byte for byte


# ---------------------------------------------------------------- scripted registries


def test_a_manifest_naming_unsafe_digests_is_refused_before_anything_is_fetched(
    registry: FakeRegistry, tmp_path: Path, start_server: StartServer
) -> None:
    b = start_server(tmp_path / "b")
    cb = ollama.Client(host=b.url)
    outside = {p for p in tmp_path.rglob("*") if b.home not in p.parents and "logs" not in p.parts}
    good = digest_of(b"layer")
    registry.script.blobs = {good: b"layer", digest_of(CONFIG): CONFIG}
    for bad in ("sha256:../../etc/passwd", "sha256-../../../x", "sha256:" + "a" * 63, "../../../../tmp/x"):
        for where in ("config", "layers"):
            doc = {
                "schemaVersion": 2,
                "mediaType": DOCKER_V2,
                "config": {"digest": bad if where == "config" else digest_of(CONFIG), "size": len(CONFIG)},
                "layers": [{"digest": good, "size": 5}, {"digest": bad, "size": 5}][
                    : 2 if where == "layers" else 1
                ],
            }
            registry.script.manifests["library/evil:latest"] = (
                httpx.Request("GET", "/", json=doc).read(),
                DOCKER_V2,
            )
            with pytest.raises(ollama.ResponseError) as err:
                cb.pull(f"{registry.host}/library/evil:latest", insecure=True)
            assert "invalid digest" in err.value.error
    assert registry.blob_requests() == []
    assert listing(b) == {} and partials(b.home) == {} and blob_files(b.home) == set()
    assert {p for p in tmp_path.rglob("*") if b.home not in p.parents and "logs" not in p.parts} == outside


def test_a_model_larger_than_the_free_disk_is_refused_before_anything_is_fetched(
    registry: FakeRegistry, tmp_path: Path, start_server: StartServer
) -> None:
    b = start_server(tmp_path / "b")
    doc = json.loads(ollama_manifest(CONFIG, [b"weights"]))
    doc["layers"][0]["size"] = 1 << 50  # a pebibyte, as a hostile or broken manifest may claim
    registry.script.manifests["library/huge:latest"] = (json.dumps(doc).encode(), DOCKER_V2)
    registry.script.blobs = {digest_of(CONFIG): CONFIG, digest_of(b"weights"): b"weights"}
    r = httpx.post(
        b.url + "/api/pull",
        json={"model": f"{registry.host}/library/huge", "insecure": True, "stream": False},
    )
    assert r.status_code == 507 and r.json()["error"].startswith("insufficient disk space")
    assert registry.blob_requests() == []
    assert listing(b) == {} and partials(b.home) == {}


def test_registry_quirks(registry: FakeRegistry, tmp_path: Path, start_server: StartServer) -> None:
    b = start_server(tmp_path / "b")
    cb = ollama.Client(host=b.url)
    name = f"{registry.host}/library/m"

    # A manifest list: the linux/amd64 entry is pulled and stored under the tag.
    arm = registry.add_model("library/m:arm", CONFIG, [b"arm weights"])
    amd = registry.add_model("library/m:amd", CONFIG, [b"amd weights"])
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": DOCKER_V2, "digest": digest_of(m), "size": len(m), "platform": plat}
            for m, plat in (
                (arm, {"os": "linux", "architecture": "arm64"}),
                (amd, {"os": "linux", "architecture": "amd64"}),
            )
        ],
    }
    registry.script.manifests.update({f"library/m:{digest_of(m)}": (m, DOCKER_V2) for m in (arm, amd)})
    registry.script.manifests["library/m:multi"] = (
        httpx.Request("GET", "/", json=index).read(),
        "application/vnd.oci.image.index.v1+json",
    )
    assert cb.pull(f"{name}:multi", insecure=True).status == "success"
    assert listing(b)[f"{name}:multi"] == digest_of(amd)[7:]
    del index["manifests"][1]
    registry.script.manifests["library/m:armonly"] = (httpx.Request("GET", "/", json=index).read(), "")
    with pytest.raises(ollama.ResponseError) as err:
        cb.pull(f"{name}:armonly", insecure=True)
    assert "without a linux/amd64 entry" in err.value.error

    # A registry that ignores Range: the partial is thrown away and the blob fetched whole.
    weights = bytes(range(256)) * 400
    registry.add_model("library/m:norange", CONFIG, [weights])
    (b.home / "partials").mkdir(exist_ok=True)
    (b.home / "partials" / f"{blob_file(digest_of(weights))}.partial").write_bytes(weights[:1000])
    registry.script.ranges = False
    assert cb.pull(f"{name}:norange", insecure=True).status == "success"
    assert read_blob(b.home, digest_of(weights)) == weights

    # A blob longer than its manifest says is cut off and refused; nothing is kept.
    registry.add_model("library/m:long", CONFIG, [b"short and honest"])
    registry.script.oversize = b"x" * (3 << 20)
    with pytest.raises(ollama.ResponseError) as err:
        cb.pull(f"{name}:long", insecure=True)
    assert "larger than the 16 bytes" in err.value.error
    assert blob_file(digest_of(b"short and honest")) not in blob_files(b.home)
    assert all(size == 0 for size in partials(b.home).values())
    registry.script.oversize = b""

    # A manifest bigger than 4 MiB is refused unread.
    registry.script.manifests["library/m:huge"] = (b"{" + b" " * (5 << 20) + b"}", DOCKER_V2)
    with pytest.raises(ollama.ResponseError) as err:
        cb.pull(f"{name}:huge", insecure=True)
    assert "too large" in err.value.error
    assert f"{name}:huge" not in listing(b)


def test_bearer_tokens_only_from_the_registry_itself(
    registry: FakeRegistry, tmp_path: Path, start_server: StartServer
) -> None:
    b = start_server(tmp_path / "b")
    cb = ollama.Client(host=b.url)
    registry.add_model("library/m:latest", CONFIG, [b"secret weights"])
    registry.script.token = "t0k3n"
    assert cb.pull(f"{registry.host}/library/m:latest", insecure=True).status == "success"
    assert [r.path for r in registry.requests if r.path.startswith("/token")] == [
        "/token?service=fake&scope=repository%3Ax%3Apull"
    ]
    assert all(r.headers.get("authorization") == "Bearer t0k3n" for r in registry.blob_requests())

    elsewhere = FakeRegistry()
    try:
        registry.script.realm = f"http://{elsewhere.host}/token"
        cb.delete(f"{registry.host}/library/m:latest")
        with pytest.raises(ollama.ResponseError) as err:
            cb.pull(f"{registry.host}/library/m:latest", insecure=True)
        assert (
            f'realm host "{elsewhere.host}" does not match original host "{registry.host}"' in err.value.error
        )
        assert elsewhere.requests == []
    finally:
        elsewhere.close()


def test_blobs_redirected_to_another_host_are_fetched_and_resumed_without_our_token(
    registry: FakeRegistry, tmp_path: Path, start_server: StartServer
) -> None:
    """Registries on object storage answer blob GETs with a 307 elsewhere: follow it, with the Range,
    but never send the registry's token to the other host."""
    cdn = FakeRegistry()
    try:
        b = start_server(tmp_path / "b")
        weights = bytes(range(256)) * 4000
        registry.add_model("library/m:latest", CONFIG, [weights])
        registry.script.token = "t0k3n"
        registry.script.blob_store = cdn
        partial = b.home / "partials" / f"{blob_file(digest_of(weights))}.partial"
        partial.parent.mkdir(parents=True)
        partial.write_bytes(weights[:1000])
        events = list(
            ollama.Client(host=b.url).pull(f"{registry.host}/library/m:latest", insecure=True, stream=True)
        )
        assert events[-1].status == "success"
        assert read_blob(b.home, digest_of(weights)) == weights
        [resumed] = [r for r in cdn.requests if digest_of(weights) in r.path]
        assert resumed.headers.get("range") == "bytes=1000-" and resumed.sent == len(weights) - 1000
        assert all("authorization" not in r.headers for r in cdn.requests)
    finally:
        cdn.close()


def test_push_mounts_uploads_and_sends_the_manifest_byte_for_byte(
    registry: FakeRegistry, tmp_path: Path, start_server: StartServer, make_gguf: MakeGguf
) -> None:
    b = start_server(tmp_path / "b")
    cb = ollama.Client(host=b.url)
    weights = make_gguf(seed=26)
    # Pull a model whose layer says where it came from (`from`, as Ollama writes it) ...
    raw = registry.add_model("library/src:latest", CONFIG, [weights], **{"from": "library/base"})
    registry.script.token = "t0k3n"
    name = f"{registry.host}/library/src:latest"
    assert cb.pull(name, insecure=True).status == "success"
    # ... then push it to another repository on the same registry that lacks every blob.
    registry.script.blobs.clear()
    registry.script.blobs[digest_of(weights)] = weights
    registry.script.mount_only.add(digest_of(weights))  # HEAD on it says 404: only a mount finds it
    target = f"{registry.host}/other/dst:v1"
    cb.copy(name, target)
    before = len(registry.requests)
    statuses = [e.status for e in cb.push(target, insecure=True, stream=True)]
    assert statuses[-1] == "success"
    seen = [(r.method, r.path.split("?")[0]) for r in registry.requests[before:] if r.method != "HEAD"]
    posts = [r.path for r in registry.requests[before:] if r.method == "POST"]
    assert f"/v2/other/dst/blobs/uploads/?mount={digest_of(weights)}&from=library/base" in posts
    assert ("PUT", "/v2/other/dst/manifests/v1") in seen
    assert registry.script.manifests["other/dst:v1"] == (raw, DOCKER_V2)
    assert registry.script.blobs[digest_of(CONFIG)] == CONFIG  # uploaded, not mounted


def test_mount_sources_only_name_repositories_on_the_target_host() -> None:
    target = parse_name("reg.example:5000/ns/dst:v1")
    doc = ollama_manifest(CONFIG, [b"a", b"b", b"c", b"d"])
    import json

    parsed = json.loads(doc)
    froms = ["ns/base", "reg.example:5000/ns/other:v2", "elsewhere.example/ns/x", "ns/dst"]
    for layer, source in zip(parsed["layers"], froms, strict=True):
        layer["from"] = source
    got = mount_sources(json.dumps(parsed).encode(), target)
    assert got == {digest_of(b"a"): "ns/base", digest_of(b"b"): "ns/other"}


@pytest.mark.parametrize(("servers", "auth"), [(1, "anonymous"), (2, "anonymous"), (2, "tokens")])
def test_concurrent_pulls_race_deletes_and_gc(
    tmp_path: Path, start_server: StartServer, make_gguf: MakeGguf, servers: int, auth: str
) -> None:
    """Eight pulls of two models sharing a layer, while another thread deletes them and runs GC,
    on one server or spread over two sharing one data directory.

    Every pull ends in success or a clear error, never a 5xx from the store; the store stays
    consistent; no partial download is left behind. In the `tokens` run the pullers and the deleter
    carry a user's token (the GC an admin's) and the source serves anonymously.
    """
    who = Auth(auth, tmp_path / "b")
    a = start_server(tmp_path / "a")
    needs_v2(a)
    ca = ollama.Client(host=a.url)
    shared = make_gguf(seed=30, tensor_elems=200_000)
    upload_model(ca, tmp_path, "one", shared, system="one")
    upload_model(ca, tmp_path, "two", shared, system="two")
    env = {"HANGAR_GC_GRACE": "0", "HANGAR_REUSE_FUSE": "0", "HANGAR_TRASH_RETENTION": "0", **who.env}
    if who.on:  # a user (not an admin) pulls from a loopback registry only where HANGAR_PULL_FROM names it
        env["HANGAR_PULL_FROM"] = a.host
    bs = [start_server(tmp_path / "b", env=env) for _ in range(servers)]
    b = bs[0]
    remotes = [f"127.0.0.1:{a.port}/library/{n}:latest" for n in ("one", "two")]
    failures: list[str] = []
    done = threading.Event()

    def pull(i: int) -> None:
        client = ollama.Client(
            host=bs[(i // 2) % servers].url, headers=who.user
        )  # each model on every server
        for _ in range(3):
            try:
                client.pull(remotes[i % 2], insecure=True)
            except ollama.ResponseError as e:  # only a race with the deleter may explain a failure
                if "blob" not in e.error and "not found" not in e.error:
                    failures.append(f"pull: {e.status_code} {e.error}")
            except Exception as e:
                failures.append(f"pull: {type(e).__name__}: {e}")

    def churn() -> None:
        client = ollama.Client(host=b.url, headers=who.user)
        while not done.is_set():
            for remote in remotes:
                try:
                    client.delete(remote)
                except ollama.ResponseError as e:
                    if e.status_code != 404:
                        failures.append(f"delete: {e.status_code} {e.error}")
            r = httpx.post(b.url + "/api/hangar/gc", json={"dry_run": False}, timeout=60, headers=who.admin)
            if r.status_code != 200:
                failures.append(f"gc: {r.status_code} {r.text[:200]}")

    pullers = [threading.Thread(target=pull, args=(i,)) for i in range(8)]
    deleter = threading.Thread(target=churn)
    deleter.start()
    for t in pullers:
        t.start()
    for t in pullers:
        t.join()
    done.set()
    deleter.join()
    assert failures == []
    cb = ollama.Client(host=b.url, headers=who.user)
    for remote in remotes:  # the store is whole: a last pull of each model succeeds
        assert cb.pull(remote, insecure=True).status == "success"
    mine = listing(b, who.user)
    assert {mine[r] for r in remotes} == {listing(a)["one:latest"], listing(a)["two:latest"]}
    assert partials(b.home) == {}
    for server in bs:
        server.stop()
    assert_store_consistent(b.home)
    who.assert_secret(logs=[server.log() for server in (a, *bs)], home=b.home, bodies=failures)


def test_pull_an_oci_image_manifest(tmp_path: Path, start_server: StartServer) -> None:
    """An OCI (not Docker v2) manifest pushed to one server's /v2 is pulled into another byte for byte."""
    a = start_server(tmp_path / "a")
    needs_v2(a)
    config, layer = b'{"architecture":"amd64","os":"linux"}', b"oci layer bytes" * 1000
    for blob in (config, layer):
        r = httpx.post(
            f"{a.url}/v2/team/oci/blobs/uploads/", params={"digest": digest_of(blob)}, content=blob
        )
        assert r.status_code == 201, r.text
    manifest = image_manifest(config, [layer])
    headers = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
    assert (
        httpx.put(f"{a.url}/v2/team/oci/manifests/1.0", content=manifest, headers=headers).status_code == 201
    )
    b = start_server(tmp_path / "b")
    remote = f"127.0.0.1:{a.port}/team/oci:1.0"
    assert ollama.Client(host=b.url).pull(remote, insecure=True).status == "success"
    assert listing(b)[remote] == digest_of(manifest)[7:]
    assert read_blob(b.home, digest_of(layer)) == layer


@pytest.mark.parametrize("auth", AUTH_VARIANTS)
def test_a_push_cut_off_by_a_crash_resumes_from_the_registry_offset(
    tmp_path: Path, start_server: StartServer, make_gguf: MakeGguf, auth: str
) -> None:
    """SIGKILL the pusher mid-blob; after a restart the next push continues the registry's session.
    In the `tokens` run the pusher needs a token on every request (the registry takes anonymous pushes)."""
    who = Auth(auth, tmp_path / "b")
    a = start_server(tmp_path / "a")  # the registry
    needs_v2(a)
    # A user (not an admin) pushes to a loopback registry only where HANGAR_PULL_FROM names it.
    b_env = {**who.env, "HANGAR_PULL_FROM": a.host} if who.on else {}
    b = start_server(tmp_path / "b", env=b_env)  # the pusher
    dead = b
    client = ollama.Client(host=b.url, headers=who.user)
    gguf = make_gguf(seed=31, tensor_elems=24 << 20)  # 96 MiB: six PATCH chunks
    digest = upload_model(client, tmp_path, "big", gguf)
    target = f"127.0.0.1:{a.port}/team/big:v1"
    client.copy("big", target)
    cut = False
    for event in client.push(target, insecure=True, stream=True):
        if event.digest == digest and (event.completed or 0) >= 2 * PUSH_CHUNK:
            b.kill()
            cut = True
            break
    assert cut
    records = [p for p in (b.home / "partials").iterdir() if p.name.startswith("push-")]
    assert len(records) == 1  # the session at the registry, remembered across the crash
    assert httpx.head(f"{a.url}/v2/team/big/blobs/{digest}").status_code == 404
    b = start_server(tmp_path / "b", env=b_env)
    events = list(ollama.Client(host=b.url, headers=who.user).push(target, insecure=True, stream=True))
    assert events[-1].status == "success"
    resumed = [e.completed for e in events if e.digest == digest][1]  # after the `0` that opens each blob
    assert resumed is not None and resumed >= 2 * PUSH_CHUNK and resumed % PUSH_CHUNK == 0
    assert listing(a)["team/big:v1"] == listing(b, who.user)[target]
    assert hashlib.sha256(read_blob(a.home, digest)).hexdigest() == digest[7:]
    assert not [p for p in (b.home / "partials").iterdir() if p.name.startswith("push-")]
    assert_store_consistent(a.home)
    who.assert_secret(logs=[dead.log(), b.log(), a.log()], home=b.home)


@pytest.mark.parametrize("record", ["gone", "elsewhere", "garbage"])
def test_a_remembered_push_session_that_cannot_be_resumed_is_replaced(
    tmp_path: Path, start_server: StartServer, make_gguf: MakeGguf, record: str
) -> None:
    a, b = start_server(tmp_path / "a"), start_server(tmp_path / "b")
    needs_v2(a)
    gguf = make_gguf(seed=32, tensor_elems=5 << 20)  # 20 MiB: pushed in chunks
    digest = upload_model(ollama.Client(host=b.url), tmp_path, "mid", gguf)
    target = f"127.0.0.1:{a.port}/team/mid:v1"
    ollama.Client(host=b.url).copy("mid", target)
    home = SimpleNamespace(settings=SimpleNamespace(home=b.home))
    path = push_record_path(home, f"http://127.0.0.1:{a.port}/", "team/mid", digest)  # type: ignore[arg-type]
    path.parent.mkdir(parents=True, exist_ok=True)
    location = {
        "gone": f"{a.url}/v2/team/mid/blobs/uploads/{'0' * 32}",  # expired at the registry
        "elsewhere": f"http://127.0.0.2:{a.port}/v2/team/mid/blobs/uploads/{'0' * 32}",
        "garbage": "\x00not a url",
    }[record]
    path.write_text(json.dumps({"location": location}))
    events = list(ollama.Client(host=b.url).push(target, insecure=True, stream=True))
    assert events[-1].status == "success"
    assert [e.completed for e in events if e.digest == digest][:2] == [0, 0]  # a new session, from 0
    assert listing(a)["team/mid:v1"] == listing(b)[target]
    assert not path.exists()
