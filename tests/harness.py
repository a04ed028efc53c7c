"""Real `hangar serve` processes and `hangar` CLI runs for integration tests."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import pty
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx

READY_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
CLI = [sys.executable, "-m", "modelhangar.cli.main"]
MakeGguf = Callable[..., bytes]
"""The `make_gguf` fixture: `make_gguf(seed=...)` -> bytes of a small valid GGUF file."""
DEFAULT_ENV = {
    "HANGAR_GC_GRACE": "0",
    "HANGAR_REUSE_FUSE": "0",
    "HANGAR_TRASH_RETENTION": "0",
    "HANGAR_GC_INTERVAL": "1h",
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def hangar_env(
    home: Path, *, database_url: str | None = None, env: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment of a child process: inherited HANGAR_* dropped, test defaults applied."""
    out = {k: v for k, v in os.environ.items() if not k.startswith("HANGAR_")}
    out.update(DEFAULT_ENV)
    out["HANGAR_HOME"] = str(home)
    out["HANGAR_DEBUG"] = "1"
    if database_url is not None:
        out["HANGAR_DATABASE_URL"] = database_url
    if S3_ENV:  # HANGAR_TEST_BLOBS=s3: every store of the run keeps its blobs in the test bucket
        out.update(S3_ENV)
        out["HANGAR_BLOBS"] = s3_url_for(home)
    out.update(env or {})
    return out


S3_ENV: dict[str, str] = {}
"""Set by the `s3_blobs` session fixture (tests/conftest.py) when HANGAR_TEST_BLOBS=s3: the AWS_*
variables of the test S3 server, passed to every server and CLI run."""
S3_BUCKET = "hangar-test"


def s3_prefix_for(home: Path) -> str:
    """The prefix of a data directory's blob store in the test bucket (one of its own)."""
    return hashlib.sha256(str(home).encode()).hexdigest()[:16]


def s3_url_for(home: Path) -> str:
    """The blob store of a data directory in the test bucket."""
    return f"s3://{S3_BUCKET}/{s3_prefix_for(home)}"


def moto_installed() -> bool:
    try:
        import boto3  # noqa: F401
        import moto.server  # noqa: F401
    except ImportError:
        return False
    return True


class S3Server:
    """moto's standalone server (the S3 wire protocol over HTTP) on a free loopback port."""

    KEY_ID = "hangartest"
    SECRET = "hangartestsecret"

    def __init__(self, log_dir: Path, *, env: dict[str, str] | None = None, port: int | None = None) -> None:
        self.port = port or free_port()
        self.log_dir = log_dir
        self.extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """What a client of this server needs in its environment."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": self.KEY_ID,
            "AWS_SECRET_ACCESS_KEY": self.SECRET,
            "AWS_REGION": "us-east-1",
            "HANGAR_S3_PATH_STYLE": "1",
        }

    @classmethod
    def of_env(cls) -> S3Server:
        """The test S3 server that S3_ENV names (HANGAR_TEST_BLOBS=s3)."""
        server = cls.__new__(cls)
        server.port = int(S3_ENV["AWS_ENDPOINT_URL"].rsplit(":", 1)[1])
        return server

    def start(self) -> S3Server:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"moto-{self.port}.log", "ab")  # noqa: SIM115 - the child keeps it
        env = {**os.environ, **self.extra_env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        log.close()
        if not wait_until(self._up, timeout=READY_TIMEOUT):
            self.stop()
            raise RuntimeError("moto server did not start")
        return self

    def log(self) -> str:
        """Everything the server printed: one line per request (method, path and query, status)."""
        try:
            return (self.log_dir / f"moto-{self.port}.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _up(self) -> bool:
        try:
            return httpx.get(f"{self.url}/moto-api/", timeout=1.0).status_code < 500
        except httpx.TransportError:
            return False

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=self.KEY_ID,
            aws_secret_access_key=self.SECRET,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}),
        )

    def make_bucket(self, name: str = S3_BUCKET) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str = S3_BUCKET, prefix: str = "") -> list[str]:
        s3, out, token = self.client(), [], None
        while True:
            kw: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
            if token:
                kw["ContinuationToken"] = token
            page = s3.list_objects_v2(**kw)
            out += [o["Key"] for o in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return out
            token = page["NextContinuationToken"]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, interval: float = 0.05) -> bool:
    """Poll `predicate` until it is true or `timeout` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


