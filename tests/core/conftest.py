"""Fixtures for the core's tests: a store over SQLite or PostgreSQL, and a kit to build models with.

Every test that takes `store` (or `db_url`) runs twice: on SQLite under a temporary home, and on
a fresh PostgreSQL database when HANGAR_TEST_DATABASE_URL names a server (else that half skips).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql

from modelhangar.core import dependents
from modelhangar.core.catalog import schema as t
from modelhangar.core.config import load_settings
from modelhangar.core.planner import Plan, Planner, Target
from modelhangar.core.store import Actor, Store

PG_ENV = "HANGAR_TEST_DATABASE_URL"
MANIFEST_MT = "application/vnd.docker.distribution.manifest.v2+json"
# Not Ollama's config media type: keeps GGUF details (read from the config blob) out of these tests.
CONFIG_MT = "application/vnd.oci.image.config.v1+json"
MODEL_MT = "application/vnd.ollama.image.model"
CONFIG = b'{"model_format":"gguf","model_family":"test"}'
PREFIX = "registry.ollama.ai/library/"
QUICK = {"HANGAR_GC_GRACE": "0", "HANGAR_REUSE_FUSE": "0", "HANGAR_TRASH_RETENTION": "0"}

MakeStore = Callable[..., Store]
MakeKit = Callable[..., "Kit"]
FreshStore = Callable[..., contextlib.AbstractContextManager[Store]]


def repo(name: str) -> str:
    """The catalog repository of a short Ollama model name."""
    return PREFIX + name


def postgres_admin_url() -> str | None:
    return os.environ.get(PG_ENV) or None


@contextlib.contextmanager
def fresh_postgres_database(admin_url: str) -> Iterator[str]:
    """A new, empty database on the server of `admin_url`, dropped on exit; yields its SQLAlchemy URL."""
    url = sa.make_url(admin_url)
    name = f"hangar_t_{uuid.uuid4().hex}"
    libpq = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        # Tests never survive a server crash anyway: commits need not wait for the WAL flush;
        # and a deadlock (a bug the concurrency tests look for) is reported sooner.
        for setting in ("synchronous_commit = off", "deadlock_timeout = '100ms'"):
            conn.execute(sql.SQL(f"ALTER DATABASE {{}} SET {setting}").format(sql.Identifier(name)))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(libpq, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextlib.contextmanager
def database_for(backend: str) -> Iterator[str | None]:
    """None (SQLite under the home) or a fresh PostgreSQL database URL; skips without a server."""
    if backend == "sqlite":
        yield None
        return
    admin = postgres_admin_url()
    if admin is None:
        pytest.skip(f"{PG_ENV} is not set: no PostgreSQL server to test against")
    with fresh_postgres_database(admin) as url:
        yield url


def settings_env(home: Path, url: str | None, **env: str) -> dict[str, str]:
    out = {"HANGAR_HOME": str(home), **QUICK, **env}
    if url:
        out["HANGAR_DATABASE_URL"] = url
    return out


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    with database_for(str(request.param)) as url:
        yield url


def scratch_dir(fallback: Path) -> Path:
    """A directory for data directories: on tmpfs where there is one (fsync is free), else `fallback`."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return Path(tempfile.mkdtemp(prefix="hangar-test-", dir=shm))
    return fallback


@pytest.fixture
def fast_home(tmp_path: Path) -> Iterator[Path]:
    """A data directory on tmpfs where available, for tests that make many commits."""
    base = scratch_dir(tmp_path)
    yield base / "home"
    if base != tmp_path:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def make_store(tmp_path: Path, db_url: str | None) -> Iterator[MakeStore]:
    """Open a Store over the test's home (or `home`) and database, with settings overridden by `env`."""
    opened: list[Store] = []

    def make(home: Path | None = None, **env: str) -> Store:
        s = Store(load_settings(settings_env(home or tmp_path / "home", db_url, **env)))
        opened.append(s)
        return s

    yield make
    for s in reversed(opened):
        s.close()


@pytest.fixture
def fresh_store(tmp_path: Path, db_url: str | None) -> FreshStore:
    """Open a Store over a new, empty data directory and catalog each time (for property tests)."""
    backend = "sqlite" if db_url is None else "postgres"

    @contextlib.contextmanager
    def make(**env: str) -> Iterator[Store]:
        base = scratch_dir(tmp_path)
        home = base / f"home-{uuid.uuid4().hex}"
        with database_for(backend) as url:
            s = Store(load_settings(settings_env(home, url, **env)))
            try:
                yield s
            finally:
                s.close()
                shutil.rmtree(home, ignore_errors=True)
                if base != tmp_path:
                    shutil.rmtree(base, ignore_errors=True)

    return make


