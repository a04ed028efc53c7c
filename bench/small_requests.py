"""The small requests registry clients make most: modelhangar's /v2 against Debian's docker-registry.

Pushes one small image into each server, then loads each endpoint with `hey` (32 connections,
keep-alive) against both servers in turn, alternating which goes first, for several rounds.
Prints req/s and p99 of each (medians over the rounds), the ratio modelhangar/docker-registry and
the target (issue 16: at least 1.5x docker-registry's req/s, with a p99 no worse than its own).

    python bench/small_requests.py [--seconds 5] [--rounds 3] [--connections 32] [--database-url URL]
                                   [--before TREE]

With `--before TREE` (a checkout of an older commit, e.g. `git worktree add --detach /tmp/base main`)
that tree's modelhangar runs beside this one on its own catalog (a second database on PostgreSQL:
`--before-database-url`), in the same rounds, and its figures and this one's ratio to them are
printed too.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

from peers import before_src, start_hangar, start_registry, stop, verdict

MANIFEST_MT = "application/vnd.docker.distribution.manifest.v2+json"
TARGET = 1.5


def push_image(base: str, repo: str) -> tuple[str, str]:
    """One config and one layer blob, and a manifest tagged `v1`; returns (layer digest, manifest digest)."""
    with httpx.Client(base_url=base, timeout=60) as http:
        descriptors = []
        for data in (b'{"architecture":"amd64","os":"linux"}', b"layer bytes " * 1000):
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            r = http.post(f"/v2/{repo}/blobs/uploads/")
            r.raise_for_status()
            location = r.headers["location"]
            sep = "&" if "?" in location else "?"
            http.put(f"{location}{sep}digest={digest}", content=data).raise_for_status()
            descriptors.append({"mediaType": "application/octet-stream", "digest": digest, "size": len(data)})
        config, layer = descriptors
        config["mediaType"] = "application/vnd.docker.container.image.v1+json"
        layer["mediaType"] = "application/vnd.docker.image.rootfs.diff.tar.gzip"
        manifest = json.dumps(
            {"schemaVersion": 2, "mediaType": MANIFEST_MT, "config": config, "layers": [layer]}
        ).encode()
        http.put(
            f"/v2/{repo}/manifests/v1", content=manifest, headers={"Content-Type": MANIFEST_MT}
        ).raise_for_status()
        return str(layer["digest"]), "sha256:" + hashlib.sha256(manifest).hexdigest()


def hey(url: str, method: str, seconds: float, connections: int) -> tuple[float, float]:
    """(requests per second, p99 in ms) of `hey` against one URL; fails on any non-200 answer."""
    out = subprocess.run(
        [
            "hey",
            "-z",
            f"{seconds}s",
            "-c",
            str(connections),
            "-m",
            method,
            "-H",
            f"Accept: {MANIFEST_MT}",
            url,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"99%% in ([\d.]+) secs".replace("%%", "%"), out)
    codes = dict(re.findall(r"\[(\d{3})\]\s+(\d+) responses", out))
    if rps is None or p99 is None or set(codes) != {"200"}:
        raise RuntimeError(f"hey {method} {url}: unexpected output\n{out}")
    return float(rps.group(1)), float(p99.group(1)) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--database-url", help="modelhangar's catalog (default: SQLite under its data directory)")
    ap.add_argument("--before", help="also run the modelhangar of this source tree (before/after)")
    ap.add_argument("--before-database-url", help="the --before server's catalog (default: SQLite)")
    args = ap.parse_args()
    if not shutil.which("docker-registry") or not shutil.which("hey"):
        sys.exit("needs docker-registry and hey (apt-get install docker-registry hey)")
    repo = "bench/small"
    with tempfile.TemporaryDirectory(prefix="hangar-bench-") as tmp:
        work = Path(tmp)
        env = {"HANGAR_DATABASE_URL": args.database_url} if args.database_url else {}
        servers = {"modelhangar": start_hangar(work / "hangar", env), "docker-registry": start_registry(work)}
        if args.before:
            before_env = {"HANGAR_DATABASE_URL": args.before_database_url} if args.before_database_url else {}
            servers["before"] = start_hangar(work / "before", before_env, before_src(args.before))
        try:
            endpoints: dict[str, tuple[str, str]] = {}
            urls: dict[str, dict[str, str]] = {}
            for name, (base, _) in servers.items():
                layer, manifest = push_image(base, repo)
                urls[name] = {
                    "HEAD of a blob": f"{base}/v2/{repo}/blobs/{layer}",
                    "GET manifest by tag": f"{base}/v2/{repo}/manifests/v1",
                    "GET manifest by digest": f"{base}/v2/{repo}/manifests/{manifest}",
                    "GET /v2/": f"{base}/v2/",
                }
            endpoints = {
                "HEAD of a blob": ("HEAD", "reuse touch"),
                "GET manifest by tag": ("GET", "last-used time"),
                "GET manifest by digest": ("GET", ""),
                "GET /v2/": ("GET", "no store work"),
            }
            results: dict[str, dict[str, list[tuple[float, float]]]] = {n: {} for n in servers}
            order = list(servers)
            for rnd in range(args.rounds):
                for metric, (method, _) in endpoints.items():
                    for name in order if rnd % 2 == 0 else reversed(order):
                        got = hey(urls[name][metric], method, args.seconds, args.connections)
                        results[name].setdefault(metric, []).append(got)
            backend = "PostgreSQL" if args.database_url else "SQLite"
            print(
                f"small requests, {args.connections} connections, {args.rounds} rounds of {args.seconds:g}s "
                f"(modelhangar on {backend}; medians)"
            )
            print(f"{'':<24} {'modelhangar':>22} {'docker-registry':>22} {'ratio':>6}")
            for metric in endpoints:
                ours = results["modelhangar"][metric]
                theirs = results["docker-registry"][metric]
                o_rps, o_p99 = statistics.median(r for r, _ in ours), statistics.median(p for _, p in ours)
                t_rps, t_p99 = (
                    statistics.median(r for r, _ in theirs),
                    statistics.median(p for _, p in theirs),
                )
                ratio = o_rps / t_rps
                line = (
                    f"{metric:<24} {o_rps:>8.0f} req/s p99 {o_p99:>5.0f} ms"
                    f" {t_rps:>8.0f} req/s p99 {t_p99:>5.0f} ms {ratio:>6.2f}"
                )
                if metric != "GET /v2/":
                    p99_ok = "p99 ok" if o_p99 <= t_p99 else "p99 WORSE"
                    line += f"  {verdict(ratio, TARGET)}, {p99_ok}"
                print(line)
            if "before" in results:
                print(f"\n{'after / before':<24} {'before':>22} {'after':>22} {'ratio':>6}")
                for metric in endpoints:
                    b, a = results["before"][metric], results["modelhangar"][metric]
                    b_rps, b_p99 = statistics.median(r for r, _ in b), statistics.median(p for _, p in b)
                    a_rps, a_p99 = statistics.median(r for r, _ in a), statistics.median(p for _, p in a)
                    print(
                        f"{metric:<24} {b_rps:>8.0f} req/s p99 {b_p99:>5.0f} ms"
                        f" {a_rps:>8.0f} req/s p99 {a_p99:>5.0f} ms {a_rps / b_rps:>6.2f}"
                    )
        finally:
            for _, proc in servers.values():
                stop(proc)


if __name__ == "__main__":
    main()