class ServerProcess:
    """One `hangar serve` child on 127.0.0.1; its output goes to a log file."""

    def __init__(
        self,
        home: Path,
        *,
        port: int | None = None,
        database_url: str | None = None,
        env: dict[str, str] | None = None,
        log_dir: Path | None = None,
    ) -> None:
        self.home = home
        self.port = port or free_port()
        self.database_url = database_url
        self.env = hangar_env(home, database_url=database_url, env=env)
        log_dir = log_dir or home.parent
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"server-{self.port}-{time.monotonic_ns()}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, *, built: bool = True) -> ServerProcess:
        """Start the server and wait until `GET /api/version` answers 200, and (`built`) until its app
        is built (it answers /api/version first, README "Start-up"), so that a test's first request
        never waits for the faces to be imported on a busy machine."""
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()/kill()
        cmd = [*CLI, "serve", "--host", self.host, "--data-dir", str(self.home)]
        self.proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env
        )
        self._wait_ready("/api/version")
        if built:
            self._wait_ready("/v2/")  # any answer below 500 comes from the built app
        return self

    def _wait_ready(self, path: str) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._close_log()
                raise RuntimeError(
                    f"server exited with {self.proc.returncode} before it was ready:\n{self.log()}"
                )
            try:
                if httpx.get(f"{self.url}{path}", timeout=2.0).status_code < 500:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"server not ready after {READY_TIMEOUT:.0f}s:\n{self.log()}")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        """Everything the server printed so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit; returns the exit code."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._close_log()
        return None if self.proc is None else self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: a crash, as far as the data directory can tell."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> ServerProcess:
        if self.proc is None:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class DockerRegistry:
    """Debian's docker-registry (distribution 2.8, deletes enabled) on a free loopback port, storing
    under `root`: the reference registry the `/v2` face is compared with."""

    BINARY = "docker-registry"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def installed(cls) -> bool:
        return shutil.which(cls.BINARY) is not None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def start(self) -> DockerRegistry:
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "registry.yml"
        config.write_text(
            "version: 0.1\nlog:\n  level: error\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.root / 'data'}\n"
            f"  delete:\n    enabled: true\nhttp:\n  addr: {self.host}\n"
        )
        self.proc = subprocess.Popen(
            [self.BINARY, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if not wait_until(self._up, timeout=READY_TIMEOUT):
            self.stop()
            raise RuntimeError(f"docker-registry did not answer on {self.host}")
        return self

    def _up(self) -> bool:
        try:
            return httpx.get(f"{self.url}/v2/", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


StartServer = Callable[..., ServerProcess]
"""The `start_server` fixture: `start_server(home, database_url=..., env=...)` -> a ready server."""


def hangar(
    *args: str,
    home: Path,
    host: str | None = None,
    database_url: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120.0,
) -> subprocess.CompletedProcess[str]:
    """Run the `hangar` CLI against `home` (and a server at `host`); output captured as text."""
    child_env = hangar_env(home, database_url=database_url, env=env)
    if host is not None:
        child_env["HANGAR_HOST"] = host
    return subprocess.run(
        [*CLI, *args],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def hangar_tty(
    *args: str,
    home: Path,
    host: str | None = None,
    answer: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> tuple[int, str]:
    """Run the `hangar` CLI on a pseudo-terminal (stdin, stdout and stderr), as a person would;
    `answer` is typed once a `[y/N]` question appears. Returns (exit code, everything shown)."""
    child_env = {**hangar_env(home, env=env), "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
    if host is not None:
        child_env["HANGAR_HOST"] = host
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(
        [*CLI, *args], stdin=slave, stdout=slave, stderr=slave, env=child_env, start_new_session=True
    )
    os.close(slave)
    shown = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            shown += chunk
            if answer is not None and b"[y/N]" in shown:
                os.write(master, answer.encode() + b"\n")
                answer = None
        else:
            proc.kill()
            raise AssertionError(f"hangar {' '.join(args)} still running after {timeout:.0f}s:\n{shown!r}")
        return proc.wait(timeout), shown.decode("utf-8", "replace")
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def hangar_json(*args: str, home: Path, **kw: Any) -> Any:
    """Run a `--json` CLI command and parse its output (whatever its exit code)."""
    proc = hangar(*args, "--json", home=home, **kw)
    try:
        return json.loads(proc.stdout)
    except ValueError as e:
        raise AssertionError(
            f"hangar {' '.join(args)} --json printed no JSON (exit {proc.returncode}):\n"
            f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
        ) from e


TOKEN_ENV = {"HANGAR_AUTH": "required", "HANGAR_LAST_USED_FLUSH": "1s"}
"""A server of the token variants of the race and crash tests: every request needs a token, and the
tokens' last-used times are written in batches while the race runs (README, "Accounts")."""