@pytest.fixture
def store(make_store: MakeStore) -> Store:
    return make_store()


@pytest.fixture
def kit(store: Store) -> Kit:
    return Kit(store)


@pytest.fixture
def kit_of() -> Callable[[Store], Kit]:
    """The Kit constructor, for tests that open their own stores."""
    return Kit


@pytest.fixture
def make_kit(make_store: MakeStore) -> MakeKit:
    """A Kit over a new Store of the test's home and database, with settings overridden by `env`."""

    def make(home: Path | None = None, **env: str) -> Kit:
        return Kit(make_store(home, **env))

    return make


class Kit:
    """Builds small Ollama-style models over a store and looks at what it holds."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.planner = Planner(store)

    def blob(self, data: bytes) -> str:
        return self.store.put_blob_bytes(data).digest

    def manifest(self, layers: Sequence[bytes], config: bytes = CONFIG) -> bytes:
        """Upload config and layers; return a manifest naming them, as Ollama writes one."""
        doc = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MT,
            "config": {"mediaType": CONFIG_MT, "digest": self.blob(config), "size": len(config)},
            "layers": [{"mediaType": MODEL_MT, "digest": self.blob(x), "size": len(x)} for x in layers],
        }
        return (json.dumps(doc, separators=(",", ":")) + "\n").encode()

    def create(
        self,
        name: str,
        layers: Sequence[bytes],
        tag: str = "latest",
        *,
        owner: str | None = None,
        visibility: str = "public",
    ) -> str:
        """A model (public unless said otherwise, so other actors see it and are refused, not misled)."""
        digest, _ = self.store.put_manifest(repo(name), tag, self.manifest(layers), owner=owner)
        self.execute(
            t.repositories.update()
            .where(t.repositories.c.name_key == repo(name).lower())
            .values(visibility=visibility)
        )
        return digest

    def delete(
        self,
        name: str,
        tag: str = "latest",
        *,
        actor: Actor | None = None,
        dry_run: bool = False,
        purge: bool = False,
    ) -> Plan:
        return self.planner.delete(
            [Target("tag", repo(name), tag)], actor or Actor(), dry_run=dry_run, purge=purge
        )

    def models(self) -> set[str]:
        return {f"{r.repository}:{r.tag}" for r in self.store.list_tags()}

    def blob_path(self, digest: str) -> Path:
        path = self.store.blobs.local_path(digest)
        assert path is not None
        return path

    def blob_files(self) -> dict[str, int]:
        """Size of every blob file on disk, by digest."""
        return {d: self.blob_path(d).stat().st_size for d, _ in self.store.blobs.iter_blobs()}

    def rows(self, table: sa.Table, *where: Any) -> list[sa.Row[Any]]:
        with self.store.catalog.read() as conn:
            return list(conn.execute(sa.select(table).where(*where)).all())

    def depend(self, kind: str, ident: str, target_kind: Any, target: str, reason: str = "x") -> None:
        """Record that something outside the store (a deployment, a pipeline, ...) uses `target`."""
        with self.store.catalog.write() as conn:
            dependents.record(conn, kind, ident, target_kind, target, reason=reason)

    def execute(self, stmt: sa.Executable) -> None:
        """Change the catalog behind the store's back (to simulate crashes, clocks, dependents)."""
        with self.store.catalog.write() as conn:
            conn.execute(stmt)

    def snapshot(self) -> dict[str, Any]:
        """Every catalog row (but the audit log) and every file under blobs/, for before/after checks."""
        out: dict[str, Any] = {}
        with self.store.catalog.read() as conn:
            for table in t.metadata.sorted_tables:
                if table is not t.audit:
                    out[table.name] = sorted(repr(tuple(r)) for r in conn.execute(sa.select(table)))
        files = sorted(self.store.settings.blobs_dir.iterdir())
        out["files"] = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
        return out

    def audit(self) -> list[sa.Row[Any]]:
        with self.store.catalog.read() as conn:
            return list(conn.execute(sa.select(t.audit).order_by(t.audit.c.id)).all())
