"""SIGKILL the server while uploads, creates and deletes are in flight; restart it on the same data dir.

After `hangar gc` the store must pass `hangar fsck`, every listed model must show and have its
blobs, creates that were answered must have survived, deletes that were answered must have stuck,
and no half-received upload may have become a blob.

Its `tokens` variant runs under HANGAR_AUTH=required with every request carrying a token of a
non-admin user (each client its own): a token revoked while requests are in flight stays revoked
after the crash, the others keep working after the restart, and none appears in a log, an audit
entry or an error body.
"""

from __future__ import annotations

import hashlib
import random
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest

from harness import (
    TOKEN_ENV,
    MakeGguf,
    StartServer,
    add_user,
    assert_store_consistent,
    assert_tokens_secret,
    bearer,
    blob_file,
    blob_files,
    temp_files,
    wait_until,
)

BIG = 10 << 20  # bytes per large upload: past faces/bodies.BODY_DIRECT_MIN, so read by directbody.py
CHUNK = 64 << 10
PRE_MODELS = 8


class Flight:
    """Counts requests as they start; records what the server answered before it died."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started = 0
        self.killed = threading.Event()
        self.held = threading.Event()  # an upload is half sent and waits for the kill
        self.created: set[str] = set()
        self.deleted: set[str] = set()
        self.failures: list[str] = []
        self.bodies: list[str] = []
        """Every error the server answered (none may hold a token)."""

    def start(self) -> bool:
        """Count a request about to be sent; False once the server is dead."""
        with self.lock:
            self.started += 1
        return not self.killed.is_set()

    def outcome(self, label: str, fn: Any, *args: Any, **kw: Any) -> bool:
        """True if the call succeeded; a failure only counts when the server was alive to answer."""
        try:
            fn(*args, **kw)
            return True
        except ollama.ResponseError as e:
            with self.lock:
                self.bodies.append(str(e.error))
                if (e.status_code >= 500 or e.status_code in (401, 403)) and not self.killed.is_set():
                    self.failures.append(f"{label}: {e.status_code} {e.error}")
            return False
        except Exception:  # the connection died with the server
            return False


def random_bytes(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def upload_stream(url: str, data: bytes, flight: Flight, hold: bool, token: str | None = None) -> None:
    """POST a blob in chunks; with `hold`, stop half-way until the server has been killed."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()

    def body() -> Iterator[bytes]:
        for i, off in enumerate(range(0, len(data), CHUNK)):
            if hold and i == len(data) // CHUNK // 2:
                flight.held.set()
                flight.killed.wait(60)
            yield data[off : off + CHUNK]

    if not flight.start():
        return
    try:
        with httpx.Client(timeout=60, headers=bearer(token)) as http:
            r = http.post(
                f"{url}/api/blobs/{digest}", content=body(), headers={"Content-Length": str(len(data))}
            )
        flight.bodies.append(r.text)
        if (r.status_code >= 500 or r.status_code in (401, 403)) and not flight.killed.is_set():
            flight.failures.append(f"upload: {r.status_code} {r.text}")
    except httpx.HTTPError:
        pass


def tokens_of(url: str, first: str, names: list[str]) -> dict[str, str]:
    """New tokens of the user whose token is `first`, made through the API: {name: token}."""
    out = {}
    with httpx.Client(timeout=60, headers=bearer(first)) as http:
        for name in names:
            r = http.post(f"{url}/api/hangar/tokens", json={"name": name})
            assert r.status_code == 200, r.text
            out[name] = r.json()["token"]
    return out


