"""Hostile clients (issue 11), through a real server on loopback: cross-site requests, rebinding
Host values, SSRF through pulls, tarpit registries, huge and deeply nested bodies, connection
floods and upload-session floods. Every loop is bounded, every target is on 127.0.0.0/8."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import resource
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest

from harness import MakeGguf, ServerProcess, image_manifest, wait_until
from modelhangar.core.egress import EgressPolicy, EgressRefused
from transfer.registry_fakes import DOCKER_V2, FakeRegistry, _Base, _Handler, digest_of

SECRET = b"internal-secret-7f3a9c"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = b'{"model_format":"gguf","model_family":"llama","architecture":"amd64","os":"linux"}'
ENV = {
    "HANGAR_ORIGINS": "https://app.example.com",
    "HANGAR_HEADER_TIMEOUT": "2s",
    "HANGAR_KEEP_ALIVE": "2s",
    "HANGAR_MAX_CONNECTIONS": "300",
    "HANGAR_UPLOAD_SESSIONS_PER_CLIENT": "10",
    "HANGAR_UPLOAD_SESSIONS": "25",
    "HANGAR_UPLOAD_EXPIRY": "3s",
    "HANGAR_TRANSFERS": "2",
    "HANGAR_TRANSFER_QUEUE": "3",
    "HANGAR_TRANSFER_MIN_RATE": "1KiB/2s",
    "HANGAR_TRANSFER_DEADLINE": "2m",
}


@pytest.fixture(scope="module", autouse=True)
def _many_files() -> None:
    """Floods open hundreds of sockets from this process: allow it as many as the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("hostile")
    server = ServerProcess(root / "home", env=ENV, log_dir=root / "logs").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def model(srv: ServerProcess, tmp_path_factory: pytest.TempPathFactory, make_gguf_module: MakeGguf) -> str:
    """A model every test may read (and none may change)."""
    path = tmp_path_factory.mktemp("gguf") / "victim.gguf"
    path.write_bytes(make_gguf_module(seed=110))
    client = ollama.Client(host=srv.url)
    client.create(model="victim", files={"m.gguf": client.create_blob(path)}, system="be brief")
    return "victim:latest"


@pytest.fixture(scope="module")
def make_gguf_module() -> MakeGguf:
    from modelhangar.testing.gguf_factory import make_gguf as factory

    def make(seed: int = 0, **kw: Any) -> bytes:
        data: bytes = factory(None, seed=seed, **kw)
        return data

    return make


def names(server: ServerProcess) -> set[str]:
    return {m["name"] for m in httpx.get(server.url + "/api/tags").json()["models"]}


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def pid_of(server: ServerProcess) -> int:
    assert server.proc is not None
    return server.proc.pid


