"""Blobs in an S3 bucket (moto's server on loopback): several servers on one PostgreSQL catalog and
one bucket, presigned redirects, crashes and a failing object store (README, "Safety rules")."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest

from harness import (
    AUTH_VARIANTS,
    S3_BUCKET,
    Auth,
    MakeGguf,
    S3Server,
    ServerProcess,
    StartServer,
    hangar,
    image_manifest,
    wait_until,
)

MIB = 1 << 20


def s3_env(s3: S3Server, prefix: str, **extra: str) -> dict[str, str]:
    return {**s3.env, "HANGAR_BLOBS": f"s3://{S3_BUCKET}/{prefix}", "HANGAR_S3_PART_SIZE": "5MiB", **extra}


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_blob(url: str, repo: str, data: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(
        f"{url}/v2/{repo}/blobs/uploads/?digest={digest_of(data)}", content=data, timeout=60, headers=headers
    )


def push_image(
    url: str, repo: str, tag: str, layers: list[bytes], headers: dict[str, str] | None = None
) -> str:
    config = json.dumps({"architecture": "amd64", "os": "linux", "tag": tag}).encode()
    for blob in [config, *layers]:
        assert push_blob(url, repo, blob, headers).status_code == 201
    manifest = image_manifest(config, layers)
    r = httpx.put(
        f"{url}/v2/{repo}/manifests/{tag}",
        content=manifest,
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json", **(headers or {})},
    )
    assert r.status_code == 201, r.text
    return digest_of(manifest)


def fsck_clean(home: Path, env: dict[str, str], database_url: str | None = None) -> dict[str, Any]:
    gc = hangar("gc", home=home, env=env, database_url=database_url)
    assert gc.returncode == 0, gc.stderr
    out = hangar("fsck", "--verify", "--json", home=home, env=env, database_url=database_url)
    report: dict[str, Any] = json.loads(out.stdout)
    assert out.returncode == 0 and report["ok"], out.stdout + out.stderr
    return report


def objects(s3: S3Server, prefix: str, part: str) -> list[str]:
    return s3.keys(S3_BUCKET, f"{prefix}/{part}")


def multipart_uploads(s3: S3Server, prefix: str) -> list[str]:
    page = s3.client().list_multipart_uploads(Bucket=S3_BUCKET, Prefix=f"{prefix}/")
    return [u["Key"] for u in page.get("Uploads", [])]


def slow_body(size: int, started: threading.Event, stop: threading.Event) -> Iterator[bytes]:
    sent = 0
    while sent < size and not stop.is_set():
        chunk = os.urandom(min(MIB, size - sent))
        sent += len(chunk)
        if sent >= 7 * MIB:
            started.set()
        yield chunk
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------- one server


def test_push_pull_ranges_and_redirect(
    tmp_path: Path, s3_server: S3Server, start_server: StartServer
) -> None:
    env = s3_env(s3_server, "redirect")
    srv = start_server(tmp_path / "a", env=env)
    big = os.urandom(12 * MIB + 3)  # three parts of 5 MiB
    push_image(srv.url, "lib/big", "v1", [big])
    blob = f"{srv.url}/v2/lib/big/blobs/{digest_of(big)}"
    assert httpx.get(blob, timeout=60).content == big
    r = httpx.get(blob, headers={"Range": "bytes=5242879-5242888"})
    assert r.status_code == 206 and r.content == big[5242879:5242889]
    key = f"redirect/blobs/sha256/{digest_of(big)[7:]}"
    assert key in objects(s3_server, "redirect", "blobs/")
    assert objects(s3_server, "redirect", "tmp/") == []  # the upload's temporary object is gone
    srv.stop()
    # Redirects: the bytes come from the object store, ranges included.
    srv = start_server(tmp_path / "a", env={**env, "HANGAR_BLOB_REDIRECT": "1"})
    blob = f"{srv.url}/v2/lib/big/blobs/{digest_of(big)}"
    r = httpx.get(blob)
    assert r.status_code == 307 and r.headers["location"].startswith(s3_server.url)
    direct = httpx.get(r.headers["location"], headers={"Range": "bytes=10-19"})
    assert direct.status_code == 206 and direct.content == big[10:20]
    assert httpx.get(blob, follow_redirects=True, timeout=60).content == big
    fsck_clean(tmp_path / "a", env)


def test_a_digest_mismatch_leaves_nothing(
    tmp_path: Path, s3_server: S3Server, start_server: StartServer
) -> None:
    env = s3_env(s3_server, "mismatch")
    srv = start_server(tmp_path / "a", env=env)
    data = os.urandom(6 * MIB)
    r = httpx.post(
        f"{srv.url}/v2/lib/x/blobs/uploads/?digest={digest_of(b'other')}", content=data, timeout=60
    )
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "DIGEST_INVALID"
    assert objects(s3_server, "mismatch", "") == []
    assert multipart_uploads(s3_server, "mismatch") == []


def test_ollama_create_and_show_read_the_gguf_by_ranges(
    tmp_path: Path, s3_server: S3Server, start_server: StartServer, make_gguf: MakeGguf
) -> None:
    srv = start_server(tmp_path / "a", env=s3_env(s3_server, "ollama"))
    client = ollama.Client(host=srv.url)
    path = tmp_path / "m.gguf"
    path.write_bytes(make_gguf(seed=7))
    digest = client.create_blob(path)
    client.create(model="tiny", files={"m.gguf": digest}, system="hi")
    shown = client.show("tiny")
    assert shown.modelinfo and shown.modelinfo.get("general.architecture") == "llama"


@pytest.mark.parametrize("auth", AUTH_VARIANTS)
def test_sigkill_mid_upload_then_gc_leaves_nothing(
    tmp_path: Path, s3_server: S3Server, start_server: StartServer, auth: str
) -> None:
    """In the `tokens` run the upload carries a user's token."""
    prefix = f"killed-{auth}"
    env = s3_env(s3_server, prefix)
    home = tmp_path / "a"
    who = Auth(auth, home, env=env)
    srv = start_server(home, env={**env, **who.env})
    started, stop = threading.Event(), threading.Event()

    def upload() -> None:
        body = slow_body(40 * MIB, started, stop)
        with contextlib.suppress(httpx.HTTPError):
            httpx.post(
                f"{srv.url}/v2/lib/k/blobs/uploads/?digest={digest_of(b'x')}",
                content=body,
                timeout=60,
                headers=who.user,
            )

    t = threading.Thread(target=upload)
    t.start()
    try:
        assert started.wait(30)
        assert wait_until(lambda: bool(multipart_uploads(s3_server, prefix)), timeout=20)
        srv.kill()
    finally:
        stop.set()
        t.join()
    assert multipart_uploads(s3_server, prefix)  # the dead server's parts are still there
    dead = srv
    srv = start_server(home, env={**env, **who.env})  # a new process: the dead one's lease is free
    fsck_clean(home, env)
    assert multipart_uploads(s3_server, prefix) == []
    assert objects(s3_server, prefix, "") == []
    who.assert_secret(logs=[dead.log(), srv.log()], home=home)