@pytest.mark.parametrize(
    ("kill_after", "auth"), [(1, "anonymous"), (8, "anonymous"), (24, "anonymous"), (8, "tokens")]
)
def test_sigkill_with_requests_in_flight_then_restart(
    home: Path, tmp_path: Path, start_server: StartServer, make_gguf: MakeGguf, kill_after: int, auth: str
) -> None:
    env: dict[str, str] = {}
    tokens: dict[str, str | None] = {}
    if auth == "tokens":
        env = TOKEN_ENV
        first = add_user(home, "crasher")
    srv = start_server(home, env=env)
    if auth == "tokens":
        names = ["setup", "held", "creator0", "creator1", "creator2", "deleter", "uploader", "doomed"]
        tokens = {**tokens_of(srv.url, first, names), "first": first}

    def token(name: str) -> str | None:
        return tokens.get(name)

    client = ollama.Client(host=srv.url, timeout=60, headers=bearer(token("setup")))
    gguf_paths = []
    for seed in range(3):
        path = tmp_path / f"m{seed}.gguf"
        path.write_bytes(make_gguf(seed=500 + seed))
        gguf_paths.append(path)
    digests = [client.create_blob(p) for p in gguf_paths]
    for i in range(PRE_MODELS):
        client.create(model=f"pre{i}", files={"model.gguf": digests[i % 3]}, system=f"pre {i}")

    flight = Flight()
    held_data = random_bytes(kill_after, BIG)

    def creator(n: int) -> None:
        rng = random.Random(n)
        c = ollama.Client(host=srv.url, timeout=60, headers=bearer(token(f"creator{n}")))
        for i in range(40):
            name = f"new{n}-{i}"
            if not flight.start():
                return
            if i % 3 == 2:
                ok = flight.outcome(
                    "create-from", c.create, model=name, from_=f"pre{rng.randrange(PRE_MODELS)}"
                )
            else:
                files = {"model.gguf": rng.choice(digests)}
                ok = flight.outcome(
                    "create", c.create, model=name, files=files, template=f"T{n} {{{{ .Prompt }}}}"
                )
            if ok:
                with flight.lock:
                    flight.created.add(f"{name}:latest")

    def deleter() -> None:
        c = ollama.Client(host=srv.url, timeout=60, headers=bearer(token("deleter")))
        for i in range(PRE_MODELS):
            if not flight.start():
                return
            if flight.outcome("delete", c.delete, f"pre{i}"):
                with flight.lock:
                    flight.deleted.add(f"pre{i}:latest")

    def uploader(n: int) -> None:
        for k in range(3):
            if flight.killed.is_set():
                return
            upload_stream(
                srv.url, random_bytes(1000 * n + k, BIG), flight, hold=False, token=token("uploader")
            )

    threads = [threading.Thread(target=upload_stream, args=(srv.url, held_data, flight, True, token("held")))]
    threads += [threading.Thread(target=creator, args=(n,)) for n in range(3)]
    threads += [threading.Thread(target=deleter), threading.Thread(target=uploader, args=(1,))]
    if tokens:
        assert httpx.get(f"{srv.url}/api/tags", headers=bearer(token("doomed"))).status_code == 200
    for t in threads:
        t.start()
    assert wait_until(lambda: flight.held.is_set() and flight.started >= kill_after, timeout=60)
    if tokens:  # revoked with requests in flight, just before the crash
        with httpx.Client(timeout=60, headers=bearer(token("first"))) as http:
            prefix = next(
                t["prefix"]
                for t in http.get(f"{srv.url}/api/hangar/tokens").json()["tokens"]
                if t["name"] == "doomed"
            )
            assert http.post(f"{srv.url}/api/hangar/tokens/{prefix}/revoke").status_code == 200
    srv.kill()
    flight.killed.set()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a client thread hung"
    answered = f"{len(flight.created)} creates, {len(flight.deleted)} deletes answered"
    print(f"killed after {flight.started} requests: {answered}")
    assert not flight.failures, flight.failures

    restarted = start_server(home, env=env)
    assert_store_consistent(home)
    assert temp_files(home) == [], "temp files of the killed server were not swept"
    client = ollama.Client(host=restarted.url, timeout=60, headers=bearer(token("setup")))
    listed = {m.model for m in client.list().models if m.model}
    for name in listed:
        shown = client.show(name)
        assert shown.modelinfo is not None and shown.modelinfo.get("general.architecture") == "llama", name
    assert flight.created <= listed, f"answered creates lost: {sorted(flight.created - listed)}"
    assert not flight.deleted & listed, f"answered deletes undone: {sorted(flight.deleted & listed)}"
    held_digest = "sha256:" + hashlib.sha256(held_data).hexdigest()
    assert blob_file(held_digest) not in blob_files(home)
    assert (
        httpx.head(f"{restarted.url}/api/blobs/{held_digest}", headers=bearer(token("held"))).status_code
        == 404
    )
    # the restarted server works normally on the recovered store
    digest = client.create_blob(gguf_paths[0])
    client.create(model="after-crash", files={"model.gguf": digest})
    assert client.show("after-crash").modelinfo is not None
    if tokens:
        doomed = httpx.get(f"{restarted.url}/api/tags", headers=bearer(token("doomed")))
        assert doomed.status_code == 401, "a token revoked before the crash works after it"
        flight.bodies.append(doomed.text)
        for name in ("creator0", "deleter", "uploader"):
            assert httpx.get(f"{restarted.url}/api/tags", headers=bearer(token(name))).status_code == 200
    # uvicorn re-raises the SIGTERM it handled after its graceful shutdown, hence -SIGTERM
    assert restarted.stop() in (0, -signal.SIGTERM), restarted.log()
    assert not list((home / "tmp").iterdir()), "a clean stop left its temp dir or lock behind"
    if tokens:
        made = [t for t in tokens.values() if t is not None]
        assert_tokens_secret(made, logs=[srv.log(), restarted.log()], home=home, bodies=flight.bodies)
