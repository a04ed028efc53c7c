"""The registry face under HANGAR_AUTH=local (the default): a loopback client without credentials is
the local admin, credentials that do not check out are still 401, a client on another address gets
the token challenge, and a signed-in account is that account even on loopback.

The server listens on every address, so the machine's own non-loopback address reaches it too.
"""

from __future__ import annotations

import base64
import hashlib
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness import ServerProcess


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def outside_address() -> str | None:
    """An address of this machine that is not a loopback one, if it has any."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing address
            address: str = s.getsockname()[0]
    except OSError:
        return None
    return None if address.startswith("127.") else address


class EveryAddress(ServerProcess):
    @property
    def host(self) -> str:
        return f"0.0.0.0:{self.port}"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("oci-local") / "home"


@pytest.fixture(scope="module")
def tokens(home: Path) -> dict[str, str]:
    from modelhangar.core import accounts
    from modelhangar.core.config import load_settings
    from modelhangar.core.store import Store

    store = Store(load_settings({"HANGAR_HOME": str(home)}))
    try:
        return {name: accounts.add_user(store, name).token for name in ("alice", "bob")}
    finally:
        store.close()


@pytest.fixture(scope="module")
def server(
    home: Path, tokens: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    srv = EveryAddress(home, log_dir=tmp_path_factory.mktemp("oci-local-logs")).start()
    yield srv
    srv.stop()


def basic(user: str, token: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()}


def push_blob(url: str, name: str, data: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(
        f"{url}/v2/{name}/blobs/uploads/",
        params={"digest": digest_of(data)},
        content=data,
        headers={**(headers or {}), "Content-Type": "application/octet-stream"},
    )


def test_loopback_without_credentials_is_the_local_admin(
    server: ServerProcess, tokens: dict[str, str]
) -> None:
    assert httpx.get(f"{server.url}/v2/").status_code == 200
    assert push_blob(server.url, "alice/by-admin", b"the admin may write anywhere").status_code == 201
    own = b"alice's own"
    r = push_blob(server.url, "alice/own", own, basic("alice", tokens["alice"]))
    assert r.status_code == 201
    # the admin sees everyone's repositories (a blob link makes one known)
    r = httpx.get(f"{server.url}/v2/alice/own/blobs/{digest_of(own)}")
    assert r.status_code == 200


def test_a_wrong_token_is_401_even_on_loopback(server: ServerProcess) -> None:
    for path in ("/v2/", "/v2/alice/own/tags/list", "/v2/_catalog"):
        r = httpx.get(f"{server.url}{path}", headers={"Authorization": "Bearer hgr_aaaaaaaaaa_" + "B" * 40})
        assert r.status_code == 401 and r.json()["errors"][0]["code"] == "UNAUTHORIZED"
        assert r.headers["www-authenticate"].startswith('Bearer realm="')


def test_a_signed_in_account_is_itself_on_loopback(server: ServerProcess, tokens: dict[str, str]) -> None:
    data = b"alice's private layer"
    assert push_blob(server.url, "alice/private", data, basic("alice", tokens["alice"])).status_code == 201
    r = httpx.get(
        f"{server.url}/v2/alice/private/blobs/{digest_of(data)}", headers=basic("bob", tokens["bob"])
    )
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
    r = push_blob(server.url, "alice/private", b"bob's", basic("bob", tokens["bob"]))
    assert r.status_code == 403 and r.json()["errors"][0]["code"] == "DENIED"


def test_another_address_needs_a_token(server: ServerProcess, tokens: dict[str, str]) -> None:
    address = outside_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address")
    url = f"http://{address}:{server.port}"
    r = httpx.get(f"{url}/v2/")
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == f'Bearer realm="{url}/v2/token",service="modelhangar"'
    r = httpx.get(f"{url}/v2/alice/own/tags/list")
    assert r.status_code == 401 and 'scope="repository:alice/own:pull,push"' in r.headers["www-authenticate"]
    r = httpx.get(
        f"{url}/v2/token", params={"scope": "repository:alice/far:pull,push"}, auth=("alice", tokens["alice"])
    )
    assert r.status_code == 200
    token = r.json()["token"]
    assert push_blob(url, "alice/far", b"from afar", {"Authorization": f"Bearer {token}"}).status_code == 201
    assert httpx.get(f"{url}/v2/", headers=basic("alice", tokens["alice"])).status_code == 200
