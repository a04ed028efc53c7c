"""Blob upload and download speed: modelhangar's /v2 against Debian's docker-registry, side by side.

Same client for both (curl, so the client is not the bottleneck), same machine, same run, several
rounds, alternating which server goes first. Measures a single upload and download of each size
(256 MiB and 1 GiB by default), 8 parallel uploads and 8 parallel downloads of 256 MiB blobs, and
many small blobs; prints MB/s for each (median over the rounds), the ratio modelhangar /
docker-registry and issue 16's target (uploads at least 2.0x, downloads at least 1.5x), beside the
machine's ceilings: sha256 in memory (a verified upload hashes every byte) and `dd ... conv=fsync`
(writing and syncing a file of that size).

With `--s3`, the same rounds also run against blobs in an S3 bucket, all on one local S3 server
(moto, started here): modelhangar with `HANGAR_BLOBS=s3://...` and `HANGAR_BLOB_REDIRECT=1`, two
such servers on one catalog behind a round-robin of clients (each request to the next server, so an
upload session goes on where the other server started it; `--database-url` names a PostgreSQL whose
user may create databases, else the two share one SQLite catalog), and docker-registry with its `s3`
storage driver (which redirects blob GETs to presigned URLs by default). It prints their MB/s beside
the local-disk stores and the ratio to docker-registry on S3 (issue 15's target: at least 1.0x for
upload and download).

With `--tokens` it measures instead what a token costs on the blob path (issue 10's target: a
transfer with a token takes at most 1.05 times as long as without), robustly on a busy machine:
one modelhangar server under the default HANGAR_AUTH=local, so one process and one disk serve every
variant: no token (a loopback client is the local admin), HTTP basic auth with an API token of the
user `bench` as the password, and a registry token from `/v2/token` as `Bearer`. A request that
carries a token is checked the same way under HANGAR_AUTH=required (the mode decides only what a
request without one is). The variants are interleaved: each round takes every measurement once per
variant, one right after the other (the order rotating each round), each with fresh blobs; it
prints per measurement and variant the median and the minimum seconds over the rounds, the
ratios token / no token of the medians and of the minimums, and whether they meet the target.

    python bench/blob_throughput.py [--sizes-mib 256,1024] [--parallel 8] [--small 200] [--rounds 3]
    python bench/blob_throughput.py --tokens [--sizes-mib 256,1024] [--parallel 8] [--small 200]
                                    [--requests 300] [--rounds 7]
    python bench/blob_throughput.py [...] --before TREE
    python bench/blob_throughput.py [...] --s3 [--database-url postgresql+psycopg://...]

With `--before TREE` (a checkout of an older commit, e.g. `git worktree add --detach /tmp/base main`)
that tree's modelhangar runs beside this one in the same rounds, and its MB/s and this one's ratio
to them are printed too.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import itertools
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import httpx

from peers import before_src, s3_env, start_hangar, start_registry, start_s3, stop, verdict

UPLOAD_TARGET = 2.0
DOWNLOAD_TARGET = 1.5
S3_TARGET = 1.0
"""Issue 15: modelhangar on S3 at least as fast as docker-registry on the same S3 server."""
S3_BUCKET = "bench"
TOKEN_TARGET = 1.05
"""Issue 10: a transfer with a token takes at most this much longer than one without."""
TOKEN_REFRESH = 120.0
"""Seconds a registry token is reused (they live 300)."""
Auth = Callable[[], list[str]]


class RoundRobin:
    """The servers of one entry; each request goes to the next (a load balancer's round-robin)."""

    def __init__(self, *urls: str) -> None:
        self.urls = list(urls)
        self._next = itertools.cycle(self.urls)
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            return next(self._next)


def no_auth() -> list[str]:
    return []


def curl(*args: str) -> str:
    out = subprocess.run(["curl", "-sS", "-f", *args], check=True, capture_output=True, text=True)
    return out.stdout


def upload(pick: RoundRobin, repo: str, path: Path, digest: str, auth: Auth = no_auth) -> None:
    """POST a session, then PUT the whole blob with ?digest= (the monolithic two-step upload); with
    several servers the PUT goes to the next one."""
    headers = curl("-D", "-", "-o", "/dev/null", *auth(), "-X", "POST", f"{pick()}/v2/{repo}/blobs/uploads/")
    location = next(
        line.split(":", 1)[1].strip() for line in headers.splitlines() if line.lower().startswith("location:")
    )
    if location.startswith("http"):
        location = "/" + location.split("/", 3)[3]
    location = pick() + location
    sep = "&" if "?" in location else "?"
    curl(
        "-o", "/dev/null", *auth(), "-X", "PUT", "-H", "Content-Type: application/octet-stream",
        "-H", "Expect:", "-T", str(path), f"{location}{sep}digest={digest}",
    )  # fmt: skip


def download(pick: RoundRobin, repo: str, digest: str, size: int, auth: Auth = no_auth) -> None:
    """GET the blob, following a redirect to the object store."""
    url = f"{pick()}/v2/{repo}/blobs/{digest}"
    got = curl("-L", "-o", "/dev/null", *auth(), "-w", "%{size_download}", url)
    if int(got) != size:
        raise RuntimeError(f"downloaded {got} bytes of {size}")


VARIANTS = ("no token", "basic", "bearer")


def start_with_tokens(home: Path) -> tuple[str, subprocess.Popen[bytes], dict[str, Auth]]:
    """A modelhangar (HANGAR_AUTH=local) with the user `bench`: (url, process, {variant: its auth})."""
    import threading

    from modelhangar.core import accounts
    from modelhangar.core.config import load_settings
    from modelhangar.core.store import Store

    store = Store(load_settings({"HANGAR_HOME": str(home)}))
    try:
        token = accounts.add_user(store, "bench").token
    finally:
        store.close()
    url, proc = start_hangar(home, {"HANGAR_REUSE_FUSE": "0", "HANGAR_GC_GRACE": "0"})
    basic = ["-u", f"bench:{token}"]
    scope = ("scope", f"repository:{repo_of('bearer')}:pull,push")
    held: dict[str, object] = {"at": -1e9, "token": ""}
    lock = threading.Lock()

    def bearer() -> list[str]:
        with lock:
            if time.monotonic() - float(held["at"]) > TOKEN_REFRESH:  # type: ignore[arg-type]
                r = httpx.get(
                    f"{url}/v2/token", params=[("service", "modelhangar"), scope], auth=("bench", token)
                )
                r.raise_for_status()
                held.update(at=time.monotonic(), token=r.json()["token"])
            return ["-H", f"Authorization: Bearer {held['token']}"]

    return url, proc, {"no token": no_auth, "basic": lambda: basic, "bearer": bearer}


def repo_of(variant: str) -> str:
    """Each variant's own repository (the user `bench`'s namespace)."""
    return "bench/" + variant.replace(" ", "-")


def headers_of(auth: Auth) -> dict[str, str]:
    """curl's auth arguments as request headers (for the keep-alive probe)."""
    args = auth()
    if args[:1] == ["-u"]:
        user, _, password = args[1].partition(":")
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    if args[:1] == ["-H"]:
        name, _, value = args[1].partition(": ")
        return {name: value}
    return {}


class TokenRun:
    """The `--tokens` run (see the module): interleaved variants, each measurement's seconds kept."""

    def __init__(self, args: argparse.Namespace, sizes: list[int], work: Path) -> None:
        self.args, self.sizes, self.work = args, sizes, work
        self.url, self.proc, self.auths = start_with_tokens(work / "hangar")
        self.pick = RoundRobin(self.url)
        self.secs: dict[str, dict[str, list[float]]] = {}
        self.files: list[Path] = []
        self.digests: list[tuple[str, str]] = []
        """(variant, digest) of the blobs of the round, removed after it."""

    def each(self, order: list[str], metric: str, run: Callable[[str], object]) -> None:
        """One measurement of `metric` per variant, one right after the other."""
        for variant in order:
            self.auths[variant]()  # a registry token is fetched (or refreshed) outside the timings
            took = timed(lambda: run(variant))  # noqa: B023 - called at once
            self.secs.setdefault(metric, {}).setdefault(variant, []).append(took)

    def blob(self, name: str, mib: int) -> tuple[Path, str]:
        path = self.work / name
        self.files.append(path)
        return path, make_blob(path, mib)

    def small(self, name: str) -> tuple[Path, str]:
        path = self.work / name
        data = os.urandom(self.args.small_kib << 10)
        path.write_bytes(data)
        self.files.append(path)
        return path, "sha256:" + hashlib.sha256(data).hexdigest()

    def up(self, variant: str, blobs: list[tuple[Path, str]]) -> None:
        parallel([partial(upload, self.pick, repo_of(variant), p, d, self.auths[variant]) for p, d in blobs])

    def down(self, variant: str, blobs: list[tuple[Path, str]], size: int) -> None:
        calls = [
            partial(download, self.pick, repo_of(variant), d, size, self.auths[variant]) for _, d in blobs
        ]
        parallel(calls)

    def round(self, rnd: int) -> None:
        a = self.args
        order = list(VARIANTS[rnd % 3 :] + VARIANTS[: rnd % 3])
        groups: list[tuple[str, int, dict[str, list[tuple[Path, str]]]]] = []
        for mib in self.sizes:
            groups.append(
                (f"{mib} MiB", mib << 20, {v: [self.blob(f"{v}-{rnd}-{mib}", mib)] for v in VARIANTS})
            )
        if a.parallel:
            mib = self.sizes[0]
            par = {v: [self.blob(f"{v}-{rnd}-par{i}", mib) for i in range(a.parallel)] for v in VARIANTS}
            groups.append((f"{a.parallel}x {mib} MiB", mib << 20, par))
        for label, size, blobs in groups:  # parallel(...) of one call is that call, in a thread
            self.each(order, f"upload {label}", lambda v, b=blobs: self.up(v, b[v]))  # type: ignore[misc]
            self.each(order, f"download {label}", lambda v, b=blobs, n=size: self.down(v, b[v], n))  # type: ignore[misc]
            self.digests += [(v, d) for v, got in blobs.items() for _, d in got]
        if a.small:
            smalls = {v: [self.small(f"small-{v}-{rnd}-{i}") for i in range(a.small)] for v in VARIANTS}
            size = a.small_kib << 10
            self.each(
                order,
                f"{a.small} x {a.small_kib} KiB up",
                lambda v: [upload(self.pick, repo_of(v), p, d, self.auths[v]) for p, d in smalls[v]],
            )
            self.each(
                order,
                f"{a.small} x {a.small_kib} KiB down",
                lambda v: [download(self.pick, repo_of(v), d, size, self.auths[v]) for _, d in smalls[v]],
            )
            if a.requests:
                self.each(
                    order,
                    f"{a.requests} x GET {a.small_kib} KiB, keep-alive",
                    lambda v: self.gets(v, smalls[v][0][1]),
                )
            self.digests += [(v, d) for v, got in smalls.items() for _, d in got]
        with httpx.Client(
            base_url=self.url, timeout=600
        ) as http:  # as the local admin: the store stays small
            for v, d in self.digests:
                http.delete(f"/v2/{repo_of(v)}/blobs/{d}")
            http.post("/api/hangar/gc", json={"dry_run": False}).raise_for_status()
        self.digests.clear()
        for path in self.files:
            path.unlink()
        self.files.clear()

    def gets(self, variant: str, digest: str) -> None:
        """Small requests on one keep-alive connection: what a token costs per request."""
        headers = headers_of(self.auths[variant])
        with httpx.Client(base_url=self.url) as http:
            for _ in range(self.args.requests):
                http.get(f"/v2/{repo_of(variant)}/blobs/{digest}", headers=headers).raise_for_status()


def token_costs(args: argparse.Namespace, sizes: list[int], work: Path) -> None:
    run = TokenRun(args, sizes, work)
    try:
        for rnd in range(args.rounds):
            run.round(rnd)
    finally:
        stop(run.proc)
    print_token_costs(args.rounds, list(run.secs), run.secs)


def print_token_costs(rounds: int, metrics: list[str], secs: dict[str, dict[str, list[float]]]) -> None:
    print(
        f"seconds per measurement over {rounds} interleaved rounds (med: median, min: minimum);"
        f" x: token / no token; target x <= {TOKEN_TARGET:g}"
    )
    head = f"{'':<30} {'no token':>17}"
    for variant in VARIANTS[1:]:
        head += f" {variant:>17} {'x med':>6} {'x min':>6}"
    print(head)
    print(f"{'':<30} {'med':>8} {'min':>8}" + f" {'med':>8} {'min':>8} {'':>6} {'':>6}" * 2)
    worst = {"transfers": (0.0, 0.0), "small blobs and requests": (0.0, 0.0)}
    for metric in metrics:
        plain = secs[metric]["no token"]
        pm, pn = statistics.median(plain), min(plain)
        line = f"{metric:<30} {pm:>8.3f} {pn:>8.3f}"
        group = "transfers" if "MiB" in metric else "small blobs and requests"
        for variant in VARIANTS[1:]:
            got = secs[metric][variant]
            xm, xn = statistics.median(got) / pm, min(got) / pn
            worst[group] = (max(worst[group][0], xm), max(worst[group][1], xn))
            line += f" {statistics.median(got):>8.3f} {min(got):>8.3f} {xm:>6.3f} {xn:>6.3f}"
        print(line)
    for group, (xm, xn) in worst.items():
        if xm:
            print(
                f"{group}: worst ratio of medians {xm:.3f} ({'MET' if xm <= TOKEN_TARGET else 'NOT MET'}),"
                f" of minimums {xn:.3f} ({'MET' if xn <= TOKEN_TARGET else 'NOT MET'});"
                f" target at most {TOKEN_TARGET:g}"
            )


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def parallel(calls: list[Callable[[], None]]) -> None:
    with ThreadPoolExecutor(len(calls)) as pool:
        for f in [pool.submit(c) for c in calls]:
            f.result()


def make_blob(path: Path, mib: int) -> str:
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(mib):
            chunk = os.urandom(1 << 20)
            h.update(chunk)
            f.write(chunk)
    return "sha256:" + h.hexdigest()


def sha256_ceiling() -> float:
    data = os.urandom(64 << 20)
    t = time.perf_counter()
    hashlib.sha256(data).digest()
    return len(data) / (time.perf_counter() - t) / 1e6


def dd_ceiling(work: Path, mib: int) -> float:
    """MB/s of `dd` writing `mib` MiB and syncing it (what any durable upload must at least pay)."""
    out = subprocess.run(
        ["dd", "if=/dev/zero", f"of={work / 'dd.bin'}", "bs=1M", f"count={mib}", "conv=fsync"],
        check=True,
        capture_output=True,
        text=True,
    ).stderr
    (work / "dd.bin").unlink()
    m = re.search(r"copied, ([\d.]+) s", out)
    return (mib << 20) / float(m.group(1)) / 1e6 if m else float("nan")


def fresh_database(admin_url: str) -> tuple[str, str]:
    """(URL, name) of a new empty database on the PostgreSQL server `admin_url` names."""
    import uuid

    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    url = make_url(admin_url)
    name = f"hangar_bench_{uuid.uuid4().hex[:12]}"
    libpq = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return url.set(database=name).render_as_string(hide_password=False), name


def drop_database(admin_url: str, name: str) -> None:
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    libpq = make_url(admin_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes-mib", default="256,1024", help="single-transfer sizes")
    ap.add_argument("--parallel", type=int, default=8, help="parallel transfers of the first size")
    ap.add_argument("--small", type=int, default=200, help="small blobs per round (0: skip)")
    ap.add_argument("--small-kib", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default 3; 7 with --tokens)")
    ap.add_argument("--tokens", action="store_true", help="what a token on every request costs (see above)")
    ap.add_argument("--requests", type=int, default=300, help="--tokens: keep-alive GETs of a small blob")
    ap.add_argument("--no-registry", action="store_true", help="skip docker-registry")
    ap.add_argument("--before", help="also run the modelhangar of this source tree (before/after)")
    ap.add_argument("--s3", action="store_true", help="also run with blobs in a local S3 server (moto)")
    ap.add_argument(
        "--database-url",
        default=os.environ.get("HANGAR_BENCH_DATABASE_URL", ""),
        help="with --s3: PostgreSQL for the two servers (a fresh database is created and dropped)",
    )
    args = ap.parse_args()
    if not shutil.which("docker-registry") or not shutil.which("curl"):
        sys.exit("needs docker-registry and curl (apt-get install docker-registry curl)")
    sizes = [int(s) for s in args.sizes_mib.split(",")]
    if args.rounds is None:
        args.rounds = 7 if args.tokens else 3
    if args.tokens:
        with tempfile.TemporaryDirectory(prefix="hangar-bench-") as tmp:
            token_costs(args, sizes, Path(tmp))
        return
    with tempfile.TemporaryDirectory(prefix="hangar-bench-") as tmp:
        work = Path(tmp)
        procs: list[subprocess.Popen[bytes]] = []
        servers: dict[str, RoundRobin] = {}

        def add(name: str, *started: tuple[str, subprocess.Popen[bytes]]) -> None:
            procs.extend(proc for _, proc in started)
            servers[name] = RoundRobin(*(url for url, _ in started))

        dropped: list[str] = []
        results: dict[str, dict[str, list[float]]] = {}
        targets: dict[str, float] = {}

        def record(name: str, metric: str, nbytes: int, secs: float, target: float | None) -> None:
            results.setdefault(name, {}).setdefault(metric, []).append(nbytes / secs / 1e6)
            if target is not None:
                targets[metric] = target

        try:
            add("modelhangar", start_hangar(work / "hangar"))
            if not args.no_registry:
                add("docker-registry", start_registry(work))
            if args.before:
                add("before", start_hangar(work / "before", src=before_src(args.before)))
            if args.s3:
                endpoint, s3_proc = start_s3(work, S3_BUCKET)
                procs.append(s3_proc)
                redirect = {"HANGAR_BLOB_REDIRECT": "1"}
                one = {**s3_env(endpoint, f"s3://{S3_BUCKET}/one"), **redirect}
                add("modelhangar s3", start_hangar(work / "hangar-s3", one))
                two = {**s3_env(endpoint, f"s3://{S3_BUCKET}/two"), **redirect}
                if args.database_url:
                    db_url, drop = fresh_database(args.database_url)
                    dropped.append(drop)
                    two["HANGAR_DATABASE_URL"] = db_url
                else:  # one SQLite catalog in one data directory, shared by both
                    two["HANGAR_DATABASE_URL"] = f"sqlite:///{work / 'hangar-s3x2' / 'catalog.db'}"
                add(
                    "modelhangar s3 x2",
                    start_hangar(work / "hangar-s3x2", two),
                    start_hangar(work / "hangar-s3x2", two),
                )
                if not args.no_registry:
                    add(
                        "docker-registry s3",
                        start_registry(work, s3=(endpoint, S3_BUCKET), name="registry-s3"),
                    )
            for rnd in range(args.rounds):
                blobs = {mib: work / f"big-{rnd}-{mib}" for mib in sizes}
                digests = {mib: make_blob(path, mib) for mib, path in blobs.items()}
                par = [work / f"par-{rnd}-{i}" for i in range(args.parallel)]
                par_digests = [make_blob(p, sizes[0]) for p in par]
                smalls = []
                for i in range(args.small):
                    p = work / f"small-{rnd}-{i}"
                    data = os.urandom(args.small_kib << 10)
                    p.write_bytes(data)
                    smalls.append((p, "sha256:" + hashlib.sha256(data).hexdigest()))
                order = list(servers) if rnd % 2 == 0 else list(reversed(servers))
                for name in order:
                    base, repo = servers[name], f"bench/r{rnd}"
                    auth = no_auth
                    for mib, path in blobs.items():
                        n = mib << 20
                        d = digests[mib]
                        secs = timed(lambda: upload(base, repo, path, d, auth))  # noqa: B023
                        record(name, f"upload {mib} MiB", n, secs, UPLOAD_TARGET)
                        secs = timed(lambda: download(base, repo, d, n, auth))  # noqa: B023
                        record(name, f"download {mib} MiB", n, secs, DOWNLOAD_TARGET)
                    if args.parallel:
                        n = sizes[0] << 20
                        calls = [
                            (lambda p=p, d=d: upload(base, repo, p, d, auth))  # type: ignore[misc]  # noqa: B023
                            for p, d in zip(par, par_digests, strict=True)
                        ]
                        secs = timed(lambda: parallel(calls))  # noqa: B023
                        record(
                            name, f"{args.parallel}x upload {sizes[0]} MiB", n * len(par), secs, UPLOAD_TARGET
                        )
                        calls = [(lambda d=d: download(base, repo, d, n, auth)) for d in par_digests]  # type: ignore[misc]  # noqa: B023
                        secs = timed(lambda: parallel(calls))  # noqa: B023
                        record(
                            name,
                            f"{args.parallel}x download {sizes[0]} MiB",
                            n * len(par),
                            secs,
                            DOWNLOAD_TARGET,
                        )
                    if smalls:
                        total = sum(p.stat().st_size for p, _ in smalls)
                        secs = timed(lambda: [upload(base, repo, p, d, auth) for p, d in smalls])  # noqa: B023
                        record(name, f"{args.small} x {args.small_kib} KiB up", total, secs, None)
                        secs = timed(
                            lambda: [download(base, repo, d, args.small_kib << 10, auth) for _, d in smalls]  # noqa: B023
                        )
                        record(name, f"{args.small} x {args.small_kib} KiB down", total, secs, None)
                for path in [*blobs.values(), *par, *(p for p, _ in smalls)]:
                    path.unlink()
            print(
                f"ceilings on this machine: sha256 in memory {sha256_ceiling():.0f} MB/s;"
                f" dd conv=fsync {sizes[0]} MiB {dd_ceiling(work, sizes[0]):.0f} MB/s"
            )
            if "docker-registry" in results:
                print(
                    f"{f'MB/s (median of {args.rounds})':<26} {'modelhangar':>12} {'docker-registry':>16}"
                    f" {'ratio':>7}"
                )
            for metric in results["modelhangar"] if "docker-registry" in results else []:
                ours = statistics.median(results["modelhangar"][metric])
                theirs = statistics.median(results["docker-registry"][metric])
                line = f"{metric:<26} {ours:>12.0f} {theirs:>16.0f} {ours / theirs:>7.2f}"
                if metric in targets:
                    line += f"  {verdict(ours / theirs, targets[metric])}"
                print(line)
            s3_peer = "docker-registry s3"
            if s3_peer in results:
                ours_names = [x for x in ("modelhangar s3", "modelhangar s3 x2") if x in results]
                print(
                    f"\n{f'on S3, MB/s (median of {args.rounds})':<26} {'local disk':>11}"
                    + "".join(f" {x:>18} {'ratio':>6}" for x in ours_names)
                    + f" {s3_peer:>19}"
                )
                for metric in results[s3_peer]:
                    theirs = statistics.median(results[s3_peer][metric])
                    line = f"{metric:<26} {statistics.median(results['modelhangar'][metric]):>11.0f}"
                    worst = float("inf")
                    for peer in ours_names:
                        ours = statistics.median(results[peer][metric])
                        worst = min(worst, ours / theirs)
                        line += f" {ours:>18.0f} {ours / theirs:>6.2f}"
                    line += f" {theirs:>19.0f}"
                    if metric in targets:
                        line += f"  {verdict(worst, S3_TARGET)}"
                    print(line)
            if "before" in results:
                print(f"\n{'after / before, MB/s':<26} {'before':>12} {'after':>12} {'ratio':>7}")
                for metric in results["modelhangar"]:
                    b = statistics.median(results["before"][metric])
                    a = statistics.median(results["modelhangar"][metric])
                    print(f"{metric:<26} {b:>12.0f} {a:>12.0f} {a / b:>7.2f}")
        finally:
            for proc in reversed(procs):
                stop(proc)
            for drop in dropped:
                drop_database(args.database_url, drop)


if __name__ == "__main__":
    main()