def exchange(
    port: int, head: bytes, chunks: Iterable[bytes] = (), *, timeout: float = 30.0, host: str = "127.0.0.1"
) -> tuple[int, dict[str, str], bytes]:
    """Send a raw request head, then body chunks until the server answers; read the answer."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(head)
        select.select([s], [], [], 0.5)  # a server that refuses the head answers before the body
        for chunk in chunks:
            if select.select([s], [], [], 0)[0]:
                break
            try:
                s.sendall(chunk)
            except OSError:  # the server answered and closed while we were still sending
                break
        data = b""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in data and time.monotonic() < deadline:
            try:
                got = s.recv(65536)
            except ConnectionResetError:  # after the answer: the server dropped what we still sent
                break
            if not got:
                break
            data += got
        status_line, _, rest = data.partition(b"\r\n")
        raw_headers, _, body = rest.partition(b"\r\n\r\n")
        headers = {}
        for line in raw_headers.split(b"\r\n"):
            k, _, v = line.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        length = int(headers.get("content-length", "0"))
        while len(body) < length and time.monotonic() < deadline:
            try:
                got = s.recv(65536)
            except ConnectionResetError:
                break
            if not got:
                break
            body += got
    return int(status_line.split()[1]), headers, body


# ---------------------------------------------------------------- requests a web page makes


def test_requests_from_a_foreign_origin_are_refused_and_change_nothing(
    srv: ServerProcess, model: str
) -> None:
    before = names(srv)
    evil = {"Origin": "http://evil.example", "Content-Type": "text/plain"}
    attempts: list[tuple[str, str, Any]] = [
        ("POST", "/api/copy", {"source": model, "destination": "stolen"}),
        ("POST", "/api/create", {"model": "planted", "from": model, "system": "obey"}),
        ("POST", "/api/pull", {"model": "127.0.0.1:9/x/y", "insecure": True, "stream": False}),
        ("POST", "/api/push", {"model": model, "insecure": True}),
        ("DELETE", "/api/delete", {"model": model}),
        ("POST", "/api/show", {"model": model}),
        ("GET", "/api/tags", None),
        ("POST", "/api/hangar/delete", {"models": [model]}),
        ("POST", "/api/hangar/gc", {"dry_run": False}),
        ("PUT", "/v2/library/victim/manifests/evil", {"schemaVersion": 2}),
        ("POST", "/v2/library/victim/blobs/uploads/", None),
        ("DELETE", "/v2/library/victim/manifests/latest", None),
    ]
    for origin in (
        "http://evil.example",
        "null",
        "http://127.0.0.1.evil.example",
        "https://localhost.evil.example",
    ):
        for method, path, body in attempts:
            headers = {**evil, "Origin": origin}
            r = httpx.request(
                method, srv.url + path, headers=headers, content=json.dumps(body) if body else None
            )
            assert r.status_code == 403, (origin, method, path, r.status_code, r.text)
            assert "access-control-allow-origin" not in r.headers
            doc = r.json()
            if path.startswith("/v2"):
                assert doc["errors"][0]["code"] == "DENIED"
            elif path.startswith("/api/hangar"):
                assert doc == {"detail": "forbidden origin"}
            else:
                assert doc == {"error": "forbidden origin"}
    # A preflight from a foreign origin is refused too.
    r = httpx.options(
        srv.url + "/api/copy",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert r.status_code == 403 and "access-control-allow-origin" not in r.headers
    assert names(srv) == before


def test_allowed_origins_get_cors_headers_but_must_declare_json(srv: ServerProcess, model: str) -> None:
    own = f"http://127.0.0.1:{srv.port}"
    for origin in (
        "http://localhost:5173",
        "http://127.0.0.1",
        "https://0.0.0.0:8443",
        "app://x",
        own,
        "https://app.example.com",
        "vscode-webview://abc",
    ):
        r = httpx.get(srv.url + "/api/tags", headers={"Origin": origin})
        assert r.status_code == 200, origin
        assert r.headers["access-control-allow-origin"] == origin and "Origin" in r.headers["vary"]
    origin = {"Origin": "http://localhost:5173"}
    # A simple request (no preflight) with a JSON body in disguise: refused, nothing copied.
    body = json.dumps({"source": model, "destination": "copied-by-page"})
    for content_type in (
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "",
    ):
        r = httpx.post(srv.url + "/api/copy", headers={**origin, "Content-Type": content_type}, content=body)
        assert r.status_code == 415 and "application/json" in r.json()["error"], content_type
    r = httpx.put(
        srv.url + "/v2/library/victim/manifests/page",
        headers={**origin, "Content-Type": "text/plain"},
        content=image_manifest(b"{}", []),
    )
    assert r.status_code == 415 and r.json()["errors"][0]["code"] == "UNSUPPORTED"
    r = httpx.post(srv.url + "/api/hangar/gc", headers={**origin, "Content-Type": "text/plain"}, content="{}")
    assert r.status_code == 415 and "detail" in r.json()
    assert "copied-by-page:latest" not in names(srv)
    # Its preflight is answered, and the declared JSON request goes through.
    r = httpx.options(
        srv.url + "/api/copy",
        headers={
            **origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert r.status_code == 204 and r.headers["access-control-allow-origin"] == origin["Origin"]
    assert "POST" in r.headers["access-control-allow-methods"]
    assert r.headers["access-control-allow-headers"] == "content-type"
    r = httpx.post(
        srv.url + "/api/copy", headers={**origin, "Content-Type": "application/json"}, content=body
    )
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == origin["Origin"]
    assert "copied-by-page:latest" in names(srv)
    # Without an Origin (curl, scripts) a body need not be declared JSON, as with Ollama.
    r = httpx.post(
        srv.url + "/api/show", headers={"Content-Type": "text/plain"}, content=json.dumps({"model": model})
    )
    assert r.status_code == 200


def test_rebinding_host_values_are_refused(srv: ServerProcess) -> None:
    for host in (
        "evil.example",
        f"evil.example:{srv.port}",
        "127.0.0.1.nip.io",
        "[::1",
        "::1",
        "a:b:c",
        "x:port",
    ):
        r = httpx.get(srv.url + "/api/version", headers={"Host": host})
        assert r.status_code == 403 and r.json() == {"error": "forbidden host"}, host
    r = httpx.get(srv.url + "/v2/", headers={"Host": "evil.example"})
    assert r.status_code == 403 and r.json()["errors"][0]["code"] == "DENIED"
    r = httpx.get(srv.url + "/api/hangar/trash", headers={"Host": "evil.example"})
    assert r.status_code == 403 and r.json() == {"detail": "forbidden host"}
    for host in (
        "localhost",
        f"localhost:{srv.port}",
        "127.0.0.2",
        f"127.9.8.7:{srv.port}",
        "[::1]",
        f"[::1]:{srv.port}",
        "10.1.2.3",
        "printer.local",
        "",
    ):
        r = httpx.get(srv.url + "/api/version", headers={"Host": host})
        assert r.status_code == 200, host
    # Several Host headers: which one would a proxy have checked? Refused.
    status, _, body = exchange(
        srv.port,
        f"GET /api/version HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\nHost: evil.example\r\n\r\n".encode(),
    )
    assert status == 400 and json.loads(body) == {"error": "several Host headers"}


def test_a_server_bound_to_any_loopback_address_checks_host(tmp_path: Path) -> None:
    port = _free_port("127.0.0.2")

    class Bound(ServerProcess):
        @property
        def host(self) -> str:
            return f"127.0.0.2:{port}"

        @property
        def url(self) -> str:
            return f"http://127.0.0.2:{port}"

    server = Bound(tmp_path / "home", port=port, log_dir=tmp_path / "logs").start()
    try:
        assert httpx.get(server.url + "/api/version").status_code == 200
        r = httpx.get(server.url + "/api/version", headers={"Host": "evil.example"})
        assert r.status_code == 403
    finally:
        server.stop()


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def test_docs_pages_load_nothing_from_elsewhere(srv: ServerProcess) -> None:
    for page in ("/docs", "/redoc"):
        html = httpx.get(srv.url + page).text
        refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)""", html)
        assert refs, page
        assert not re.search(r"https?://", html.replace("http://www.w3.org", "")), page
        for ref in refs:
            assert ref.startswith("/"), (page, ref)
            r = httpx.get(srv.url + ref)
            assert r.status_code == 200 and len(r.content) > 1000, ref
    assert "validatorUrl" in httpx.get(srv.url + "/docs").text  # no badge fetched from swagger.io


