"""Error paths of the Ollama face: each a 4xx (or the runtime endpoints' 501) with `{"error": ...}`,
and none of them changes what is stored."""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest

from harness import ServerProcess, blob_files, temp_files, tree_snapshot, wait_until

INVALID_NAMES = ["../../etc/passwd", "a/b/c/d", "-x", "ns.x/m", "m@sha256:abc", "host/name:space/model:tag"]
KEPT = "kept:latest"


class Served:
    """A module-wide server holding one model; every test checks it is left as it was."""

    def __init__(self, server: ServerProcess, home: Path, gguf_digest: str) -> None:
        self.server = server
        self.home = home
        self.gguf_digest = gguf_digest
        self.client = ollama.Client(host=server.url, timeout=60)
        self.http = httpx.Client(timeout=60)

    @property
    def url(self) -> str:
        return self.server.url

    def names(self) -> set[str]:
        return {m.model for m in self.client.list().models if m.model}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    from modelhangar.testing.gguf_factory import make_gguf

    root = tmp_path_factory.mktemp("ollama-errors")
    home = root / "home"
    with ServerProcess(home, log_dir=root) as server:
        gguf = root / "model.gguf"
        gguf.write_bytes(make_gguf(None, seed=21))
        client = ollama.Client(host=server.url, timeout=60)
        digest = client.create_blob(gguf)
        client.create(model="kept", files={"model.gguf": digest}, template="{{ .Prompt }}", system="s")
        served = Served(server, home, digest)
        yield served
        served.http.close()


@pytest.fixture
def unchanged(store: Served) -> Iterator[Served]:
    """Fails the test if the blobs dir or the model list changed."""
    before, names = tree_snapshot(store.home), store.names()
    yield store
    assert tree_snapshot(store.home) == before
    assert store.names() == names == {KEPT}


def response_error(call: Any, *args: Any, **kw: Any) -> ollama.ResponseError:
    with pytest.raises(ollama.ResponseError) as e:
        call(*args, **kw)
    return e.value


def assert_json_error(r: httpx.Response, status: int | tuple[int, ...], contains: str = "") -> str:
    statuses = (status,) if isinstance(status, int) else status
    assert r.status_code in statuses, f"{r.request.method} {r.request.url}: {r.status_code} {r.text}"
    body = r.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], r.text
    assert contains in body["error"], body
    message: str = body["error"]
    return message


# ------------------------------------------------------------------------------------------- names


@pytest.mark.parametrize("name", INVALID_NAMES)
def test_invalid_name_on_delete(unchanged: Served, name: str) -> None:
    e = response_error(unchanged.client.delete, name)
    assert e.status_code == 400
    assert e.error == f'name "{name}" is invalid'


@pytest.mark.parametrize("name", INVALID_NAMES)
def test_invalid_name_on_show(unchanged: Served, name: str) -> None:
    e = response_error(unchanged.client.show, name)
    assert e.status_code == 400
    assert e.error == "invalid model name"


@pytest.mark.parametrize("name", INVALID_NAMES)
def test_invalid_name_on_create(unchanged: Served, name: str) -> None:
    e = response_error(unchanged.client.create, model=name, files={"model.gguf": unchanged.gguf_digest})
    assert e.status_code == 400
    assert e.error == "invalid model name"
    e = response_error(unchanged.client.create, model="fine", from_=name)
    assert e.status_code == 400


@pytest.mark.parametrize("name", INVALID_NAMES)
def test_invalid_name_on_copy(unchanged: Served, name: str) -> None:
    e = response_error(unchanged.client.copy, "kept", name)
    assert e.status_code == 400
    assert e.error == f'destination "{name}" is invalid'
    e = response_error(unchanged.client.copy, name, "fine")
    assert e.status_code == 400
    assert e.error == f'source "{name}" is invalid'


# ------------------------------------------------------------------------------------------- unknown models


def test_delete_of_an_unknown_model_is_404(unchanged: Served) -> None:
    e = response_error(unchanged.client.delete, "nope")
    assert e.status_code == 404
    assert e.error == "model 'nope' not found"


def test_delete_of_an_unknown_tag_of_a_known_model_is_404(unchanged: Served) -> None:
    e = response_error(unchanged.client.delete, "kept:other")
    assert e.status_code == 404
    assert e.error == "model 'kept:other' not found"


def test_show_of_an_unknown_model_is_404(unchanged: Served) -> None:
    e = response_error(unchanged.client.show, "nope")
    assert e.status_code == 404
    assert "nope" in e.error and "not found" in e.error


