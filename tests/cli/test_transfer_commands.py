"""`hangar pull` and `hangar push` against a second server as the registry: `push SRC DEST`, and
errors that name the registry (plain HTTP without --insecure, nothing listening, no such model)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import httpx
import ollama
import pytest

from harness import ServerProcess, free_port, hangar, hangar_json
from modelhangar.testing.gguf_factory import make_gguf


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """This store (with `tiny`) and a plain-HTTP registry (another modelhangar)."""
    root = tmp_path_factory.mktemp("transfer-commands")
    with ServerProcess(root / "home") as srv, ServerProcess(root / "remote") as remote:
        gguf = root / "tiny.gguf"
        gguf.write_bytes(make_gguf(None, seed=51))
        client = ollama.Client(host=srv.url)
        client.create(model="tiny", files={"m.gguf": client.create_blob(gguf)})
        yield srv, remote


def run(srv: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return hangar(*args, home=srv.home, host=srv.host)


def error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, proc
    assert "Traceback" not in proc.stderr
    return proc.stderr.strip().splitlines()[-1]


def test_push_a_local_model_under_a_remote_name(servers: tuple[ServerProcess, ServerProcess]) -> None:
    srv, remote = servers
    dest = f"{remote.host}/team/tiny:v1"
    pushed = run(srv, "push", "tiny", dest, "--insecure")
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout.strip() == f"pushed tiny as {dest}"
    local = {m["model"] for m in hangar_json("list", home=srv.home, host=srv.host)}
    assert local == {"tiny:latest"}  # nothing renamed or copied here
    there = {m["name"]: m["digest"] for m in httpx.get(f"{remote.url}/api/tags").json()["models"]}
    here = {m["name"]: m["digest"] for m in httpx.get(f"{srv.url}/api/tags").json()["models"]}
    assert there["team/tiny:v1"] == here["tiny:latest"]  # (the registry's own name for it)

    pulled = run(srv, "pull", dest, "--insecure")
    assert pulled.returncode == 0, pulled.stderr
    assert error(run(srv, "push", "nope", dest, "--insecure")) == 'hangar: model "nope:latest" not found'


def test_plain_http_without_insecure_says_to_use_it(servers: tuple[ServerProcess, ServerProcess]) -> None:
    srv, remote = servers
    advice = f"the registry at {remote.host} speaks plain HTTP; use --insecure to allow it"
    assert error(run(srv, "pull", f"{remote.host}/team/tiny:v1")) == f"hangar: {advice}"
    assert error(run(srv, "push", "tiny", f"{remote.host}/team/tiny:v2")) == f"hangar: {advice}"
    client = ollama.Client(host=srv.url)
    with pytest.raises(ollama.ResponseError) as e:
        client.pull(f"{remote.host}/team/tiny:v1")
    assert e.value.error == advice
    client.copy("tiny", f"{remote.host}/team/tiny:v3")
    with pytest.raises(ollama.ResponseError) as e:
        for _ in client.push(f"{remote.host}/team/tiny:v3", stream=True):
            pass
    assert e.value.error == advice


def test_a_registry_that_is_down_is_named(servers: tuple[ServerProcess, ServerProcess]) -> None:
    srv, _ = servers
    port = free_port()
    down = f"hangar: cannot reach the registry at 127.0.0.1:{port}: connection refused"
    assert error(run(srv, "pull", f"127.0.0.1:{port}/team/tiny:v1", "--insecure")) == down
    assert error(run(srv, "push", "tiny", f"127.0.0.1:{port}/team/tiny:v1", "--insecure")) == down
    answer = httpx.post(
        f"{srv.url}/api/pull",
        json={"model": f"127.0.0.1:{port}/team/tiny:v1", "insecure": True, "stream": False},
    )
    assert answer.status_code == 502 and answer.json() == {"error": down.removeprefix("hangar: ")}


def test_a_model_the_registry_lacks(servers: tuple[ServerProcess, ServerProcess]) -> None:
    srv, remote = servers
    assert error(run(srv, "pull", f"{remote.host}/team/nope:v1", "--insecure")) == (
        f'hangar: model "{remote.host}/team/nope:v1" not found at {remote.host}'
    )
