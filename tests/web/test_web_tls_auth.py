"""The web UI's sign-in in a real browser on servers of their own: over TLS (`hangar serve --tls-cert`)
the session cookie is `Secure`; under HANGAR_AUTH=required a browser on loopback must sign in, and a
page never shows a model to a user who may not see it (README, "The web UI")."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from seed import _client, _create, make_users
from test_web_ui import ARGS, CHROMIUM, sign_in

from harness import CLI, READY_TIMEOUT, ServerProcess, free_port, hangar_env

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
if not Path(CHROMIUM).exists():
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)


LOOPBACK = "127.0.0.1"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made with the `cryptography` package."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(LOOPBACK))]), False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def test_over_tls_the_session_cookie_is_secure(tmp_path: Path, browser: Any) -> None:
    home = tmp_path / "home"
    alice, _ = make_users(home)
    cert, key = self_signed(tmp_path)
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    cmd = [*CLI, "serve", "--host", f"127.0.0.1:{port}", "--data-dir", str(home)]
    cmd += ["--tls-cert", str(cert), "--tls-key", str(key)]
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=hangar_env(home))
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            try:
                trust = ssl.create_default_context(cafile=str(cert))
                if httpx.get(url + "/api/version", verify=trust, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        page = sign_in(browser, url, alice, ignore_https_errors=True)
        assert "Signed in as alice" in page.inner_text("header")
        cookies = {c["name"]: c for c in page.context.cookies()}
        session = cookies["hangar_session"]
        assert session["secure"] and session["httpOnly"] and session["sameSite"] == "Strict"
        assert cookies["hangar_csrf"]["secure"]
        page.close()
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    assert f"at {url}" in (tmp_path / "server.log").read_text()  # the start line names the https address


def test_auth_required_a_loopback_browser_signs_in_and_sees_only_its_models(
    tmp_path: Path, browser: Any
) -> None:
    home = tmp_path / "home"
    alice, bob = make_users(home)
    srv = ServerProcess(home, env={"HANGAR_AUTH": "required"}, log_dir=tmp_path).start()
    try:
        _create(_client(srv.url, alice), tmp_path, "alice/mine", 1, 2_000)
        _create(_client(srv.url, bob), tmp_path, "bob/secret", 2, 2_000)  # private: bob's alone
        page = browser.new_page()
        page.goto(srv.url + "/ui/models")
        assert page.url.startswith(srv.url + "/ui/signin")  # no local admin under `required`
        assert "bob/secret" not in page.content()
        page.close()
        page = sign_in(browser, srv.url, alice)
        names = page.locator("table.models tbody th a").all_inner_texts()
        assert names == ["alice/mine"]
        page.goto(srv.url + "/ui/models?q=secret")
        assert page.locator("table.models").count() == 0 and "bob/secret" not in page.content()
        response = page.goto(srv.url + "/ui/models/bob/secret")
        assert response is not None and response.status == 404  # as one that does not exist:
        said = page.locator("main").inner_text()
        page.goto(srv.url + "/ui/models/bob/nothing")
        assert said == page.locator("main").inner_text().replace("bob/nothing", "bob/secret")
        page.goto(srv.url + "/ui/usage")
        assert "bob/secret" not in page.content()
        page.close()
        page = sign_in(browser, srv.url, bob)
        assert "bob/secret" in page.locator("table.models tbody th a").all_inner_texts()
        page.close()
    finally:
        srv.stop()