# ---------------------------------------------------------------- requests the server makes


class Service(_Base):
    """A scripted HTTP service: `serve(handler) -> bytes sent`, every request recorded."""

    def __init__(self, serve: Callable[[_Handler], int]) -> None:
        self._serve = serve
        self.stop = threading.Event()
        super().__init__()

    def serve(self, h: _Handler) -> int:
        return self._serve(h)

    def close(self) -> None:
        self.stop.set()
        super().close()


@pytest.fixture
def internal() -> Iterator[Service]:
    """An "internal" service: whatever is asked, it answers with its secret."""
    svc = Service(lambda h: h.answer(403 if "/manifests/" in h.path else 200, SECRET + b"\n" + SECRET))
    yield svc
    svc.close()


@pytest.fixture
def registry() -> Iterator[FakeRegistry]:
    reg = FakeRegistry()
    yield reg
    reg.close()


def pull(server: ServerProcess, name: str, *, stream: bool = False, timeout: float = 120.0) -> httpx.Response:
    return httpx.post(
        server.url + "/api/pull", json={"model": name, "insecure": True, "stream": stream}, timeout=timeout
    )


def pull_error(server: ServerProcess, name: str) -> tuple[int, str, str]:
    """(status, error) of a non-streaming pull, and the error line of a streaming one."""
    r = pull(server, name)
    lines = [json.loads(x) for x in pull(server, name, stream=True).text.splitlines() if x.strip()]
    assert r.status_code >= 400, r.text
    assert "error" in lines[-1], lines
    return r.status_code, r.json()["error"], lines[-1]["error"]


def test_a_pull_never_repeats_what_a_remote_answered(srv: ServerProcess, internal: Service) -> None:
    _, message, streamed = pull_error(srv, f"{internal.host}/library/x:latest")
    for text in (message, streamed):
        assert SECRET.decode() not in text and "403 Forbidden" in text, text


def test_manifest_redirects_are_not_followed(srv: ServerProcess, internal: Service) -> None:
    def redirect(h: _Handler) -> int:
        return h.answer(307, b"", {"Location": f"http://{internal.host}/v2/secret/manifests/latest"})

    reg = Service(redirect)
    try:
        _, message, streamed = pull_error(srv, f"{reg.host}/library/x:latest")
        for text in (message, streamed):
            assert "redirect" in text and SECRET.decode() not in text, text
        assert internal.requests == []
    finally:
        reg.close()


def test_blob_redirects_reach_no_further_than_three_hops_never_echo_and_leave_nothing(
    srv: ServerProcess, registry: FakeRegistry, internal: Service
) -> None:
    weights = b"weights" * 1000
    registry.add_model("library/m:latest", CONFIG, [weights])
    cdn_host: list[str] = []

    def hop(h: _Handler) -> int:  # /hop/<hops left>/<digest>
        _, _, left, digest = h.path.split("/")
        n = int(left)
        target = f"http://{cdn_host[0]}/cdn/{digest}" if n == 1 else f"/hop/{n - 1}/{digest}"
        return h.answer(302, b"", {"Location": target})

    chain = Service(hop)
    try:
        # Blob GETs redirected to the internal service: it is reached (an admin may pull from
        # anywhere), but its answer goes nowhere but the digest check.
        registry.script.blob_store = None
        original = registry.serve

        def to_internal(h: _Handler) -> int:
            if "/blobs/" in h.path and h.command == "GET":
                return h.answer(307, b"", {"Location": f"http://{internal.host}/anything"})
            return original(h)

        registry.serve = to_internal  # type: ignore[method-assign]
        _, message, streamed = pull_error(srv, f"{registry.host}/library/m:latest")
        for text in (message, streamed):
            assert SECRET.decode() not in text, text
        assert not list((srv.home / "partials").glob("*.partial"))
        # Four hops are refused; three are followed (to a CDN that has the blob).
        cdn = FakeRegistry()
        try:
            cdn.script.blobs[digest_of(weights)] = weights
            cdn.script.blobs[digest_of(CONFIG)] = CONFIG
            cdn_host.append(cdn.host)

            def redirect_through(n: int) -> Callable[[_Handler], int]:
                def serve(h: _Handler) -> int:
                    if "/blobs/" in h.path and h.command == "GET":
                        digest = h.path.rsplit("/", 1)[1]  # n redirects: here, n - 2 hops, the last
                        return h.answer(307, b"", {"Location": f"http://{chain.host}/hop/{n - 1}/{digest}"})
                    return original(h)

                return serve

            registry.serve = redirect_through(4)  # type: ignore[method-assign]
            _, message, _ = pull_error(srv, f"{registry.host}/library/m:latest")
            assert "more than 3 redirects" in message
            registry.serve = redirect_through(3)  # type: ignore[method-assign]
            assert pull(srv, f"{registry.host}/library/m:latest").json() == {"status": "success"}
            assert all("authorization" not in r.headers for r in chain.requests + cdn.requests)
        finally:
            cdn.close()
        # Redirects to anything but http(s) are refused.
        for target in ("file:///etc/passwd", "ftp://127.0.0.1/x", "gopher://127.0.0.1:70/x"):
            httpx.request(
                "DELETE", srv.url + "/api/delete", json={"model": f"{registry.host}/library/m:latest"}
            )
            httpx.post(srv.url + "/api/hangar/gc", json={"dry_run": False})

            def elsewhere(h: _Handler, target: str = target) -> int:
                if "/blobs/" in h.path and h.command == "GET":
                    return h.answer(302, b"", {"Location": target})
                return original(h)

            registry.serve = elsewhere  # type: ignore[method-assign]
            _, message, _ = pull_error(srv, f"{registry.host}/library/m:latest")
            assert "not http(s)" in message, message
    finally:
        chain.close()