def test_copy_of_an_unknown_model_is_404(unchanged: Served) -> None:
    e = response_error(unchanged.client.copy, "nope", "other")
    assert e.status_code == 404
    assert "nope" in e.error and "not found" in e.error


def test_create_from_an_unknown_model_fails(unchanged: Served) -> None:
    e = response_error(unchanged.client.create, model="child", from_="nope")
    assert 400 <= e.status_code < 500
    assert "nope" in e.error


# ------------------------------------------------------------------------------------------- blobs


@pytest.mark.parametrize(
    "digest",
    [
        "sha256:0123abcd",
        "sha256:" + "A" * 64,
        "sha256:" + "g" * 64,
        "sha256:" + "a" * 65,
        "md5:" + "a" * 32,
        "sha256:..",
        "sha256-..",
    ],
)
def test_bad_digest_in_blob_path_is_400(unchanged: Served, digest: str) -> None:
    url = f"{unchanged.url}/api/blobs/{digest}"
    assert_json_error(unchanged.http.post(url, content=b"data"), 400, "invalid digest format")
    assert unchanged.http.head(url).status_code == 400


def reclaim(store: Served, digest: str) -> None:
    """Collect an unreferenced upload (GC grace is 0), leaving the store as the fixture found it."""
    r = store.http.post(f"{store.url}/api/hangar/gc", json={"dry_run": False})
    assert r.status_code == 200, r.text
    assert "sha256-" + digest.split(":")[1] not in blob_files(store.home)


