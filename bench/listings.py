"""Listings and start-up at 10,000 and 100,000 models (issue 16), with docker-registry's `_catalog` beside.

For each size: a store of small models (`delete_scaling.populate`), served by `hangar serve`; with
`--baseline SRC` a second server runs the code in SRC (for example a worktree of main) on its own
copy of the same store, built by that code, while this code's copy is upgraded in place (its
migrations, then the listing entries rendered, as the server does in the background after start).
Debian's docker-registry serves the same number of repositories (directories made in its storage
layout, which is what its `_catalog` walks). Every measurement alternates the servers' order, round
after round; figures are medians.

* start-up: process spawn until the first `GET /api/version` answers, and until the first
  `GET /api/tags` has been read whole; also the server's CPU seconds when /api/version answered
  (user + system: a figure the machine's load barely changes);
* `GET /api/tags`: time to read the whole body, and the server's peak memory growth over the rounds;
* `GET /v2/_catalog?n=100` (the first page), the whole catalog walked page after page with `n=1000`
  following `Link`, and `GET /v2/_catalog` whole.

    python bench/listings.py [--sizes 10000,100000] [--rounds 5] [--baseline ../wt-base/src]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from peers import free_port, start_registry, stop

HERE = Path(__file__).resolve().parent
TAGS_TARGET_S = 0.3
CATALOG_TARGET_S = 0.3
STARTUP_TARGET_S = 0.3
MEMORY_TARGET_MIB = 16.0  # "flat": the growth at 100,000 models stays within this


def populate(home: Path, n: int, src: str | None) -> None:
    """A store of n models, built by the code in `src` (None: this code)."""
    code = (
        f"from delete_scaling import populate; from pathlib import Path; populate(Path({str(home)!r}), {n})"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANGAR_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, str(HERE)) if p)
    subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=HERE)


def upgrade(home: Path) -> None:
    """Open the store with this code (migrations) and render its listing entries."""
    from modelhangar.core import listing
    from modelhangar.core.config import load_settings
    from modelhangar.core.store import Store

    store = Store(load_settings({"HANGAR_HOME": str(home)}))
    try:
        listing.backfill(store.catalog.write)
    finally:
        store.close()


def registry_layout(root: Path, n: int) -> None:
    """n repositories `library/model<i>` in docker-registry's storage layout (its `_catalog` lists each
    directory that holds `_layers`)."""
    repos = root / "registry" / "docker" / "registry" / "v2" / "repositories" / "library"
    for i in range(n):
        (repos / f"model{i}" / "_layers").mkdir(parents=True, exist_ok=True)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


class Hangar:
    def __init__(self, label: str, home: Path, src: str | None) -> None:
        self.label, self.home, self.src = label, home, src
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> tuple[float, float, float]:
        """Start the server: (seconds to /api/version, to a whole /api/tags, CPU seconds at /api/version)."""
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("HANGAR_")}
        env |= {"HANGAR_HOME": str(self.home), "HANGAR_GC_INTERVAL": "24h", "HANGAR_LOG_LEVEL": "warning"}
        if self.src:
            env["PYTHONPATH"] = self.src
        self.url = f"http://127.0.0.1:{port}"
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "modelhangar.cli.main", "serve", "--host", f"127.0.0.1:{port}"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        with httpx.Client(timeout=2) as client:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.label}: server exited with {self.proc.returncode}")
                try:
                    if client.get(self.url + "/api/version").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.002)
        version = time.perf_counter() - t0
        cpu = cpu_seconds(self.proc.pid)
        r = httpx.get(self.url + "/api/tags", timeout=300)
        r.raise_for_status()
        return version, time.perf_counter() - t0, cpu

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def read_tags(url: str, n: int) -> None:
    with httpx.Client(timeout=300) as c:
        r = c.get(url + "/api/tags")
        assert r.status_code == 200 and r.content.count(b'"model":') == n, r.text[:200]


def walk_catalog(url: str, n: int, page: int) -> None:
    """Every page of `_catalog` with `n=page`, following `Link`; checks they are complete and disjoint."""
    names: list[str] = []
    next_url: str | None = f"/v2/_catalog?n={page}"
    with httpx.Client(base_url=url, timeout=300) as c:
        while next_url:
            r = c.get(next_url)
            r.raise_for_status()
            names += r.json()["repositories"]
            link = r.headers.get("link")
            next_url = link.split(";")[0].strip("<>") if link else None
    assert len(names) == n == len(set(names)) and names == sorted(names), (len(names), n)


def whole_catalog(url: str, n: int) -> None:
    r = httpx.get(url + "/v2/_catalog", timeout=300)
    r.raise_for_status()
    got = len(r.json()["repositories"])
    assert got in (n, 100), got  # docker-registry answers 100 at most without `n`


def first_page(url: str) -> None:
    r = httpx.get(url + "/v2/_catalog?n=100", timeout=60)
    assert r.status_code == 200 and len(r.json()["repositories"]) == 100


def verdict(value: float, target: float, unit: str = "s") -> str:
    met = "MET" if value <= target else "NOT MET"
    return f"target at most {target:g} {unit}: ratio/target {value / target:.2f}, {met}"


def measure(n: int, rounds: int, baseline: str | None, work: Path) -> None:
    servers: list[Hangar] = []
    if baseline:
        populate(work / "before", n, baseline)
        shutil.copytree(work / "before", work / "after")
        servers.append(Hangar("before", work / "before", baseline))
    else:
        populate(work / "after", n, None)
    upgrade(work / "after")
    servers.append(Hangar("after" if baseline else "modelhangar", work / "after", None))
    registry_layout(work, n)
    starts: dict[str, list[tuple[float, float, float]]] = {s.label: [] for s in servers}
    for rnd in range(rounds):  # start-up, alternating; each server stopped again
        for s in servers if rnd % 2 == 0 else servers[::-1]:
            starts[s.label].append(s.start())
            s.stop()
    reg_url, reg_proc = start_registry(work)
    figures: dict[str, dict[str, list[float]]] = {s.label: {} for s in servers}
    figures["docker-registry"] = {}
    try:
        for s in servers:
            s.start()
        rss0 = {s.label: rss_mib(s.proc.pid, "VmRSS") for s in servers if s.proc}
        targets: list[tuple[str, str, Callable[[], object]]] = []
        for s in servers:
            targets += [
                (s.label, "tags", lambda u=s.url: read_tags(u, n)),
                (s.label, "catalog first page", lambda u=s.url: first_page(u)),
                (s.label, "catalog walk n=1000", lambda u=s.url: walk_catalog(u, n, 1000)),
                (s.label, "catalog whole", lambda u=s.url: whole_catalog(u, n)),
            ]
        targets += [
            ("docker-registry", "catalog first page", lambda: first_page(reg_url)),
            ("docker-registry", "catalog walk n=1000", lambda: walk_catalog(reg_url, n, 1000)),
        ]
        for rnd in range(rounds):
            for label, metric, fn in targets if rnd % 2 == 0 else targets[::-1]:
                figures[label].setdefault(metric, []).append(timed(fn))
        growth = {s.label: rss_mib(s.proc.pid, "VmHWM") - rss0[s.label] for s in servers if s.proc}
    finally:
        for s in servers:
            s.stop()
        stop(reg_proc)
    print(f"\n{n:,} models ({rounds} rounds, medians)")
    for s in servers:
        version = statistics.median(v for v, _, _ in starts[s.label])
        tags_first = statistics.median(t for _, t, _ in starts[s.label])
        cpu = statistics.median(c for _, _, c in starts[s.label])
        print(
            f"  {s.label:<16} start-up to /api/version {version:.3f} s ({cpu:.2f} CPU s),"
            f" to first whole /api/tags {tags_first:.3f} s; {verdict(version, STARTUP_TARGET_S)}"
        )
    for s in servers:
        f = figures[s.label]
        tags = statistics.median(f["tags"])
        print(
            f"  {s.label:<16} GET /api/tags {tags:.3f} s, peak memory {growth[s.label]:+.1f} MiB;"
            f" {verdict(tags, TAGS_TARGET_S)}; memory {verdict(growth[s.label], MEMORY_TARGET_MIB, 'MiB')}"
        )
    for metric in ("catalog first page", "catalog walk n=1000", "catalog whole"):
        peer = figures["docker-registry"].get(metric)
        for s in servers:
            ours = statistics.median(figures[s.label][metric])
            line = f"  {s.label:<16} GET /v2/_catalog {metric[8:]:<14} {ours:.3f} s"
            line += f"; {verdict(ours, CATALOG_TARGET_S)}"
            if peer:
                theirs = statistics.median(peer)
                line += f"; docker-registry {theirs:.3f} s, ratio {theirs / ours:.2f}x"
            print(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--baseline", help="the src directory of the code to compare with (e.g. main's)")
    args = ap.parse_args()
    if not shutil.which("docker-registry"):
        sys.exit("needs docker-registry (apt-get install docker-registry)")
    for n in (int(x) for x in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix="hangar-listings-") as tmp:
            measure(n, args.rounds, args.baseline and str(Path(args.baseline).resolve()), Path(tmp))


if __name__ == "__main__":
    main()
