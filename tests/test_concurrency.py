"""Races between creates, deletes, copies and `hangar gc`, on one server and on two sharing a data dir.

Transient failures a race explains are fine (a 404 for a model another thread deleted, a 4xx
create whose reused blob was just collected); a 5xx, a dropped connection or a broken invariant
at the end is not: no listed model may reference a blob that is not on disk.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest

from harness import MakeGguf, ServerProcess, StartServer, assert_store_consistent, hangar

CREATORS, DELETERS = 8, 4
CREATES_PER_THREAD, DELETES_PER_THREAD = 10, 12  # 128 client operations, plus gc rounds
MAX_GC_ROUNDS = 40
NAMES = [f"race{i}" for i in range(10)]
TEMPLATES = ["{{ .Prompt }}", "USER: {{ .Prompt }}", "<s>{{ .Prompt }}</s>"]
SYSTEMS = ["be brief", "be kind"]


class Race:
    """Collects what went wrong in worker threads (anything but an expected 4xx)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.failures: list[str] = []
        self.counts: dict[str, int] = {}

    def note(self, what: str) -> None:
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + 1

    def fail(self, what: str) -> None:
        with self.lock:
            self.failures.append(what)

    def call(self, label: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> bool:
        """Run one client call; True on success, False on an expected 4xx; anything else is recorded."""
        try:
            fn(*args, **kw)
        except ollama.ResponseError as e:
            if 400 <= e.status_code < 500:
                self.note(f"{label} {e.status_code}")
                return False
            self.fail(f"{label}{args}{kw}: {e.status_code} {e.error}")
            return False
        except Exception as e:
            self.fail(f"{label}{args}{kw}: {type(e).__name__}: {e}")
            return False
        self.note(f"{label} ok")
        return True


def run_race(urls: list[str], home: Path, gguf_paths: list[Path], database_url: str | None = None) -> Race:
    race = Race()
    clients = [ollama.Client(host=url, timeout=120) for url in urls]
    done = threading.Event()
    progress = threading.Condition()
    creates_done = [0]
    creates_total = CREATORS * CREATES_PER_THREAD

    def creator(n: int) -> None:
        rng = random.Random(n)
        client = clients[n % len(clients)]
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
        client = clients[n % len(clients)]

        def reached(share: int) -> Callable[[], bool]:
            return lambda: creates_done[0] >= share

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
        """The server's own GC endpoint, more often than a process can start."""
        with httpx.Client(timeout=120) as http:
            for i in range(MAX_GC_ROUNDS):
                if done.is_set():
                    return
                r = http.post(f"{urls[i % len(urls)]}/api/hangar/gc", json={"dry_run": False})
                if r.status_code != 200:
                    race.fail(f"POST /api/hangar/gc: {r.status_code} {r.text}")
                race.note("online gc")
                with progress:
                    progress.wait(0.5)

    workers = [threading.Thread(target=creator, args=(n,)) for n in range(CREATORS)]
    workers += [threading.Thread(target=deleter, args=(n,)) for n in range(DELETERS)]
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
    race: Race, servers: list[ServerProcess], home: Path, database_url: str | None = None
) -> None:
    print(f"race outcome: {sorted(race.counts.items())}")
    assert not race.failures, "\n".join(race.failures) + f"\ncounts: {race.counts}"
    assert race.counts.get("create ok", 0) > 0, race.counts
    assert race.counts.get("delete ok", 0) > 0, race.counts
    listings = []
    for srv in servers:
        client = ollama.Client(host=srv.url, timeout=60)
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


def test_creates_deletes_and_gc_race_on_one_server(
    home: Path, start_server: StartServer, gguf_paths: list[Path]
) -> None:
    srv = start_server(home)
    race = run_race([srv.url], home, gguf_paths)
    check_outcome(race, [srv], home)


def test_creates_deletes_and_gc_race_on_two_servers_sharing_a_data_dir(
    home: Path, start_server: StartServer, gguf_paths: list[Path]
) -> None:
    servers = [start_server(home), start_server(home)]
    race = run_race([s.url for s in servers], home, gguf_paths)
    check_outcome(race, servers, home)


@pytest.mark.postgres
def test_two_servers_race_over_postgresql(
    home: Path, start_server: StartServer, gguf_paths: list[Path], pg_url: str
) -> None:
    servers = [start_server(home, database_url=pg_url), start_server(home, database_url=pg_url)]
    race = run_race([s.url for s in servers], home, gguf_paths, database_url=pg_url)
    check_outcome(race, servers, home, database_url=pg_url)