def add_user(
    home: Path,
    name: str,
    *,
    admin: bool = False,
    database_url: str | None = None,
    env: dict[str, str] | None = None,
) -> str:
    """`hangar user add NAME [--admin] --json` on the store (no server): the user's first token."""
    doc = hangar_json(
        "user", "add", name, *(["--admin"] if admin else []), home=home, database_url=database_url, env=env
    )
    assert doc.get("name") == name and str(doc.get("token", "")).startswith("hgr_"), doc
    return str(doc["token"])


def bearer(token: str | None) -> dict[str, str]:
    """The headers of a request carrying `token` (none for None)."""
    return {} if token is None else {"Authorization": f"Bearer {token}"}


AUTH_VARIANTS = ("anonymous", "tokens")
"""The two runs of a race or crash test that takes `auth`: no token (the loopback admin of
HANGAR_AUTH=local), or HANGAR_AUTH=required with a non-admin user's token on every request."""


class Auth:
    """Who a race or crash test's requests are, in its `anonymous` or `tokens` run.

    In a `tokens` run the servers need a token on every request (TOKEN_ENV); `user` (named `worker`,
    not an admin) carries its token on every request, and `admin` on the admins' endpoints (GC, du).
    In an `anonymous` run both headers are empty: loopback is the local admin.
    """

    def __init__(
        self,
        variant: str,
        home: Path,
        *,
        database_url: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        assert variant in AUTH_VARIANTS, variant
        self.on = variant == "tokens"
        self.env: dict[str, str] = dict(TOKEN_ENV) if self.on else {}
        """What a server of this run needs in its environment, beside the test's own."""
        kw: dict[str, Any] = {"database_url": database_url, "env": env}
        self.user_token = add_user(home, "worker", **kw) if self.on else None
        self.admin_token = add_user(home, "root", admin=True, **kw) if self.on else None
        self.user = bearer(self.user_token)
        """The headers of the user's requests."""
        self.admin = bearer(self.admin_token)
        """The headers of requests to the admins' endpoints."""

    def assert_secret(
        self,
        *,
        logs: Sequence[str],
        home: Path,
        database_url: str | None = None,
        bodies: Sequence[str] = (),
    ) -> None:
        """In a `tokens` run, neither token appears in a log, an audit entry or an error body."""
        tokens = [t for t in (self.user_token, self.admin_token) if t is not None]
        if tokens:
            assert_tokens_secret(tokens, logs=logs, home=home, database_url=database_url, bodies=bodies)


def audit_rows(home: Path, database_url: str | None = None) -> list[dict[str, Any]]:
    """Every audit entry of the store, as the catalog holds it (servers may run)."""
    import sqlalchemy as sa

    from modelhangar.core.catalog import schema as t

    url = database_url or f"sqlite:///{home / 'catalog.db'}"
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(t.audit))]
    finally:
        engine.dispose()