def test_wrong_bucket_or_credential_fails_at_start_up(tmp_path: Path, s3_server: S3Server) -> None:
    env = s3_env(s3_server, "x")
    srv = ServerProcess(tmp_path / "a", env={**env, "HANGAR_BLOBS": "s3://no-such-bucket"})
    with pytest.raises(RuntimeError, match="no such bucket"):
        srv.start()
    srv = ServerProcess(tmp_path / "b", env={**env, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"})
    with pytest.raises(RuntimeError, match="cannot reach the object store"):
        srv.start()


def test_wrong_credential_fails_at_start_up(tmp_path: Path) -> None:
    """moto checks credentials once IAM authentication is on (INITIAL_NO_AUTH_ACTION_COUNT=0)."""
    s3 = S3Server(tmp_path / "s3", env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"}).start()
    try:
        env = {**s3.env, "HANGAR_BLOBS": f"s3://{S3_BUCKET}", "AWS_SECRET_ACCESS_KEY": "wrong"}
        srv = ServerProcess(tmp_path / "a", env=env)
        with pytest.raises(RuntimeError, match=r"HANGAR_BLOBS=s3://hangar-test: .*(access|key)"):
            srv.start()
    finally:
        s3.stop()


def test_object_store_down_mid_transfer_is_a_503_then_a_retry_succeeds(
    tmp_path: Path, start_server: StartServer
) -> None:
    s3 = S3Server(tmp_path / "s3").start()
    try:
        s3.make_bucket()
        env = s3_env(s3, "down")
        home = tmp_path / "a"
        srv = start_server(home, env=env)
        started, stop = threading.Event(), threading.Event()
        answers: list[httpx.Response] = []

        def upload() -> None:
            body = slow_body(30 * MIB, started, stop)
            with contextlib.suppress(httpx.HTTPError):
                answers.append(
                    httpx.post(
                        f"{srv.url}/v2/lib/d/blobs/uploads/?digest={digest_of(b'y')}",
                        content=body,
                        timeout=90,
                    )
                )

        t = threading.Thread(target=upload)
        t.start()
        try:
            assert started.wait(30)
            s3.stop()
        finally:
            t.join(120)
            stop.set()
        assert answers, "the server gave no answer"
        assert answers[0].status_code == 503 and answers[0].headers.get("retry-after")
        assert answers[0].json()["errors"][0]["message"]
        # The object store is back (empty: moto keeps nothing); the next attempt succeeds.
        s3 = S3Server(tmp_path / "s3", port=s3.port).start()
        s3.make_bucket()
        data = os.urandom(11 * MIB)
        assert push_blob(srv.url, "lib/d", data).status_code == 201
        assert httpx.get(f"{srv.url}/v2/lib/d/blobs/{digest_of(data)}", timeout=60).content == data
        fsck_clean(home, env)
    finally:
        s3.stop()


# ---------------------------------------------------------------------------------- two servers, one PG


@pytest.mark.parametrize("auth", AUTH_VARIANTS)
def test_two_servers_share_one_catalog_and_one_bucket(
    tmp_path: Path,
    s3_server: S3Server,
    start_server: StartServer,
    pg_url: str,
    make_gguf: MakeGguf,
    auth: str,
) -> None:
    """Both servers serve what either stored, under concurrent creates, deletes and GC; in the
    `tokens` run every request carries a non-admin user's token (an admin's for GC and du)."""
    prefix = f"two-{os.getpid()}-{time.monotonic_ns()}"
    # A grace, so one server's GC does not reclaim a blob the other just uploaded for a create.
    env = s3_env(s3_server, prefix, HANGAR_GC_GRACE="10m")
    who = Auth(auth, tmp_path / "a", database_url=pg_url, env=env)
    a = start_server(tmp_path / "a", env={**env, **who.env}, database_url=pg_url)
    b = start_server(tmp_path / "b", env={**env, **who.env}, database_url=pg_url)
    layer = os.urandom(6 * MIB)
    manifest = push_image(a.url, "lib/shared", "v1", [layer], who.user)
    r = httpx.get(f"{b.url}/v2/lib/shared/manifests/v1", headers=who.user)
    assert r.status_code == 200 and digest_of(r.content) == manifest
    got = httpx.get(f"{b.url}/v2/lib/shared/blobs/{digest_of(layer)}", timeout=60, headers=who.user)
    assert got.content == layer
    if who.on:  # the other server refuses a request without the token
        assert httpx.get(f"{b.url}/v2/lib/shared/manifests/v1").status_code == 401
    # Concurrent creates, deletes and GC on both servers.
    errors: list[str] = []

    def work(srv: ServerProcess, n: int) -> None:
        client = ollama.Client(host=srv.url, headers=who.user)
        for i in range(4):
            path = tmp_path / f"m{n}-{i}.gguf"
            path.write_bytes(make_gguf(seed=100 * n + i))
            try:
                digest = client.create_blob(path)
                client.create(model=f"m{n}-{i}", files={"m.gguf": digest}, system=f"{n}-{i}")
                if i % 2:
                    client.delete(f"m{n}-{i}")
                gc = httpx.post(f"{srv.url}/api/hangar/gc", json={}, timeout=60, headers=who.admin)
                if gc.status_code != 200:
                    errors.append(f"{srv.url}: gc {gc.status_code} {gc.text}")
            except Exception as e:  # collected: asserted below
                errors.append(f"{srv.url}: {e}")

    threads = [threading.Thread(target=work, args=(srv, n)) for n, srv in enumerate((a, b, a, b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    models = {m["name"] for m in httpx.get(f"{b.url}/api/tags", headers=who.user).json()["models"]}
    assert {f"m{n}-{i}:latest" for n in range(4) for i in (0, 2)} <= models
    fsck_clean(tmp_path / "a", env, pg_url)
    # No object that nothing references: every blob object has a present row.
    with httpx.Client(headers=who.admin) as http:
        du = http.get(f"{a.url}/api/hangar/du").json()
    assert du["breakdown"]["unknown_files"] == 0
    assert objects(s3_server, prefix, "tmp/") == []
    assert multipart_uploads(s3_server, prefix) == []
    who.assert_secret(logs=[a.log(), b.log()], home=tmp_path / "a", database_url=pg_url, bodies=errors)


@pytest.mark.parametrize("auth", AUTH_VARIANTS)
def test_an_upload_session_started_on_one_server_finishes_on_another(
    tmp_path: Path, s3_server: S3Server, start_server: StartServer, pg_url: str, auth: str
) -> None:
    """An upload session lives in the catalog and the bucket, not in a server: its chunks may go to
    either server, and it survives one's death; in the `tokens` run every request carries a user's
    token (README, "Blobs in S3 and several servers")."""
    prefix = f"sessions-{time.monotonic_ns()}"
    env = s3_env(s3_server, prefix)
    who = Auth(auth, tmp_path / "a", database_url=pg_url, env=env)
    a = start_server(tmp_path / "a", env={**env, **who.env}, database_url=pg_url)
    b = start_server(tmp_path / "b", env={**env, **who.env}, database_url=pg_url)
    with httpx.Client(headers=who.user, timeout=60) as http:
        data = os.urandom(13 * MIB)
        cuts = [(0, 6 * MIB), (6 * MIB, 12 * MIB), (12 * MIB, 12 * MIB + 5)]
        start = http.post(f"{a.url}/v2/lib/s/blobs/uploads/")
        assert start.status_code == 202
        path = start.headers["location"].split("/v2/", 1)[1]
        for n, (lo, hi) in enumerate(cuts):  # chunks alternate between the servers
            srv = (a, b)[n % 2]
            r = http.patch(
                f"{srv.url}/v2/{path}",
                content=data[lo:hi],
                headers={"Content-Range": f"{lo}-{hi - 1}", "Content-Type": "application/octet-stream"},
            )
            assert r.status_code == 202, r.text
            assert r.headers["range"] == f"0-{hi - 1}"
        status = http.get(f"{b.url}/v2/{path}")
        assert status.status_code == 204 and status.headers["range"] == f"0-{12 * MIB + 4}"
        # A chunk that does not start at the offset is refused by either server.
        r = http.patch(f"{a.url}/v2/{path}", content=b"x", headers={"Content-Range": "0-0"})
        assert r.status_code == 416
        dead = a
        a.kill()  # the session survives a server: its parts are in the catalog and the bucket
        a = start_server(tmp_path / "a", env={**env, **who.env}, database_url=pg_url)
        last = data[12 * MIB + 5 :]
        r = http.put(f"{a.url}/v2/{path}?digest={digest_of(data)}", content=last)
        assert r.status_code == 201, r.text
        assert http.get(f"{b.url}/v2/lib/s/blobs/{digest_of(data)}").content == data
        assert objects(s3_server, prefix, "uploads/") == []
        # A session started on one server and given all its bytes in one PUT on the other (a round-robin
        # balancer does that to a two-step upload): its one part becomes the blob.
        start = http.post(f"{a.url}/v2/lib/s/blobs/uploads/")
        path = start.headers["location"].split("/v2/", 1)[1]
        whole = os.urandom(6 * MIB + 7)
        r = http.put(f"{b.url}/v2/{path}?digest={digest_of(whole)}", content=whole)
        assert r.status_code == 201, r.text
        assert http.get(f"{a.url}/v2/lib/s/blobs/{digest_of(whole)}").content == whole
        assert objects(s3_server, prefix, "uploads/") == []
        # A session whose content does not match its digest ends and leaves no object behind.
        start = http.post(f"{b.url}/v2/lib/s/blobs/uploads/")
        path = start.headers["location"].split("/v2/", 1)[1]
        assert http.patch(f"{b.url}/v2/{path}", content=b"abc").status_code == 202
        r = http.put(f"{a.url}/v2/{path}?digest={digest_of(b'abd')}")
        assert r.status_code == 400 and r.json()["errors"][0]["code"] == "DIGEST_INVALID"
        assert objects(s3_server, prefix, "uploads/") == []
        assert objects(s3_server, prefix, "tmp/") == []
    fsck_clean(tmp_path / "a", env, pg_url)
    who.assert_secret(logs=[dead.log(), a.log(), b.log()], home=tmp_path / "a", database_url=pg_url)


def held_body(data: bytes, sent: threading.Event, go: threading.Event, after: int) -> Iterator[bytes]:
    """`data` in 1 MiB chunks; after `after` bytes it sets `sent` and waits for `go`."""
    for off in range(0, len(data), MIB):
        if off >= after and not sent.is_set():
            sent.set()
            go.wait(60)
        yield data[off : off + MIB]


def upload_in_thread(
    url: str, repo: str, body: Iterator[bytes], digest: str, headers: dict[str, str] | None = None
) -> tuple[threading.Thread, list[int]]:
    answers: list[int] = []

    def run() -> None:
        with contextlib.suppress(httpx.HTTPError):
            answers.append(
                httpx.post(
                    f"{url}/v2/{repo}/blobs/uploads/?digest={digest}",
                    content=body,
                    timeout=90,
                    headers=headers,
                ).status_code
            )

    t = threading.Thread(target=run)
    t.start()
    return t, answers


@pytest.mark.parametrize("auth", AUTH_VARIANTS)
def test_two_servers_sigkill_mid_upload_restart_gc_fsck_clean(
    tmp_path: Path, s3_server: S3Server, start_server: StartServer, pg_url: str, auth: str
) -> None:
    """Server a dies mid-upload while server b (same catalog and bucket) is mid-upload too: after a
    restarts, GC removes a's parts only (its process lease is free, b's is held), b's upload still
    completes, and fsck is clean with no object left over (README, "Blobs in S3 and several servers");
    in the `tokens` run every request carries a user's token."""
    prefix = f"kill-up-{time.monotonic_ns()}"
    env = s3_env(s3_server, prefix)
    who = Auth(auth, tmp_path / "a", database_url=pg_url, env=env)
    a = start_server(tmp_path / "a", env={**env, **who.env}, database_url=pg_url)
    b = start_server(tmp_path / "b", env={**env, **who.env}, database_url=pg_url)
    live = os.urandom(6 * MIB)
    push_image(b.url, "lib/live", "v1", [live], who.user)
    a_sent, a_go = threading.Event(), threading.Event()
    b_sent, b_go = threading.Event(), threading.Event()
    b_data = os.urandom(16 * MIB)
    ta, _ = upload_in_thread(
        a.url, "lib/k", held_body(os.urandom(20 * MIB), a_sent, a_go, 11 * MIB), digest_of(b"x"), who.user
    )
    tb, b_answers = upload_in_thread(
        b.url, "lib/k2", held_body(b_data, b_sent, b_go, 11 * MIB), digest_of(b_data), who.user
    )
    dead = a
    try:
        assert a_sent.wait(30) and b_sent.wait(30)
        assert wait_until(lambda: len(multipart_uploads(s3_server, prefix)) == 2, timeout=30)
        a.kill()
        a_go.set()
        ta.join(60)
        a = start_server(tmp_path / "a", env={**env, **who.env}, database_url=pg_url)  # a new lease
        gc = hangar("gc", home=tmp_path / "a", env=env, database_url=pg_url)
        assert gc.returncode == 0, gc.stderr
        assert len(multipart_uploads(s3_server, prefix)) == 1  # the dead server's, aborted; b's kept
    finally:
        a_go.set()
        b_go.set()
        ta.join(60)
        tb.join(90)
    assert b_answers == [201]
    with httpx.Client(headers=who.user, timeout=60) as http:
        assert http.get(f"{a.url}/v2/lib/k2/blobs/{digest_of(b_data)}").content == b_data
        assert http.get(f"{a.url}/v2/lib/live/blobs/{digest_of(live)}").content == live
    fsck_clean(tmp_path / "a", env, pg_url)
    assert multipart_uploads(s3_server, prefix) == []
    assert objects(s3_server, prefix, "tmp/") == []
    assert objects(s3_server, prefix, "uploads/") == []
    who.assert_secret(logs=[dead.log(), a.log(), b.log()], home=tmp_path / "a", database_url=pg_url)


def _call_quietly(fn: Any) -> None:
    """Run `fn`, ignoring what it raises (its server may be killed under it)."""
    with contextlib.suppress(Exception):
        fn()


def catalog_states(pg_url: str) -> dict[str, str]:
    """{digest: state} of every blob row of the catalog at `pg_url`."""
    import sqlalchemy as sa

    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            return {r[0]: r[1] for r in conn.execute(sa.text("SELECT digest, state FROM blobs"))}
    finally:
        engine.dispose()


@pytest.mark.parametrize("auth", AUTH_VARIANTS)
def test_two_servers_sigkill_mid_delete_restart_gc_fsck_clean(
    tmp_path: Path,
    s3_server: S3Server,
    start_server: StartServer,
    pg_url: str,
    make_gguf: MakeGguf,
    auth: str,
) -> None:
    """Server a is pinned between the commit of a blob's `deleting` row and the object's delete (its
    object store requests go through a relay that holds the DELETE), then SIGKILLed: after it restarts,
    GC finishes the deletion, fsck is clean, no object is left that nothing references, and the model
    sharing the deleted one's weights lost nothing (README, "Safety rules": invariants 1 and 2); in the
    `tokens` run every request carries a user's token (an admin's for du)."""
    from harness import HoldingRelay

    prefix = f"kill-del-{time.monotonic_ns()}"
    env = s3_env(s3_server, prefix)
    who = Auth(auth, tmp_path / "a", database_url=pg_url, env=env)
    relay = HoldingRelay(s3_server.port, f"DELETE /{S3_BUCKET}/{prefix}/blobs/".encode())
    try:
        a = start_server(
            tmp_path / "a", env={**env, **who.env, "AWS_ENDPOINT_URL": relay.url}, database_url=pg_url
        )
        b = start_server(tmp_path / "b", env={**env, **who.env}, database_url=pg_url)
        client = ollama.Client(host=b.url, headers=who.user)
        path = tmp_path / "m.gguf"
        weights = make_gguf(seed=31)
        path.write_bytes(weights)
        digest = client.create_blob(path)
        client.create(model="keep", files={"m.gguf": digest}, system="kept")
        client.create(model="gone", files={"m.gguf": digest}, system="deleted, alone in this text")
        before = set(objects(s3_server, prefix, "blobs/"))
        gone = ollama.Client(host=a.url, timeout=60, headers=who.user)
        deleter = threading.Thread(target=_call_quietly, args=(lambda: gone.delete("gone"),))
        deleter.start()
        assert relay.held.wait(60), "the delete never reached the object store"
        deleting = [d for d, state in catalog_states(pg_url).items() if state == "deleting"]
        assert deleting  # committed as `deleting` before the object delete was sent
        a.kill()
        deleter.join(60)
    finally:
        relay.close()
    dead = a
    assert set(objects(s3_server, prefix, "blobs/")) == before  # nothing deleted yet
    listed = httpx.get(f"{b.url}/api/tags", headers=who.user).json()["models"]
    assert "gone:latest" not in {m["name"] for m in listed}
    a = start_server(tmp_path / "a", env={**env, **who.env}, database_url=pg_url)
    fsck_clean(tmp_path / "a", env, pg_url)
    states = catalog_states(pg_url)
    assert "deleting" not in states.values()
    left = {"sha256:" + k.rsplit("/", 1)[1] for k in objects(s3_server, prefix, "blobs/")}
    assert left == set(states)  # every object has its row: no orphan, and no row without its object
    assert not set(deleting) & left
    assert httpx.get(f"{a.url}/api/hangar/du", headers=who.admin).json()["breakdown"]["unknown_files"] == 0
    # The model that shares the weights lost nothing, through either server.
    for srv in (a, b):
        r = httpx.get(f"{srv.url}/v2/library/keep/manifests/latest", headers=who.user)
        assert r.status_code == 200
        layers = {layer["digest"] for layer in r.json()["layers"]}
        assert digest in layers
        got = httpx.get(f"{srv.url}/v2/library/keep/blobs/{digest}", timeout=60, headers=who.user)
        assert got.content == weights
    assert "kept" in (ollama.Client(host=a.url, headers=who.user).show("keep").modelfile or "")
    who.assert_secret(logs=[dead.log(), a.log(), b.log()], home=tmp_path / "a", database_url=pg_url)


# ----------------------------------------------------------------------------- redirects and pulls


def test_pullers_follow_the_redirect_to_the_object_store_with_ranges(
    tmp_path: Path, s3_server: S3Server, start_server: StartServer, make_gguf: MakeGguf
) -> None:
    """With HANGAR_BLOB_REDIRECT=1 a blob GET is a 307 to a presigned URL: `hangar pull` (our
    Ollama-compatible puller) and the ollama client's pull follow it, a resumed pull's Range still
    applies there, and so does a ranged GET of any HTTP client (README, "Blobs in S3 and several
    servers")."""
    from harness import blob_file, read_blob

    env = s3_env(s3_server, "pulled", HANGAR_BLOB_REDIRECT="1")
    a = start_server(tmp_path / "a", env=env)
    weights = make_gguf(seed=41, tensor_elems=1 << 20)  # about 4 MiB
    path = tmp_path / "big.gguf"
    path.write_bytes(weights)
    client = ollama.Client(host=a.url)
    digest = client.create_blob(path)
    client.create(model="big", files={"m.gguf": digest}, system="redirected")
    remote = f"127.0.0.1:{a.port}/library/big:latest"
    # hangar pull into a store on local disk.
    b = start_server(tmp_path / "b")
    pulled = hangar("pull", "--insecure", remote, home=b.home, host=b.host)
    assert pulled.returncode == 0, pulled.stderr
    assert read_blob(b.home, digest) == weights
    assert "redirected" in (ollama.Client(host=b.url).show(remote).modelfile or "")
    key = f"pulled/blobs/sha256/{digest[7:]}"
    assert f"GET /{S3_BUCKET}/{key}?" in s3_server.log()  # the bytes came from the object store
    # A pull that resumes a partial sends its Range to the presigned URL.
    c = tmp_path / "c"
    have = len(weights) // 3
    (c / "partials").mkdir(parents=True)
    (c / "partials" / f"{blob_file(digest)}.partial").write_bytes(weights[:have])
    c_srv = start_server(c)
    events = list(ollama.Client(host=c_srv.url).pull(remote, insecure=True, stream=True))
    assert events[-1].status == "success"
    assert next(e for e in events if e.digest == digest).completed == have
    assert read_blob(c, digest) == weights
    # Any client: the 307 carries the Location, and a Range followed through it still applies.
    blob = f"{a.url}/v2/library/big/blobs/{digest}"
    r = httpx.get(blob)
    assert r.status_code == 307 and r.headers["location"].startswith(s3_server.url)
    ranged = httpx.get(blob, headers={"Range": f"bytes={have}-{have + 99}"}, follow_redirects=True)
    assert ranged.status_code == 206 and ranged.content == weights[have : have + 100]


# ------------------------------------------------------------------------------------------------ du


def test_du_on_s3_lists_sizes_and_equals_the_catalog(
    tmp_path: Path, s3_server: S3Server, start_server: StartServer
) -> None:
    """`hangar du` against a bucket takes object sizes from the listing (no HEAD per object), and its
    figures still equal the catalog's, with objects the catalog lacks counted as unknown files."""
    prefix = f"du-{time.monotonic_ns()}"
    env = s3_env(s3_server, prefix)
    home = tmp_path / "a"
    srv = start_server(home, env=env)
    layers = [os.urandom(3 * MIB + 1), os.urandom(7 * MIB + 5), b"small"]
    push_image(srv.url, "lib/one", "v1", layers[:2])
    push_image(srv.url, "lib/two", "v1", layers[1:])
    stray = os.urandom(4096)
    s3_server.client().put_object(
        Bucket=S3_BUCKET, Key=f"{prefix}/blobs/sha256/{digest_of(stray)[7:]}", Body=stray
    )
    heads_before = s3_server.log().count('"HEAD ')
    out = hangar("du", "--json", home=home, host=srv.host, env=env)
    assert out.returncode == 0, out.stderr
    du = json.loads(out.stdout)
    assert s3_server.log().count('"HEAD ') == heads_before  # sizes from the LIST pages alone
    listed = {
        o["Key"]: int(o["Size"])
        for o in s3_server.client().list_objects_v2(Bucket=S3_BUCKET, Prefix=f"{prefix}/blobs/")["Contents"]
    }
    assert du["total"] == sum(listed.values())
    assert du["breakdown"]["unknown_files"] == len(stray)
    assert du["breakdown"]["models"] == sum(listed.values()) - len(stray)
    config = json.dumps({"architecture": "amd64", "os": "linux", "tag": "v1"}).encode()  # push_image's
    models = {m["model"]: m for m in du["models"]}
    assert models["lib/one:v1"]["size"] == len(config) + len(layers[0]) + len(layers[1])
    assert models["lib/two:v1"]["size"] == len(config) + len(layers[1]) + len(layers[2])
    assert models["lib/one:v1"]["unique_size"] == len(layers[0])
    assert models["lib/two:v1"]["unique_size"] == len(layers[2])
