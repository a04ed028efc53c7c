"""Pull and push between two real modelhangar servers with the real `ollama` client."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import pytest

from harness import (
    MakeGguf,
    ServerProcess,
    StartServer,
    blob_file,
    blob_files,
    free_port,
    hangar,
    wait_until,
)


def listing(server: ServerProcess) -> dict[str, str]:
    return {m["name"]: m["digest"] for m in httpx.get(server.url + "/api/tags").json()["models"]}


@pytest.fixture
def pair(tmp_path: Path, start_server: StartServer) -> tuple[ServerProcess, ServerProcess]:
    return start_server(tmp_path / "a"), start_server(tmp_path / "b")


def test_pull_then_push_back(
    pair: tuple[ServerProcess, ServerProcess], tmp_path: Path, make_gguf: MakeGguf
) -> None:
    a, b = pair
    gguf = make_gguf(seed=21)
    (tmp_path / "m.gguf").write_bytes(gguf)
    ca, cb = ollama.Client(host=a.url), ollama.Client(host=b.url)
    ca.create(model="tiny", files={"m.gguf": ca.create_blob(tmp_path / "m.gguf")}, system="pulled")
    remote = f"127.0.0.1:{a.port}/library/tiny:latest"

    events = list(cb.pull(remote, insecure=True, stream=True))
    assert events[0].status == "pulling manifest" and events[-1].status == "success"
    assert any((e.status or "").startswith("pulling ") and e.digest for e in events)
    assert listing(b)[remote] == listing(a)["tiny:latest"]  # same manifest bytes, same digest
    assert blob_file("sha256:" + hashlib.sha256(gguf).hexdigest()) in blob_files(b.home)
    assert "SYSTEM" in (cb.show(remote).modelfile or "")
    # A second pull finds every blob present and transfers nothing new.
    assert cb.pull(remote, insecure=True).status == "success"

    cb.copy(remote, f"127.0.0.1:{a.port}/library/copy2:latest")
    assert cb.push(f"127.0.0.1:{a.port}/library/copy2:latest", insecure=True).status == "success"
    assert listing(a)["copy2:latest"] == listing(a)["tiny:latest"]


def test_pull_errors(pair: tuple[ServerProcess, ServerProcess]) -> None:
    a, b = pair
    cb = ollama.Client(host=b.url)
    with pytest.raises(ollama.ResponseError) as err:
        cb.pull(f"127.0.0.1:{a.port}/library/nope:latest", insecure=True)
    assert err.value.status_code == 404 and "file does not exist" in err.value.error
    with pytest.raises(ollama.ResponseError) as err:
        list(cb.pull(f"127.0.0.1:{a.port}/library/nope:latest", insecure=True, stream=True))
    assert "file does not exist" in err.value.error
    bad = httpx.post(b.url + "/api/pull", json={"model": "../../etc/passwd", "stream": False})
    assert bad.status_code == 400 and bad.json() == {"error": "invalid model name"}
    with pytest.raises(ollama.ResponseError):
        cb.push(f"127.0.0.1:{a.port}/library/absent:latest", insecure=True)
    assert listing(b) == {}


def test_hangar_pull_and_push(
    pair: tuple[ServerProcess, ServerProcess], tmp_path: Path, make_gguf: MakeGguf
) -> None:
    a, b = pair
    (tmp_path / "m.gguf").write_bytes(make_gguf(seed=22))
    ca = ollama.Client(host=a.url)
    ca.create(model="cli", files={"m.gguf": ca.create_blob(tmp_path / "m.gguf")})
    remote = f"127.0.0.1:{a.port}/library/cli:latest"
    pulled = hangar("pull", "--insecure", remote, home=b.home, host=b.host)
    assert pulled.returncode == 0, pulled.stderr
    assert f"pulled {remote}" in pulled.stdout and remote in listing(b)
    pushed = hangar("push", "--insecure", remote, home=b.home, host=b.host)
    assert pushed.returncode == 0, pushed.stderr
    failed = hangar("pull", "--insecure", f"127.0.0.1:{a.port}/library/nope:latest", home=b.home, host=b.host)
    assert failed.returncode == 1 and "file does not exist" in failed.stderr


@pytest.fixture
def docker_registry(tmp_path: Path) -> Iterator[str]:
    """Debian's docker-registry (distribution 2.8) on a free loopback port."""
    if shutil.which("docker-registry") is None:
        pytest.skip("docker-registry is not installed (apt-get install docker-registry)")
    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\n"
        f"storage:\n  filesystem:\n    rootdirectory: {tmp_path / 'reg'}\n"
        f"  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n"
    )
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        assert wait_until(lambda: _up(f"http://127.0.0.1:{port}/v2/"), timeout=30)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_push_to_and_pull_from_docker_registry(
    pair: tuple[ServerProcess, ServerProcess], docker_registry: str, tmp_path: Path, make_gguf: MakeGguf
) -> None:
    a, b = pair
    (tmp_path / "m.gguf").write_bytes(make_gguf(seed=23))
    ca, cb = ollama.Client(host=a.url), ollama.Client(host=b.url)
    ca.create(model="reg", files={"m.gguf": ca.create_blob(tmp_path / "m.gguf")}, system="via registry")
    remote = f"{docker_registry}/lib/reg:latest"
    ca.copy("reg", remote)
    assert ca.push(remote, insecure=True).status == "success"
    assert cb.pull(remote, insecure=True).status == "success"
    assert listing(b)[remote] == listing(a)["reg:latest"]
    assert "via registry" in (cb.show(remote).modelfile or "")


def test_a_pull_resumes_a_partial_download_left_by_an_earlier_run(
    tmp_path: Path, start_server: StartServer, make_gguf: MakeGguf
) -> None:
    a = start_server(tmp_path / "a")
    gguf = make_gguf(seed=24, tensor_elems=500_000)  # about 2 MB
    (tmp_path / "m.gguf").write_bytes(gguf)
    ca = ollama.Client(host=a.url)
    ca.create(model="big", files={"m.gguf": ca.create_blob(tmp_path / "m.gguf")})
    digest = "sha256:" + hashlib.sha256(gguf).hexdigest()
    # As if an earlier pull into B had been cut off halfway: the partial survives B's restart.
    partial = tmp_path / "b" / "partials" / f"{digest.replace(':', '-')}.partial"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(gguf[: len(gguf) // 2])
    b = start_server(tmp_path / "b")
    remote = f"127.0.0.1:{a.port}/library/big:latest"
    cb = ollama.Client(host=b.url)
    assert cb.pull(remote, insecure=True).status == "success"
    assert not partial.exists()
    assert (
        hashlib.sha256((tmp_path / "b" / "blobs" / blob_file(digest)).read_bytes()).hexdigest() == digest[7:]
    )
    # A corrupt partial fails the digest check, is dropped, and the next pull fetches it whole.
    cb.delete(remote)
    httpx.post(b.url + "/api/hangar/gc", json={"dry_run": False})
    partial.write_bytes(b"x" * (len(gguf) // 2))
    with pytest.raises(ollama.ResponseError):
        cb.pull(remote, insecure=True)
    assert not partial.exists()
    assert cb.pull(remote, insecure=True).status == "success"
    assert listing(b)[remote] == listing(a)["big:latest"]