def assert_tokens_secret(
    tokens: Sequence[str],
    *,
    logs: Sequence[str],
    home: Path,
    database_url: str | None = None,
    bodies: Sequence[str] = (),
) -> None:
    """No token, nor its secret part alone, appears in a server's log (stderr and access log), an audit
    entry or an error body the server answered (README, "Accounts": "never a token")."""
    audit = json.dumps(audit_rows(home, database_url), default=str)
    for token in tokens:
        secret = token.rsplit("_", 1)[-1]
        for where, texts in (("a server log", logs), ("the audit log", [audit]), ("an error body", bodies)):
            leaked = [text for text in texts if token in text or secret in text]
            assert not leaked, f"a token appears in {where}"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def blobs_dir(home: Path) -> Path:
    return home / "blobs"


def _s3_blobs(home: Path) -> dict[str, str]:
    """{`sha256-<hex>`: object key} of the blobs of `home` in the test bucket (HANGAR_TEST_BLOBS=s3)."""
    base = s3_prefix_for(home) + "/blobs/sha256/"
    keys = S3Server.of_env().keys(S3_BUCKET, base)
    return {"sha256-" + k[len(base) :]: k for k in keys}


def tree_snapshot(home: Path) -> dict[str, str]:
    """{path relative to the blobs dir: sha256 of its content} of every file there."""
    if S3_ENV:
        s3 = S3Server.of_env().client()
        return {
            name: hashlib.sha256(s3.get_object(Bucket=S3_BUCKET, Key=key)["Body"].read()).hexdigest()
            for name, key in sorted(_s3_blobs(home).items())
        }
    root = blobs_dir(home)
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def blob_files(home: Path) -> set[str]:
    """Names of the files in the blobs dir (`sha256-<hex>`), or of the objects in the bucket."""
    if S3_ENV:
        return set(_s3_blobs(home))
    root = blobs_dir(home)
    return {p.name for p in root.iterdir() if p.is_file()} if root.exists() else set()


def blob_bytes(home: Path) -> int:
    """Bytes of every blob file (or object, under HANGAR_TEST_BLOBS=s3) of `home`."""
    if S3_ENV:
        s3 = S3Server.of_env().client()
        return sum(
            int(s3.head_object(Bucket=S3_BUCKET, Key=k)["ContentLength"]) for k in _s3_blobs(home).values()
        )
    root = blobs_dir(home)
    return sum(p.stat().st_size for p in root.iterdir() if p.is_file()) if root.exists() else 0


def read_blob(home: Path, digest: str) -> bytes:
    """The stored bytes of the blob `digest` of `home`: its file, or (HANGAR_TEST_BLOBS=s3) its object."""
    if S3_ENV:
        key = f"{s3_prefix_for(home)}/blobs/sha256/{digest.split(':', 1)[1]}"
        body: bytes = S3Server.of_env().client().get_object(Bucket=S3_BUCKET, Key=key)["Body"].read()
        return body
    return (blobs_dir(home) / blob_file(digest)).read_bytes()


def blob_file(digest: str) -> str:
    """The file name of a `sha256:<hex>` digest."""
    return digest.replace(":", "-", 1)


def upload_sessions(home: Path) -> list[str]:
    """Upload sessions of `home`: its session files, or (HANGAR_TEST_BLOBS=s3) its session rows and
    their part objects in the bucket."""
    if S3_ENV:
        import sqlite3

        db = home / "catalog.db"
        if not db.exists():
            return []
        with contextlib.closing(sqlite3.connect(db)) as conn:
            rows = {r[0] for r in conn.execute("SELECT id FROM uploads")}
        base = s3_prefix_for(home) + "/uploads/"
        parts = {k[len(base) :].split("/", 1)[0] for k in S3Server.of_env().keys(S3_BUCKET, base)}
        return sorted(rows | parts)
    root = home / "uploads"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def temp_objects(home: Path) -> list[str]:
    """Temporary objects of `home` in the test bucket (HANGAR_TEST_BLOBS=s3), else []."""
    if not S3_ENV:
        return []
    base = s3_prefix_for(home) + "/tmp/"
    return S3Server.of_env().keys(S3_BUCKET, base)