def test_a_failed_pull_leaves_no_partial_behind(srv: ServerProcess, registry: FakeRegistry) -> None:
    weights = b"partial weights" * 1000
    registry.add_model("library/p:latest", CONFIG, [weights])
    partials = srv.home / "partials"
    registry.script.oversize = b"one byte too many"
    _, message, _ = pull_error(srv, f"{registry.host}/library/p:latest")
    assert "larger than" in message
    assert not list(partials.glob("*.partial"))
    registry.script.oversize = b""
    del registry.script.blobs[digest_of(weights)]
    _, message, _ = pull_error(srv, f"{registry.host}/library/p:latest")
    assert "file does not exist" in message
    assert not list(partials.glob("*.partial"))


@pytest.fixture(scope="module")
def fenced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A server with HANGAR_PULL_FROM naming a registry and its CDN only (a 3s deadline, no minimum
    rate), beside an internal service it must never reach."""
    registry, cdn = FakeRegistry(), FakeRegistry()
    internal = Service(lambda h: h.answer(200, SECRET))
    stop = threading.Event()

    def trickle(h: _Handler) -> int:  # above any minimum rate, forever
        h.send_response(200)
        h.send_header("Content-Type", DOCKER_V2)
        h.send_header("Content-Length", str(3 << 20))
        h.end_headers()
        for _ in range(600):
            if stop.is_set():
                break
            try:
                h.wfile.write(b" " * 4096)
            except OSError:
                break
            time.sleep(0.1)
        h.close_connection = True
        return 0

    slow = Service(trickle)
    root = tmp_path_factory.mktemp("fenced")
    env = {
        "HANGAR_PULL_FROM": f"{registry.host}, {cdn.host}, {slow.host}",
        "HANGAR_TRANSFER_DEADLINE": "3s",
        "HANGAR_TRANSFER_MIN_RATE": "0",
    }
    server = ServerProcess(root / "home", env=env, log_dir=root / "logs").start()
    try:
        yield {"server": server, "registry": registry, "cdn": cdn, "internal": internal, "slow": slow}
    finally:
        stop.set()
        server.stop()
        for s in (registry, cdn, internal, slow):
            s.close()


def test_pull_from_only_reaches_listed_hosts_on_every_hop(fenced: dict[str, Any]) -> None:
    server, registry, cdn, internal = fenced["server"], fenced["registry"], fenced["cdn"], fenced["internal"]
    weights = b"fenced weights" * 100
    registry.add_model("library/m:latest", CONFIG, [weights])
    registry.script.blob_store = cdn
    assert pull(server, f"{registry.host}/library/m:latest").json() == {"status": "success"}
    # Named directly, by address or by a name that resolves to it: refused before any connection.
    for name in (f"{internal.host}/library/x", f"localhost:{internal.host.split(':')[1]}/library/x"):
        status, message, streamed = pull_error(server, name)
        assert status == 403 and "HANGAR_PULL_FROM" in message and "HANGAR_PULL_FROM" in streamed, message
    # A listed registry redirecting a blob to the internal service: refused at that hop.
    registry.script.blob_store = None
    original = registry.serve

    def to_internal(h: _Handler) -> int:
        if "/blobs/" in h.path and h.command == "GET":
            return h.answer(307, b"", {"Location": f"http://{internal.host}/blob"})
        return original(h)

    registry.add_model("library/n:latest", CONFIG, [b"other weights"])
    registry.serve = to_internal  # type: ignore[method-assign]
    status, message, _ = pull_error(server, f"{registry.host}/library/n:latest")
    assert status == 403 and "HANGAR_PULL_FROM" in message and SECRET.decode() not in message
    assert internal.requests == []
    assert not list((server.home / "partials").glob("*.partial"))


def test_a_transfer_ends_at_its_deadline(fenced: dict[str, Any]) -> None:
    server, slow = fenced["server"], fenced["slow"]
    started = time.monotonic()
    r = pull(server, f"{slow.host}/library/x:latest")
    took = time.monotonic() - started
    assert r.status_code == 504 and "HANGAR_TRANSFER_DEADLINE" in r.json()["error"], r.text
    assert took < 60, took  # 3s deadline; generous for a loaded machine


def test_the_egress_policy_for_non_admins() -> None:
    default = EgressPolicy.from_setting(())

    def refused(policy: EgressPolicy, host: str, port: int, addresses: list[str], **kw: Any) -> bool:
        try:
            policy.check(host, port, addresses, **kw)
        except EgressRefused:
            return True
        return False

    for addresses in (
        ["127.0.0.1"],
        ["10.0.0.5"],
        ["169.254.169.254"],
        ["::1"],
        ["fe80::1"],
        ["100.64.0.1"],
        ["::ffff:127.0.0.1"],
        ["0.0.0.0"],
        ["93.184.216.34", "192.168.1.1"],
        ["fd00::1"],
    ):
        assert refused(default, "registry.example", 443, addresses, is_admin=False), addresses
        assert not refused(default, "registry.example", 443, addresses, is_admin=True), addresses
        assert refused(default, "registry.example", 443, addresses, is_admin=False, pull=False), addresses
    assert not refused(default, "registry.example", 443, ["93.184.216.34"], is_admin=False)
    listed = EgressPolicy.from_setting(["*.corp.example", "127.0.0.1:5000", "10.9.0.0/16", "*"])
    assert not refused(listed, "r.corp.example", 443, ["10.1.2.3"], is_admin=False)
    assert not refused(listed, "127.0.0.1", 5000, ["127.0.0.1"], is_admin=False)
    assert refused(listed, "127.0.0.1", 5001, ["127.0.0.1"], is_admin=False)  # `*` names no private host
    assert not refused(listed, "anything.example", 443, ["10.9.3.4"], is_admin=False)
    assert not refused(listed, "public.example", 443, ["93.184.216.34"], is_admin=False)
    only = EgressPolicy.from_setting(["registry.example"])
    assert refused(only, "other.example", 443, ["93.184.216.34"], is_admin=True)  # set: admins too
    assert not refused(only, "other.example", 443, ["93.184.216.34"], is_admin=True, pull=False)


# ---------------------------------------------------------------- resource limits


def test_a_trickling_registry_fails_the_pull_and_others_are_served(srv: ServerProcess) -> None:
    stop = threading.Event()

    def trickle(h: _Handler) -> int:  # one byte every half second: far below 1 KiB per 2 s
        h.send_response(200)
        h.send_header("Content-Type", DOCKER_V2)
        h.send_header("Content-Length", "100000")
        h.end_headers()
        for _ in range(240):
            if stop.is_set():
                break
            try:
                h.wfile.write(b" ")
            except OSError:
                break
            time.sleep(0.5)
        return 0

    tarpit = Service(trickle)
    try:
        started = time.monotonic()
        r = pull(srv, f"{tarpit.host}/library/x:latest")
        took = time.monotonic() - started
        assert r.status_code == 504 and "HANGAR_TRANSFER_MIN_RATE" in r.json()["error"], r.text
        print(f"a pull from a registry trickling a byte every 0.5s failed after {took:.1f}s")
        assert took < 60, took
        lines = pull(srv, f"{tarpit.host}/library/x:latest", stream=True).text.splitlines()
        assert "HANGAR_TRANSFER_MIN_RATE" in json.loads(lines[-1])["error"]
    finally:
        stop.set()
        tarpit.close()


def test_many_slow_pulls_never_hold_the_threads_that_answer_requests(srv: ServerProcess) -> None:
    """40 pulls from a slow (but not too slow) registry: 2 run, 3 wait, the rest are told to come
    back later, and /api/tags answers throughout."""
    stop = threading.Event()

    def slow(h: _Handler) -> int:
        h.send_response(200)
        h.send_header("Content-Type", DOCKER_V2)
        h.send_header("Content-Length", str(1 << 20))
        h.end_headers()
        for _ in range(400):
            if stop.is_set():
                break
            try:
                h.wfile.write(b" " * 1024)
            except OSError:
                break
            time.sleep(0.1)
        h.close_connection = True
        return 0

    registry = Service(slow)
    pool = concurrent.futures.ThreadPoolExecutor(40)
    try:
        futures = [
            pool.submit(pull, srv, f"{registry.host}/library/m{i}:latest", stream=bool(i % 2), timeout=120)
            for i in range(40)
        ]
        assert wait_until(lambda: len(registry.requests) >= 2, timeout=30)
        latencies = []
        for _ in range(3):
            started = time.monotonic()
            assert httpx.get(srv.url + "/api/tags", timeout=60).status_code == 200
            latencies.append(time.monotonic() - started)
            time.sleep(0.5)
        print("tags latencies during 40 slow pulls:", [round(x, 2) for x in latencies])
        assert max(latencies) < 10, latencies
        refused = [f.result() for f in futures if f.done()]
        assert len(refused) >= 30
        for r in refused:
            assert r.status_code == 503 and int(r.headers["retry-after"]) > 0 and "HANGAR_TRANSFERS" in r.text
        assert len(registry.requests) <= 5
    finally:
        stop.set()
        registry.close()
        pool.shutdown(wait=True)


def test_huge_bodies_are_refused_without_being_held(srv: ServerProcess) -> None:
    pid = pid_of(srv)
    before = memory(pid)
    big = 200 << 20
    piece = b"[" + b'"xxxxxxxxxxxxxxxx",' * 55000  # ~1 MiB of a JSON array that never ends
    cases = [
        ("POST", "/api/create", "error"),
        ("POST", "/api/show", "error"),
        ("POST", "/api/hangar/delete", "detail"),
        ("PUT", "/v2/library/big/manifests/latest", "errors"),
    ]

    def send(method: str, path: str, declared: bool) -> tuple[int, dict[str, str], bytes]:
        length = f"Content-Length: {big}\r\n" if declared else "Transfer-Encoding: chunked\r\n"
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\nContent-Type: application/json\r\n"
            f"{length}\r\n"
        ).encode()
        chunk = piece if declared else b"%x\r\n%s\r\n" % (len(piece), piece)
        return exchange(srv.port, head, (chunk for _ in range(big // len(piece))), timeout=60)

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        for declared in (True, False):
            for method, path, key in cases:
                results = list(pool.map(send, [method] * 3, [path] * 3, [declared] * 3))
                for status, _, body in results:
                    assert status == 413, (method, path, declared, status, body[:200])
                    assert key in json.loads(body), body
    after = memory(pid)
    grown = (after["VmHWM"] - before["VmHWM"]) >> 10
    print(f"server memory: {before} -> {after} KiB (peak grew {grown} MiB)")
    assert grown < 100, (before, after)
    assert httpx.get(srv.url + "/api/version").status_code == 200
    assert "big:latest" not in names(srv)


def test_text_layers_are_capped(srv: ServerProcess, model: str) -> None:
    big = "x" * ((1 << 20) + 1)
    for field, value in (
        ("system", big),
        ("template", big),
        ("license", ["ok", big]),
        ("messages", [{"role": "user", "content": big}]),
    ):
        r = httpx.post(
            srv.url + "/api/create",
            json={"model": f"text-{field}", "from": model, field: value, "stream": False},
        )
        assert r.status_code == 413 and "HANGAR_MAX_TEXT" in r.json()["error"], (field, r.text)
    assert not {n for n in names(srv) if n.startswith("text-")}


DEEP = b"[" * 100_000


def test_deep_nesting_is_refused_on_every_json_route(srv: ServerProcess, registry: FakeRegistry) -> None:
    for path in ("/api/show", "/api/copy", "/api/create", "/api/pull", "/api/push", "/api/delete"):
        method = "DELETE" if path == "/api/delete" else "POST"
        for body in (DEEP, b'{"model":' * 50_000, b'{"model": "x", "messages": ' + DEEP):
            r = httpx.request(
                method, srv.url + path, content=body, headers={"Content-Type": "application/json"}
            )
            assert 400 <= r.status_code < 500 and "error" in r.json(), (path, r.status_code, r.text[:200])
    for path in ("/api/hangar/delete", "/api/hangar/gc", "/api/hangar/prune", "/api/hangar/trash/restore"):
        r = httpx.post(srv.url + path, content=DEEP, headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and "detail" in r.json(), (path, r.text[:200])
    r = httpx.put(
        srv.url + "/v2/library/deep/manifests/latest", content=DEEP, headers={"Content-Type": OCI_MANIFEST}
    )
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "MANIFEST_INVALID"
    # A config blob nested that deep, named by a manifest: stored, its details just left empty.
    config = b"[" * 5000 + b"]" * 5000
    for blob in (config, b"layer"):
        assert (
            httpx.post(
                srv.url + f"/v2/library/deep/blobs/uploads/?digest={digest_of(blob)}", content=blob
            ).status_code
            == 201
        )
    doc = json.loads(image_manifest(config, [b"layer"]))
    doc["config"]["mediaType"] = "application/vnd.docker.container.image.v1+json"
    r = httpx.put(
        srv.url + "/v2/library/deep/manifests/latest", json=doc, headers={"Content-Type": OCI_MANIFEST}
    )
    assert r.status_code == 201, r.text
    # A pulled manifest nested that deep: a 4xx, not an internal error.
    registry.script.manifests["library/deep:latest"] = (DEEP, DOCKER_V2)
    status, message, streamed = pull_error(srv, f"{registry.host}/library/deep:latest")
    assert status == 400 and "nested deeper" in message and "internal error" not in streamed


def test_lone_surrogates_are_refused(srv: ServerProcess, model: str) -> None:
    before = names(srv)
    lone = '"\\ud800"'
    for path, body in (
        ("/api/create", f'{{"model": "lone", "from": "{model}", "system": {lone}}}'),
        ("/api/create", f'{{"model": {lone}, "from": "{model}"}}'),
        ("/api/copy", f'{{"source": "{model}", "destination": {lone}}}'),
        ("/api/show", f'{{"model": {lone}}}'),
        ("/api/pull", f'{{"model": {lone}}}'),
    ):
        r = httpx.post(srv.url + path, content=body.encode(), headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and "surrogate" in r.json()["error"], (path, r.text)
    r = httpx.post(
        srv.url + "/api/hangar/trash/restore",
        content=f'{{"model": {lone}}}'.encode(),
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 400 and "detail" in r.json()
    doc = image_manifest(b"{}", []).replace(
        b'"schemaVersion"', b'"annotations": {"a": "\\udc00"}, "schemaVersion"'
    )
    r = httpx.put(
        srv.url + "/v2/library/lone/manifests/v1", content=doc, headers={"Content-Type": OCI_MANIFEST}
    )
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "MANIFEST_INVALID"
    # A surrogate pair is text, and fine.
    r = httpx.post(
        srv.url + "/api/create",
        content=f'{{"model": "pair", "from": "{model}", "system": "\\ud83d\\ude00", "stream": false}}',
    )
    assert r.status_code == 200, r.text
    assert names(srv) == before | {"pair:latest"}


def test_manifest_sizes_are_those_of_the_blobs(srv: ServerProcess) -> None:
    config, layer = b'{"a":1}', b"some layer bytes"
    for blob in (config, layer):
        assert (
            httpx.post(
                srv.url + f"/v2/library/sizes/blobs/uploads/?digest={digest_of(blob)}", content=blob
            ).status_code
            == 201
        )
    good = json.loads(image_manifest(config, [layer]))
    for size, code in (
        (1 << 63, "MANIFEST_INVALID"),
        (1 << 64, "MANIFEST_INVALID"),
        (len(layer) + 1, "SIZE_INVALID"),
        (len(layer) - 1, "SIZE_INVALID"),
        (0, "SIZE_INVALID"),
    ):
        doc = json.loads(json.dumps(good))
        doc["layers"][0]["size"] = size
        r = httpx.put(
            srv.url + "/v2/library/sizes/manifests/v1", json=doc, headers={"Content-Type": OCI_MANIFEST}
        )
        assert r.status_code == 400 and r.json()["errors"][0]["code"] == code, (size, r.text)
    listed = httpx.get(srv.url + "/v2/library/sizes/tags/list")  # its blobs were uploaded into it
    assert listed.status_code == 200 and not listed.json()["tags"]  # no manifest was stored
    r = httpx.put(
        srv.url + "/v2/library/sizes/manifests/v1", json=good, headers={"Content-Type": OCI_MANIFEST}
    )
    assert r.status_code == 201


def test_hangar_bodies_that_are_not_json_objects_are_400s(srv: ServerProcess) -> None:
    routes = (
        "/api/hangar/delete",
        "/api/hangar/prune",
        "/api/hangar/gc",
        "/api/hangar/trash/empty",
        "/api/hangar/trash/restore",
    )
    bodies = [
        ({"Content-Type": "text/plain"}, b"hello"),
        (
            {"Content-Type": "multipart/form-data; boundary=b"},
            b"--b\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--b--\r\n",
        ),
        ({"Content-Type": "application/json"}, b"\xff\xfe{"),
        ({"Content-Type": "application/json"}, b"NaN"),
        ({"Content-Type": "application/json"}, b'{"dry_run": "yes"}'),
        ({"Content-Type": "application/json"}, b'{"dry_run": 1, "models": ["x"]}'),
    ]
    for path in routes:
        for headers, body in bodies:
            r = httpx.post(srv.url + path, content=body, headers=headers)
            assert r.status_code == 400, (path, body, r.status_code, r.text)
            detail = r.json()["detail"]
            assert isinstance(detail, str) or all({"loc", "msg", "type"} <= set(d) for d in detail)


# ---------------------------------------------------------------- connections


def test_idle_connection_floods_are_bounded_in_count_and_time(srv: ServerProcess) -> None:
    pid = pid_of(srv)
    baseline = open_fds(pid)
    socks = []
    try:
        for _ in range(600):
            socks.append(socket.create_connection(("127.0.0.1", srv.port), timeout=10))
        time.sleep(1.0)
        during = open_fds(pid)
        print(f"server fds: {baseline} before, {during} with 600 idle sockets")
        assert during <= baseline + 300 + 20, (baseline, during)
        started = time.monotonic()
        open_ones = 0
        for s in socks:
            s.settimeout(max(0.1, 30 - (time.monotonic() - started)))
            try:
                s.recv(1 << 16)  # b"" (closed) or a 503 for those past the limit
            except TimeoutError:
                open_ones += 1
            except OSError:
                pass
        took = time.monotonic() - started
        print(f"600 idle sockets closed by the server within {took:.1f}s; {open_ones} still open")
        assert open_ones == 0 and took < 30
        assert wait_until(lambda: open_fds(pid) <= baseline + 5, timeout=10), open_fds(pid)
        assert httpx.get(srv.url + "/api/tags").status_code == 200
    finally:
        for s in socks:
            s.close()


def test_slow_heads_and_idle_keep_alives_are_closed(srv: ServerProcess) -> None:
    socks = [socket.create_connection(("127.0.0.1", srv.port), timeout=10) for _ in range(200)]
    started = time.monotonic()
    alive = list(socks)
    try:
        for i in range(60):  # one more header byte from each every half second: a slowloris
            if not alive:
                break
            still = []
            for s in alive:
                try:
                    s.send(b"GET /api/tags HTTP/1.1\r\n" if i == 0 else b"X")
                    still.append(s)
                except OSError:
                    pass
            alive = still
            time.sleep(0.5)
        took = time.monotonic() - started
        print(f"200 slowloris connections: {len(alive)} left after {took:.1f}s")
        assert not alive and took < 30
        # A kept-alive connection left idle is closed too.
        with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as s:
            s.sendall(f"GET /api/version HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\n\r\n".encode())
            answer = b""
            while not answer.endswith(b"}"):  # the JSON body of /api/version
                answer += s.recv(1 << 16)
            assert answer.startswith(b"HTTP/1.1 200")
            idle = time.monotonic()
            assert s.recv(1 << 16) == b"" and time.monotonic() - idle < 20
        # A head too large is refused.
        status, _, _ = exchange(
            srv.port, b"GET /api/version HTTP/1.1\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n"
        )
        assert status == 431
    finally:
        for s in socks:
            s.close()


def test_upload_sessions_are_capped_per_client_and_in_all_and_expire(srv: ServerProcess) -> None:
    def client(address: str) -> httpx.Client:
        return httpx.Client(base_url=srv.url, transport=httpx.HTTPTransport(local_address=address))

    def start(c: httpx.Client) -> httpx.Response:
        return c.post("/v2/library/sessions/blobs/uploads/")

    clients = [client(a) for a in ("127.0.0.1", "127.0.0.2", "127.0.0.3")]
    try:
        opened: list[str] = []
        for c in clients[:2]:
            answers = [start(c) for _ in range(12)]
            assert [r.status_code for r in answers] == [202] * 10 + [429] * 2
            refused = answers[-1]
            assert refused.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
            assert int(refused.headers["retry-after"]) > 0
            opened += [r.headers["location"] for r in answers if r.status_code == 202]
        answers = [start(clients[2]) for _ in range(8)]
        assert [r.status_code for r in answers] == [202] * 5 + [429] * 3  # 25 in all
        assert "HANGAR_UPLOAD_SESSIONS" in answers[-1].json()["errors"][0]["message"]
        uploads = srv.home / "uploads"
        assert len(list(uploads.iterdir())) == 25
        # Idle past HANGAR_UPLOAD_EXPIRY (3s): gone for every request, and new ones may start.
        time.sleep(3.5)
        assert httpx.get(opened[0]).status_code == 404
        assert start(clients[0]).status_code == 202
        # GC reclaims the expired ones at once.
        assert httpx.post(srv.url + "/api/hangar/gc", json={"dry_run": False}).status_code == 200
        assert len(list(uploads.iterdir())) == 1
    finally:
        for c in clients:
            c.close()


# ---------------------------------------------------------------- show, create and the data directory


def test_show_and_create_parse_a_large_gguf_once(
    srv: ServerProcess, tmp_path: Path, make_gguf_module: MakeGguf
) -> None:
    tokens = [f"token-{i:07d}" for i in range(400_000)]
    gguf = make_gguf_module(
        seed=120, extra_kv={"tokenizer.ggml.tokens": tokens, "tokenizer.ggml.scores": [0.5] * 400_000}
    )
    path = tmp_path / "vocab.gguf"
    path.write_bytes(gguf)
    client = ollama.Client(host=srv.url)
    digest = client.create_blob(path)
    pid = pid_of(srv)
    cpu = cpu_seconds(pid)
    r = httpx.post(
        srv.url + "/api/create",
        json={"model": "vocab", "files": {f"f{i}.gguf": digest for i in range(20)}, "stream": False},
        timeout=300,
    )
    assert r.status_code == 200, r.text
    create_cpu = cpu_seconds(pid) - cpu
    cpu = cpu_seconds(pid)
    with concurrent.futures.ThreadPoolExecutor(30) as pool:
        shown = list(
            pool.map(
                lambda _: httpx.post(srv.url + "/api/show", json={"model": "vocab"}, timeout=300), range(30)
            )
        )
    show_cpu = cpu_seconds(pid) - cpu
    print(
        f"server CPU: create naming one {len(gguf) >> 20} MiB blob 20 times {create_cpu:.1f}s, "
        f"30 shows {show_cpu:.1f}s"
    )
    assert all(r.status_code == 200 and r.json()["model_info"]["tokenizer.ggml.tokens"] == [] for r in shown)
    assert create_cpu < 3 and show_cpu < 3, (create_cpu, show_cpu)
    verbose = httpx.post(srv.url + "/api/show", json={"model": "vocab", "verbose": True}, timeout=300).json()
    assert len(verbose["model_info"]["tokenizer.ggml.tokens"]) == 400_000


def test_show_does_not_reveal_the_data_directory_and_it_is_private(srv: ServerProcess, model: str) -> None:
    shown = httpx.post(srv.url + "/api/show", json={"model": model}).json()
    assert str(srv.home) not in json.dumps(shown) and "FROM victim" in shown["modelfile"]
    assert (srv.home.stat().st_mode & 0o777) == 0o700
    for p in srv.home.rglob("*"):
        mode = p.lstat().st_mode & 0o777
        assert mode == (0o700 if p.is_dir() else 0o600), (p, oct(mode))


def test_hostile_fakes_leave_no_500_in_the_log(srv: ServerProcess) -> None:
    assert "Traceback" not in srv.log() and "unexpected error" not in srv.log(), srv.log()[-3000:]
