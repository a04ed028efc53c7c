"""Fixtures shared by the whole suite: data directories, real server processes, clients, GGUF files."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import harness
from harness import DockerRegistry, MakeGguf, S3Server, ServerProcess, StartServer, moto_installed


@pytest.fixture(scope="session", autouse=True)
def s3_blobs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server | None]:
    """With HANGAR_TEST_BLOBS=s3, one moto S3 server for the whole run and every store's blobs in it
    (harness.hangar_env); the tests themselves are the same. Skips the run when moto is missing."""
    if os.environ.get("HANGAR_TEST_BLOBS", "") != "s3":
        yield None
        return
    if not moto_installed():
        pytest.skip("HANGAR_TEST_BLOBS=s3 needs moto[server] and boto3 (pip install -e '.[test]')")
    server = S3Server(tmp_path_factory.mktemp("s3")).start()
    server.make_bucket()
    harness.S3_ENV.update(server.env)
    saved = {k: os.environ.get(k) for k in server.env}
    os.environ.update(server.env)  # for stores the tests open in-process (boto3 reads them)
    try:
        yield server
    finally:
        harness.S3_ENV.clear()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A moto S3 server of this module's own (with the test bucket); skips when moto is missing."""
    if not moto_installed():
        pytest.skip("moto[server] and boto3 are not installed (pip install -e '.[test]')")
    server = S3Server(tmp_path_factory.mktemp("s3")).start()
    server.make_bucket()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An empty data directory (created by whatever uses it first)."""
    return tmp_path / "home"


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    """Start servers: `start_server(home, database_url=..., env=...)`; all stop at teardown."""
    servers: list[ServerProcess] = []

    def start(home: Path, **kw: Any) -> ServerProcess:
        srv = ServerProcess(home, log_dir=tmp_path / "logs", **kw)
        servers.append(srv)
        return srv.start()

    yield start
    for srv in servers:
        srv.stop()


@pytest.fixture
def server(home: Path, start_server: StartServer) -> ServerProcess:
    """One server on a free port over `home` (GC grace and trash retention 0)."""
    return start_server(home)


@pytest.fixture
def client(server: ServerProcess) -> Any:
    """The real `ollama` Python client pointed at `server`."""
    import ollama

    return ollama.Client(host=server.url)


@pytest.fixture
def docker_registry(tmp_path: Path) -> Iterator[str]:
    """`host:port` of Debian's docker-registry, fresh for this test; skips when it is not installed."""
    if not DockerRegistry.installed():
        pytest.skip("docker-registry is not installed (apt-get install docker-registry)")
    registry = DockerRegistry(tmp_path / "docker-registry").start()
    try:
        yield registry.host
    finally:
        registry.stop()


@pytest.fixture
def make_gguf() -> MakeGguf:
    """`make_gguf(seed=...)` -> bytes of a small valid GGUF file (llama architecture)."""
    from modelhangar.testing.gguf_factory import make_gguf as factory

    def make(seed: int = 0, **kw: Any) -> bytes:
        data: bytes = factory(None, seed=seed, **kw)
        return data

    return make


def _pg_urls(raw: str) -> tuple[str, Any]:
    """(libpq URL for psycopg, SQLAlchemy URL with the psycopg driver) of HANGAR_TEST_DATABASE_URL."""
    from sqlalchemy.engine import make_url

    url = make_url(raw)
    return url.set(drivername="postgresql").render_as_string(hide_password=False), url.set(
        drivername="postgresql+psycopg"
    )


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test (dropped afterwards); skips without one.

    HANGAR_TEST_DATABASE_URL names a database on a server where its user may CREATE DATABASE.
    """
    admin = os.environ.get("HANGAR_TEST_DATABASE_URL")
    if not admin:
        pytest.skip("HANGAR_TEST_DATABASE_URL is not set (a PostgreSQL URL whose user may create databases)")
    import psycopg
    from psycopg import sql

    libpq, sa_url = _pg_urls(admin)
    name = f"hangar_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield sa_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(libpq, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
