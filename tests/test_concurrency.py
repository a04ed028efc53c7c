"""Races between creates, deletes, copies and `hangar gc`, on one server and on two sharing a data dir.

Transient failures a race explains are fine (a 404 for a model another thread deleted, a 4xx
create whose reused blob was just collected); a 5xx, a 401 or 403, a dropped connection or a
broken invariant at the end is not: no listed model may reference a blob that is not on disk.

The `tokens` variants run the same races under HANGAR_AUTH=required, every request carrying a
real token of a non-admin user (each worker thread its own; the GC endpoint, which is the admins',
gets an admin's token), so the token lookup and its last-used bookkeeping are on every request. Beside the
workers a key thread makes tokens, uses them and revokes them through the API: a revoked token is
refused at once by every server sharing the catalog, under the load of the race. At the end no
token may appear in a server's log, an audit entry or an error body.
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest

from harness import (
    AUTH_VARIANTS,
    TOKEN_ENV,
    MakeGguf,
    ServerProcess,
    StartServer,
    add_user,
    assert_store_consistent,
    assert_tokens_secret,
    audit_rows,
    bearer,
    hangar,
    wait_until,
)

CREATORS, DELETERS = 8, 4
CREATES_PER_THREAD, DELETES_PER_THREAD = 10, 12  # 128 client operations, plus gc rounds
MAX_GC_ROUNDS = 40
KEY_ROUNDS = 12  # tokens the key thread makes, uses and revokes during a race
NAMES = [f"race{i}" for i in range(10)]
TEMPLATES = ["{{ .Prompt }}", "USER: {{ .Prompt }}", "<s>{{ .Prompt }}</s>"]
SYSTEMS = ["be brief", "be kind"]


class Race:
    """Collects what went wrong in worker threads (anything but an expected 4xx)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.failures: list[str] = []
        self.counts: dict[str, int] = {}
        self.bodies: list[str] = []
        """Every error the servers answered (none may hold a token)."""

    def note(self, what: str) -> None:
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + 1

    def fail(self, what: str) -> None:
        with self.lock:
            self.failures.append(what)

    def call(self, label: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> bool:
        """Run one client call; True on success, False on an expected 4xx; anything else is recorded
        (a 401 or 403 too: every worker may do all it tries, and a race must never lose its token)."""
        try:
            fn(*args, **kw)
        except ollama.ResponseError as e:
            with self.lock:
                self.bodies.append(str(e.error))
            if 400 <= e.status_code < 500 and e.status_code not in (401, 403):
                self.note(f"{label} {e.status_code}")
                return False
            self.fail(f"{label}{args}{kw}: {e.status_code} {e.error}")
            return False
        except Exception as e:
            self.fail(f"{label}{args}{kw}: {type(e).__name__}: {e}")
            return False
        self.note(f"{label} ok")
        return True


class Tokens:
    """The accounts of a token run: `racer` (not an admin), whose tokens every worker carries, and
    `root` (an admin) for the GC endpoint, both made with `hangar user add` on the store."""

    def __init__(self, home: Path, database_url: str | None) -> None:
        self.racer = add_user(home, "racer", database_url=database_url)
        self.root = add_user(home, "root", admin=True, database_url=database_url)
        self.made = [self.racer, self.root]
        """Every token of the run: none may appear in a log, an audit entry or an error."""
        self.workers: list[str] = []

    def add(self, url: str, name: str, http: httpx.Client | None = None) -> dict[str, Any]:
        """A new token of racer's, made through the API with its first token."""
        with contextlib.ExitStack() as stack:
            if http is None:
                http = stack.enter_context(httpx.Client(timeout=60))
            r = http.post(f"{url}/api/hangar/tokens", json={"name": name}, headers=bearer(self.racer))
            assert r.status_code == 200, r.text
            doc: dict[str, Any] = r.json()
        self.made.append(doc["token"])
        return doc

    def issue_workers(self, url: str, n: int) -> None:
        self.workers = [self.add(url, f"worker{i}")["token"] for i in range(n)]


def accounts_for(
    auth: str, home: Path, database_url: str | None = None
) -> tuple[Tokens | None, dict[str, str]]:
    """(the run's tokens, the servers' environment) for the `anonymous` or the `tokens` variant."""
    if auth == "anonymous":
        return None, {}
    return Tokens(home, database_url), TOKEN_ENV


def run_race(
    urls: list[str],
    home: Path,
    gguf_paths: list[Path],
    database_url: str | None = None,
    tokens: Tokens | None = None,
) -> Race:
    race = Race()
    if tokens is not None:
        tokens.issue_workers(urls[0], CREATORS + DELETERS)

    def client_of(worker: int) -> ollama.Client:
        """Worker `worker`'s client: its server, and its own token in a token run."""
        token = None if tokens is None else tokens.workers[worker]
        return ollama.Client(host=urls[worker % len(urls)], timeout=120, headers=bearer(token))

    done = threading.Event()
    progress = threading.Condition()
    creates_done = [0]
    creates_total = CREATORS * CREATES_PER_THREAD

    def reached(share: int) -> Callable[[], bool]:
        return lambda: creates_done[0] >= share

    def creator(n: int) -> None:
        rng = random.Random(n)
        client = client_of(n)
        for i in range(CREATES_PER_THREAD):
            name = rng.choice(NAMES)
            if i % 4 == 3:
                race.call(
                    "create-from",
                    client.create,
                    model=name,
                    from_=rng.choice(NAMES),
                    system=rng.choice(SYSTEMS),
                )
            else:
                path = rng.choice(gguf_paths)
                if race.call("upload", client.create_blob, path):
                    race.call(
                        "create",
                        client.create,
                        model=name,
                        files={"model.gguf": f"sha256:{path.stem}"},
                        template=rng.choice(TEMPLATES),
                        system=rng.choice(SYSTEMS),
                    )
            with progress:
                creates_done[0] += 1
                progress.notify_all()

    def deleter(n: int) -> None:
        """Keeps pace with the creators (its i-th step waits for a share of the creates), so they overlap."""
        rng = random.Random(1000 + n)
        client = client_of(CREATORS + n)
        for i in range(DELETES_PER_THREAD):
            with progress:
                progress.wait_for(reached(i * creates_total // DELETES_PER_THREAD), 120)
            try:
                listed = [m.model for m in client.list().models if m.model]
            except Exception as e:  # a 5xx or a dropped connection: recorded, and the race goes on
                race.fail(f"list: {type(e).__name__}: {e}")
                listed = []
            victim = rng.choice(listed) if listed and rng.random() < 0.8 else rng.choice(NAMES)
            if i % 4 == 2:
                race.call("copy", client.copy, victim, rng.choice(NAMES))
            else:
                race.call("delete", client.delete, victim)

    def collector() -> None:
        """`hangar gc` in its own process, again and again while the others run."""
        for _ in range(MAX_GC_ROUNDS):
            if done.is_set():
                return
            proc = hangar("gc", "--json", home=home, database_url=database_url)
            if proc.returncode != 0:
                race.fail(f"hangar gc exited {proc.returncode}: {proc.stderr.strip()}")
            race.note("gc")

    def online_collector() -> None:
        """The server's own GC endpoint, more often than a process can start (an admin's)."""
        with httpx.Client(timeout=120, headers=bearer(None if tokens is None else tokens.root)) as http:
            for i in range(MAX_GC_ROUNDS):
                if done.is_set():
                    return
                r = http.post(f"{urls[i % len(urls)]}/api/hangar/gc", json={"dry_run": False})
                if r.status_code != 200:
                    race.fail(f"POST /api/hangar/gc: {r.status_code} {r.text}")
                race.note("online gc")
                with progress:
                    progress.wait(0.5)

    def keys(held: Tokens) -> None:
        """Makes a token on one server, uses it on the next, revokes it: every server refuses it at once."""
        with httpx.Client(timeout=120) as http:
            for i in range(KEY_ROUNDS):
                with progress:
                    progress.wait_for(reached(i * creates_total // KEY_ROUNDS), 120)
                try:
                    doc = held.add(urls[i % len(urls)], f"key{i}", http)
                except AssertionError as e:
                    race.fail(f"making a token: {e}")
                    continue
                used = http.get(f"{urls[(i + 1) % len(urls)]}/api/tags", headers=bearer(doc["token"]))
                if used.status_code != 200:
                    race.fail(f"a new token refused: {used.status_code} {used.text}")
                r = http.post(
                    f"{urls[i % len(urls)]}/api/hangar/tokens/{doc['prefix']}/revoke",
                    headers=bearer(held.racer),
                )
                if r.status_code != 200 or r.json().get("active") is not False:
                    race.fail(f"revoking {doc['prefix']}: {r.status_code} {r.text}")
                for url in urls:
                    after = http.get(f"{url}/api/tags", headers=bearer(doc["token"]))
                    race.bodies.append(after.text)
                    if after.status_code != 401:
                        race.fail(f"{url} still accepts a revoked token: {after.status_code}")
                race.note("token revoked")

    workers = [threading.Thread(target=creator, args=(n,)) for n in range(CREATORS)]
    workers += [threading.Thread(target=deleter, args=(n,)) for n in range(DELETERS)]
    if tokens is not None:
        workers.append(threading.Thread(target=keys, args=(tokens,)))
    collectors = [threading.Thread(target=collector), threading.Thread(target=online_collector)]
    for w in [*workers, *collectors]:
        w.start()
    for w in workers:
        w.join(240)
    done.set()
    for w in collectors:
        w.join(240)
    assert not any(w.is_alive() for w in [*workers, *collectors]), "a worker hung"
    return race


def check_outcome(
    race: Race,
    servers: list[ServerProcess],
    home: Path,
    database_url: str | None = None,
    tokens: Tokens | None = None,
) -> None:
    print(f"race outcome: {sorted(race.counts.items())}")
    assert not race.failures, "\n".join(race.failures) + f"\ncounts: {race.counts}"
    assert race.counts.get("create ok", 0) > 0, race.counts
    assert race.counts.get("delete ok", 0) > 0, race.counts
    listings = []
    for srv in servers:
        client = ollama.Client(
            host=srv.url, timeout=60, headers=bearer(None if tokens is None else tokens.racer)
        )
        listed = sorted(m.model for m in client.list().models if m.model)
        for name in listed:
            shown = client.show(name)
            assert shown.modelinfo is not None and shown.modelinfo.get("general.architecture") == "llama", (
                name
            )
        listings.append(listed)
    assert all(x == listings[0] for x in listings), listings
    assert_store_consistent(home, database_url)
    for srv in servers:
        assert "Traceback" not in srv.log(), srv.log()
    if tokens is not None:
        check_tokens(race, servers, home, database_url, tokens)


def check_tokens(
    race: Race, servers: list[ServerProcess], home: Path, database_url: str | None, tokens: Tokens
) -> None:
    """After a token run: every revocation held, each worker's use of its token was recorded (the
    servers write last-used times in batches), the audit names the user and its tokens' names, and no
    token is in a log, an audit entry or an error."""
    assert race.counts.get("token revoked") == KEY_ROUNDS, race.counts

    def listed() -> dict[str, Any]:
        r = httpx.get(f"{servers[-1].url}/api/hangar/tokens", headers=bearer(tokens.racer), timeout=60)
        assert r.status_code == 200, r.text
        return {t["name"]: t for t in r.json()["tokens"]}

    workers = [f"worker{i}" for i in range(CREATORS + DELETERS)]
    assert wait_until(lambda: all(listed()[w]["last_used_at"] is not None for w in workers), timeout=30)
    shown = listed()
    assert all(not shown[f"key{i}"]["active"] for i in range(KEY_ROUNDS)), shown
    deletes = [a for a in audit_rows(home, database_url) if a["action"] == "delete" and not a["dry_run"]]
    assert deletes and {a["actor"] for a in deletes} == {"racer"}, deletes[:3]
    assert {a["token_name"] for a in deletes} <= {f"worker{CREATORS + i}" for i in range(DELETERS)}, deletes[
        :3
    ]
    assert_tokens_secret(
        tokens.made, logs=[s.log() for s in servers], home=home, database_url=database_url, bodies=race.bodies
    )


@pytest.fixture
def gguf_paths(tmp_path: Path, make_gguf: MakeGguf) -> list[Path]:
    """Three GGUF files named by their digest's hex (so threads need not hash them)."""
    import hashlib

    paths = []
    for seed in range(3):
        data = make_gguf(seed=100 + seed)
        path = tmp_path / f"{hashlib.sha256(data).hexdigest()}.gguf"
        path.write_bytes(data)
        paths.append(path)
    return paths


@pytest.mark.parametrize("auth", ["anonymous", "tokens"])
def test_creates_deletes_and_gc_race_on_one_server(
    home: Path, start_server: StartServer, gguf_paths: list[Path], auth: str
) -> None:
    tokens, env = accounts_for(auth, home)
    srv = start_server(home, env=env)
    race = run_race([srv.url], home, gguf_paths, tokens=tokens)
    check_outcome(race, [srv], home, tokens=tokens)


def test_creates_deletes_and_gc_race_on_two_servers_sharing_a_data_dir(
    home: Path, start_server: StartServer, gguf_paths: list[Path]
) -> None:
    servers = [start_server(home), start_server(home)]
    race = run_race([s.url for s in servers], home, gguf_paths)
    check_outcome(race, servers, home)


@pytest.mark.postgres
@pytest.mark.parametrize("auth", ["anonymous", "tokens"])
def test_two_servers_race_over_postgresql(
    home: Path, start_server: StartServer, gguf_paths: list[Path], pg_url: str, auth: str
) -> None:
    tokens, env = accounts_for(auth, home, pg_url)
    servers = [start_server(home, database_url=pg_url, env=env) for _ in range(2)]
    race = run_race([s.url for s in servers], home, gguf_paths, database_url=pg_url, tokens=tokens)
    check_outcome(race, servers, home, database_url=pg_url, tokens=tokens)


STORM_KILLS = 40  # rounds in which the database drops every connection of the server's
STORM_WORKERS = 6
STORM_MODELS = 6  # more than one row in every listing: a listing's later rows cannot be cut either


@pytest.mark.parametrize("auth", AUTH_VARIANTS)
def test_a_database_that_drops_every_connection_is_answered_503_never_500(
    home: Path, start_server: StartServer, pg_url: str, auth: str
) -> None:
    """PostgreSQL dropping every connection of the server's again and again (a restart, a failover, an
    operator's `pg_terminate_backend`), while clients read blobs, manifests and listings, push blobs,
    tag and delete (and, in the `tokens` run, every request's token is checked): no request is
    answered 500 or cut short. What cannot be served while the connection is gone is a 503 with
    `Retry-After`, in the face's own format; a delete is never run twice (a tag made and then deleted
    is never answered 404); once the database stays up, everything answers again and the store is
    consistent (README, "Safety rules")."""
    import hashlib
    import json

    import psycopg
    from sqlalchemy.engine import make_url

    from harness import OCI_MANIFEST, Auth, image_manifest

    def digest(data: bytes) -> str:
        return "sha256:" + hashlib.sha256(data).hexdigest()

    who = Auth(auth, home, database_url=pg_url)
    server = start_server(home, database_url=pg_url, env=who.env)
    layer, config = b"the storm's layer", b'{"architecture":"amd64","os":"linux"}'
    manifest = image_manifest(config, [layer])
    with httpx.Client(base_url=server.url, timeout=60, headers=who.user) as c:
        for i in range(STORM_MODELS):
            for data in (layer, config):
                r = c.post(f"/v2/worker/m{i}/blobs/uploads/?digest={digest(data)}", content=data)
                assert r.status_code == 201, r.text
            put = c.put(
                f"/v2/worker/m{i}/manifests/latest", content=manifest, headers={"Content-Type": OCI_MANIFEST}
            )
            assert put.status_code == 201, put.text
    gets: list[tuple[str, str, dict[str, str]]] = [
        ("HEAD", f"/v2/worker/m0/blobs/{digest(layer)}", {}),
        ("GET", f"/v2/worker/m0/blobs/{digest(layer)}", {}),
        ("GET", "/v2/worker/m0/manifests/latest", {"Accept": OCI_MANIFEST}),
        ("GET", f"/v2/worker/m0/manifests/{digest(manifest)}", {"Accept": OCI_MANIFEST}),
        ("GET", "/v2/worker/m0/tags/list", {}),
        ("GET", "/v2/_catalog", {}),
        ("GET", "/api/tags", {}),
        ("GET", "/api/hangar/models", {}),
    ]
    if not who.on:  # a loopback browser is the local admin
        gets += [("GET", "/ui/models", {}), ("GET", "/ui/trash", {})]
    stop = threading.Event()
    seen: dict[int, int] = {}
    wrong: list[str] = []
    bodies: list[str] = []
    lock = threading.Lock()

    def check(r: httpx.Response, what: str) -> None:
        with lock:
            seen[r.status_code] = seen.get(r.status_code, 0) + 1
            if r.status_code < 500:
                return
            bodies.append(r.text)
            if r.status_code != 503 or "Retry-After" not in r.headers:
                wrong.append(f"{what}: {r.status_code} {r.text[:300]}")
                return
            path = what.split()[1]
            if what.startswith("HEAD ") or path.startswith("/ui/"):
                return  # no body; the web UI's own page
            try:
                body = r.json()
            except ValueError:
                wrong.append(f"{what}: not JSON: {r.text[:300]}")
                return
            if path.startswith("/v2/") and body["errors"][0]["code"] != "UNAVAILABLE":
                wrong.append(f"{what}: not the registry's error format: {r.text[:300]}")
            elif path.startswith("/api/") and not ("error" in body or "detail" in body):
                wrong.append(f"{what}: not the face's error format: {r.text[:300]}")

    def worker(i: int) -> None:
        try:
            work(i)
        except Exception as e:  # a cut answer, a dropped connection
            with lock:
                wrong.append(f"worker {i}: {e!r}")

    def work(i: int) -> None:
        with httpx.Client(base_url=server.url, timeout=60, headers=who.user) as c:
            n = 0
            while not stop.is_set():
                n += 1
                method, path, headers = gets[(i + n) % len(gets)]
                r = c.request(method, path, headers=headers)
                check(r, f"{method} {path}")
                if method == "GET" and r.status_code == 200 and path in ("/api/tags", "/v2/_catalog"):
                    listed = json.loads(r.content)["models" if path == "/api/tags" else "repositories"]
                    assert len(listed) >= STORM_MODELS, path  # whole: never cut short
                if n % 5 == 0:  # a new blob, pushed in one request
                    data = f"blob {i}-{n}".encode()
                    r = c.post(f"/v2/worker/p{i}/blobs/uploads/?digest={digest(data)}", content=data)
                    check(r, f"POST /v2/worker/p{i}/blobs/uploads/")
                if n % 7 == 0:  # a tag made, then deleted: its delete is never answered 404
                    tag = f"/v2/worker/m{i % STORM_MODELS}/manifests/t{i}-{n}"
                    made = c.put(tag, content=manifest, headers={"Content-Type": OCI_MANIFEST})
                    check(made, f"PUT {tag}")
                    if made.status_code == 201:
                        gone = c.delete(tag)
                        check(gone, f"DELETE {tag}")
                        if gone.status_code == 404:
                            with lock:
                                wrong.append(f"DELETE {tag}: 404 for a tag made just now: {gone.text[:300]}")

    libpq = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(STORM_WORKERS)]
    for th in threads:
        th.start()
    killed = 0
    try:
        with psycopg.connect(libpq, autocommit=True) as admin:
            for _ in range(STORM_KILLS):
                killed += admin.execute(
                    "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()) AS k"
                ).fetchone()[0]  # type: ignore[index]
                stop.wait(0.05)
    finally:
        stop.set()
        for th in threads:
            th.join()
    assert killed > 0, "the storm dropped connections"
    assert not wrong, f"{len(wrong)} answers went wrong:\n" + "\n".join(wrong[:10])
    assert seen.get(200, 0) > 0, seen
    with httpx.Client(base_url=server.url, timeout=60, headers=who.user) as c:  # the database stays up
        for method, path, headers in gets:
            assert c.request(method, path, headers=headers).status_code == 200, (method, path)
        tags = c.get("/v2/worker/m0/tags/list").json()
        assert "latest" in tags["tags"]
        got = c.get("/v2/worker/m0/manifests/latest", headers={"Accept": OCI_MANIFEST})
        assert json.loads(got.content) == json.loads(manifest)
    log = server.log()
    for fault in ("unexpected error", "Exception in ASGI application", "response already started"):
        assert fault not in log, f"the server logged {fault!r}"
    who.assert_secret(logs=[log], home=home, database_url=pg_url, bodies=bodies)
    assert_store_consistent(home, pg_url)


@pytest.mark.parametrize("auth", AUTH_VARIANTS)
def test_a_database_that_refuses_connections_is_answered_503_by_every_face(
    home: Path, start_server: StartServer, pg_url: str, auth: str
) -> None:
    """The catalog's database down (it accepts no connection) after the server started: every face
    answers 503 with `Retry-After` in its own format, the token check of the `tokens` run included
    (it runs before any route); nothing answers 500. Once the database is back, the same requests
    answer 200 (README, "Safety rules")."""
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    from harness import Auth

    who = Auth(auth, home, database_url=pg_url)
    server = start_server(home, database_url=pg_url, env=who.env)
    url = make_url(pg_url)
    libpq = url.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    database = sql.Identifier(str(url.database))
    requests: list[tuple[str, str, Any]] = [
        ("GET", "/api/tags", lambda b: "error" in b.json()),
        ("GET", "/v2/_catalog", lambda b: b.json()["errors"][0]["code"] == "UNAVAILABLE"),
        ("GET", "/v1/models", lambda b: b.json()["status"] == 503),
        ("POST", "/_plugins/_ml/model_groups/_search", lambda b: b.json()["status"] == 503),
        ("GET", "/api/hangar/models", lambda b: "detail" in b.json()),
    ]
    if not who.on:  # a loopback browser is the local admin
        requests.append(("GET", "/ui/models", lambda b: "<h1>503</h1>" in b.text or "503" in b.text))
    with httpx.Client(base_url=server.url, timeout=60, headers=who.user) as c:
        for method, path, _ in requests:
            assert c.request(method, path, json={} if method == "POST" else None).status_code == 200, path
        with psycopg.connect(libpq, autocommit=True) as admin:
            admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(database))
            try:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (str(url.database),),
                )
                for method, path, right_format in requests:
                    r = c.request(method, path, json={} if method == "POST" else None)
                    assert r.status_code == 503 and r.headers.get("Retry-After"), (
                        path,
                        r.status_code,
                        r.text,
                    )
                    assert right_format(r), (path, r.text)
            finally:
                admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(database))
        for method, path, _ in requests:
            assert c.request(method, path, json={} if method == "POST" else None).status_code == 200, path
    log = server.log()
    for fault in ("unexpected error", "Exception in ASGI application"):
        assert fault not in log, f"the server logged {fault!r}"