def temp_files(home: Path) -> list[Path]:
    """Files under the per-process temp dirs (in-flight uploads), lock files excluded."""
    root = home / "tmp"
    if not root.exists():
        return []
    return [p for p in root.rglob("*") if p.is_file() and not p.name.endswith((".lock", ".locking"))]


def store_env(home: Path, database_url: str | None = None) -> dict[str, str]:
    """The settings of the store at `home` for opening it in the test's own process (with
    HANGAR_TEST_BLOBS=s3, its blobs' place in the test bucket, as its servers have it)."""
    env = {"HANGAR_HOME": str(home)}
    if database_url is not None:
        env["HANGAR_DATABASE_URL"] = database_url
    if S3_ENV:
        env.update(S3_ENV, HANGAR_BLOBS=s3_url_for(home))
    return env


def model_blobs(home: Path, database_url: str | None = None) -> dict[str, set[str]]:
    """{"repository:tag": digests its manifest names} read from the catalog (servers may run)."""
    from modelhangar.core.config import load_settings
    from modelhangar.core.manifests import parse_manifest
    from modelhangar.core.store import Store

    store = Store(load_settings(store_env(home, database_url)))
    try:
        out: dict[str, set[str]] = {}
        for rec in store.list_tags():
            got = store.get_manifest(rec.manifest_digest)
            assert got is not None, f"{rec.repository}:{rec.tag} points at a missing manifest"
            refs = parse_manifest(got[0], got[1])
            out[f"{rec.repository}:{rec.tag}"] = {d.digest for d in refs.blobs}
        return out
    finally:
        store.close()


def assert_store_consistent(home: Path, database_url: str | None = None) -> dict[str, Any]:
    """`hangar gc`, then `hangar fsck --json` is clean and every model's blob files exist."""
    gc = hangar("gc", home=home, database_url=database_url)
    assert gc.returncode == 0, f"hangar gc failed:\n{gc.stdout}\n{gc.stderr}"
    fsck = hangar("fsck", "--json", home=home, database_url=database_url)
    report: dict[str, Any] = json.loads(fsck.stdout) if fsck.stdout.strip() else {}
    assert fsck.returncode == 0 and report.get("ok"), f"fsck found problems:\n{fsck.stdout}\n{fsck.stderr}"
    on_disk = blob_files(home)
    for model, digests in model_blobs(home, database_url).items():
        missing = {d for d in digests if blob_file(d) not in on_disk}
        assert not missing, f"{model} references blobs missing on disk: {sorted(missing)}"
    return report


OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def image_manifest(config: bytes, layers: list[bytes], media_type: str = OCI_MANIFEST) -> bytes:
    """An image manifest (OCI by default) naming `config` and `layers` by their sha256 digests."""

    def descriptor(media: str, data: bytes) -> dict[str, Any]:
        return {"mediaType": media, "digest": "sha256:" + hashlib.sha256(data).hexdigest(), "size": len(data)}

    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": descriptor("application/vnd.oci.image.config.v1+json", config),
            "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", b) for b in layers],
        }
    ).encode()


class HoldingRelay:
    """A TCP relay on loopback in front of a real server that holds, unanswered, every request whose
    head starts with `hold` (bytes, e.g. `b"DELETE /bucket/prefix/blobs/"`): the client waits as if
    the server were slow, `held` is set, and nothing of it reaches the server (until it closes)."""

    def __init__(self, upstream_port: int, hold: bytes) -> None:
        import threading

        self.upstream_port = upstream_port
        self.hold = hold
        self.held = threading.Event()
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        self._closed = threading.Event()
        self._socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        import threading

        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self._socks += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, requests: bool) -> None:
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                if requests and data.startswith(self.hold):
                    self.held.set()
                    self._closed.wait()  # never forwarded
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.close()