def raw_request(port: int, request: bytes) -> bytes:
    """Send bytes as they are (no client-side path normalisation); return the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(request)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize(
    "path", ["/api/blobs/sha256:../../etc/passwd", "/api/blobs/sha256:..%2F..%2Fetc%2Fpasswd"]
)
def test_path_traversal_in_blob_path_is_refused(unchanged: Served, path: str) -> None:
    request = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{unchanged.server.port}\r\n"
        "Content-Length: 4\r\nConnection: close\r\n\r\nroot"
    ).encode()
    answer = raw_request(unchanged.server.port, request)
    status = int(answer.split(b" ", 2)[1])
    assert 400 <= status < 500, answer
    assert b'"error"' in answer, answer


def test_digest_mismatch_keeps_nothing(unchanged: Served) -> None:
    data, other = b"the real bytes" * 1000, b"other bytes"
    claimed = "sha256:" + hashlib.sha256(other).hexdigest()
    message = assert_json_error(
        unchanged.http.post(f"{unchanged.url}/api/blobs/{claimed}", content=data), 400, "digest mismatch"
    )
    assert hashlib.sha256(data).hexdigest() in message
    actual = "sha256:" + hashlib.sha256(data).hexdigest()
    assert unchanged.http.head(f"{unchanged.url}/api/blobs/{claimed}").status_code == 404
    assert unchanged.http.head(f"{unchanged.url}/api/blobs/{actual}").status_code == 404
    assert wait_until(lambda: not temp_files(unchanged.home)), temp_files(unchanged.home)


def test_truncated_upload_keeps_nothing(unchanged: Served) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB promised, half sent
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    head = (
        f"POST /api/blobs/{digest} HTTP/1.1\r\nHost: 127.0.0.1:{unchanged.server.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", unchanged.server.port), timeout=30) as s:
        s.sendall(head + data[: len(data) // 2])
    assert wait_until(lambda: not temp_files(unchanged.home)), temp_files(unchanged.home)
    assert unchanged.http.head(f"{unchanged.url}/api/blobs/{digest}").status_code == 404
    assert "sha256-" + digest.split(":")[1] not in blob_files(unchanged.home)
    # the server is still healthy and the same upload completes afterwards
    r = unchanged.http.post(f"{unchanged.url}/api/blobs/{digest}", content=data)
    assert r.status_code in (200, 201), r.text
    assert unchanged.http.head(f"{unchanged.url}/api/blobs/{digest}").status_code == 200
    reclaim(unchanged, digest)


def test_truncated_upload_with_a_short_body_is_refused(unchanged: Served) -> None:
    data = b"x" * 5000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    head = (
        f"POST /api/blobs/{digest} HTTP/1.1\r\nHost: 127.0.0.1:{unchanged.server.port}\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", unchanged.server.port), timeout=30) as s:
        s.sendall(head + data[:100])
        s.shutdown(socket.SHUT_WR)  # half-close: the body ends early but the answer can still come
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    if answer:
        status = int(answer.split(b" ", 2)[1])
        assert 400 <= status < 500, answer
    assert wait_until(lambda: not temp_files(unchanged.home)), temp_files(unchanged.home)
    assert unchanged.http.head(f"{unchanged.url}/api/blobs/{digest}").status_code == 404


# ------------------------------------------------------------------------------------------- bodies


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/api/show"), ("POST", "/api/create"), ("DELETE", "/api/delete"), ("POST", "/api/copy")],
)
def test_invalid_json_body_is_400(unchanged: Served, method: str, path: str) -> None:
    url = unchanged.url + path
    assert_json_error(unchanged.http.request(method, url, content=b"{not json"), 400)
    assert_json_error(unchanged.http.request(method, url, content=b'["a list"]'), 400)


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/api/show"), ("POST", "/api/create"), ("DELETE", "/api/delete"), ("POST", "/api/copy")],
)
def test_missing_body_is_400(unchanged: Served, method: str, path: str) -> None:
    assert_json_error(unchanged.http.request(method, unchanged.url + path), 400)


@pytest.mark.parametrize(("method", "path"), [("POST", "/api/show"), ("DELETE", "/api/delete")])
def test_missing_model_field_is_400(unchanged: Served, method: str, path: str) -> None:
    assert_json_error(unchanged.http.request(method, unchanged.url + path, json={}), 400, "model is required")


def test_wrong_method_is_405(unchanged: Served) -> None:
    assert_json_error(unchanged.http.get(f"{unchanged.url}/api/delete"), 405)


def test_foreign_host_header_is_refused(unchanged: Served) -> None:
    r = unchanged.http.get(f"{unchanged.url}/api/tags", headers={"Host": "evil.example.com"})
    assert r.status_code == 403


# ------------------------------------------------------------------------------------------- runtime


def assert_not_a_runtime(e: ollama.ResponseError) -> None:
    assert 400 <= e.status_code < 600
    text = e.error.lower()
    assert "stores models" in text and "not run" in text, e.error


def test_generate_is_not_served(unchanged: Served) -> None:
    assert_not_a_runtime(response_error(unchanged.client.generate, model="kept", prompt="hi"))


def test_chat_is_not_served(unchanged: Served) -> None:
    messages = [{"role": "user", "content": "hi"}]
    assert_not_a_runtime(response_error(unchanged.client.chat, model="kept", messages=messages))


def test_embed_is_not_served(unchanged: Served) -> None:
    assert_not_a_runtime(response_error(unchanged.client.embed, model="kept", input="hi"))


# ------------------------------------------------------------------------------------------- create


def test_create_with_an_unknown_file_digest_fails(unchanged: Served) -> None:
    e = response_error(unchanged.client.create, model="ghost", files={"model.gguf": "sha256:" + "0" * 64})
    assert 400 <= e.status_code < 500
    assert e.error


def test_create_with_a_malformed_file_digest_is_400(unchanged: Served) -> None:
    e = response_error(unchanged.client.create, model="ghost", files={"model.gguf": "sha256:zz"})
    assert e.status_code == 400
    assert e.error == "invalid digest format"


def test_create_with_an_absolute_file_path_is_400(unchanged: Served) -> None:
    e = response_error(unchanged.client.create, model="ghost", files={"/etc/passwd": unchanged.gguf_digest})
    assert e.status_code == 400
    assert e.error == "file path must be relative"


def test_create_with_neither_from_nor_files_is_400(unchanged: Served) -> None:
    e = response_error(unchanged.client.create, model="ghost", template="t")
    assert e.status_code == 400
    assert e.error == "neither 'from' or 'files' was specified"


def test_streamed_create_error_reaches_the_client(unchanged: Served) -> None:
    with pytest.raises(ollama.ResponseError) as e:
        list(unchanged.client.create(model="ghost", template="t", stream=True))
    assert "neither 'from' or 'files' was specified" in e.value.error


def test_create_of_a_blob_that_is_not_gguf_fails(unchanged: Served) -> None:
    data = b"definitely not a GGUF file" * 10
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    r = unchanged.http.post(f"{unchanged.url}/api/blobs/{digest}", content=data)
    assert r.status_code in (200, 201)
    e = response_error(unchanged.client.create, model="ghost", files={"model.gguf": digest})
    assert e.status_code == 400
    reclaim(unchanged, digest)
