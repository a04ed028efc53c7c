"""Blob upload and download speed: modelhangar's /v2 against Debian's docker-registry, side by side.

Same client for both (curl, so the client is not the bottleneck), same machine, same run,
several rounds. Prints MB/s for each and the ratio modelhangar/docker-registry, plus the
machine's sha256 throughput (the ceiling for a verified upload).

    python bench/blob_throughput.py [--big-mib 256] [--small 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def start_hangar(work: Path) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    env = {**os.environ, "HANGAR_HOME": str(work / "hangar"), "HANGAR_GC_INTERVAL": "24h"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelhangar.cli.main", "serve", "--host", f"127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(url + "/v2/", proc)
    return url, proc


def start_registry(work: Path) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    (work / "registry").mkdir()
    config = work / "registry.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {work / 'registry'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(url + "/v2/", proc)
    return url, proc


def curl(*args: str) -> str:
    out = subprocess.run(["curl", "-sS", "-f", *args], check=True, capture_output=True, text=True)
    return out.stdout


def upload(base: str, repo: str, path: Path, digest: str) -> None:
    """POST a session, then PUT the whole blob with ?digest= (the monolithic two-step upload)."""
    headers = curl("-D", "-", "-o", "/dev/null", "-X", "POST", f"{base}/v2/{repo}/blobs/uploads/")
    location = next(
        line.split(":", 1)[1].strip() for line in headers.splitlines() if line.lower().startswith("location:")
    )
    if location.startswith("/"):
        location = base + location
    sep = "&" if "?" in location else "?"
    curl(
        "-o", "/dev/null", "-X", "PUT", "-H", "Content-Type: application/octet-stream",
        "--data-binary", f"@{path}", f"{location}{sep}digest={digest}",
    )


def download(base: str, repo: str, digest: str) -> None:
    curl("-L", "-o", "/dev/null", f"{base}/v2/{repo}/blobs/{digest}")


def timed(fn: Callable[[], None]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def sha256_rate(path: Path) -> float:
    h = hashlib.sha256()
    t = time.perf_counter()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return path.stat().st_size / (time.perf_counter() - t) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--big-mib", type=int, default=256)
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument("--small-kib", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if not shutil.which("docker-registry") or not shutil.which("curl"):
        sys.exit("needs docker-registry and curl (apt-get install docker-registry curl)")
    with tempfile.TemporaryDirectory(prefix="hangar-bench-") as tmp:
        work = Path(tmp)
        servers = {"modelhangar": start_hangar(work), "docker-registry": start_registry(work)}
        try:
            results: dict[str, dict[str, list[float]]] = {name: {} for name in servers}
            for rnd in range(args.rounds):
                big = work / f"big-{rnd}"
                big.write_bytes(os.urandom(args.big_mib << 20))
                big_digest = "sha256:" + hashlib.sha256(big.read_bytes()).hexdigest()
                smalls = []
                for i in range(args.small):
                    p = work / f"small-{rnd}-{i}"
                    data = os.urandom(args.small_kib << 10)
                    p.write_bytes(data)
                    smalls.append((p, "sha256:" + hashlib.sha256(data).hexdigest()))
                for name, (base, _) in servers.items():
                    repo = f"bench/r{rnd}"
                    r = results[name]
                    secs = timed(lambda: upload(base, repo, big, big_digest))  # noqa: B023
                    r.setdefault("big up MB/s", []).append(big.stat().st_size / secs / 1e6)
                    secs = timed(lambda: download(base, repo, big_digest))  # noqa: B023
                    r.setdefault("big down MB/s", []).append(big.stat().st_size / secs / 1e6)
                    total = sum(p.stat().st_size for p, _ in smalls)
                    secs = timed(lambda: [upload(base, repo, p, d) for p, d in smalls])  # noqa: B023
                    r.setdefault("small up MB/s", []).append(total / secs / 1e6)
                    secs = timed(lambda: [download(base, repo, d) for _, d in smalls])  # noqa: B023
                    r.setdefault("small down MB/s", []).append(total / secs / 1e6)
                big.unlink()
                for p, _ in smalls:
                    p.unlink()
            probe = work / "probe"
            probe.write_bytes(os.urandom(64 << 20))
            print(f"sha256 on this machine: {sha256_rate(probe):.0f} MB/s (ceiling for a verified upload)")
            print(f"{'metric':<18} {'modelhangar':>12} {'docker-registry':>16} {'ratio':>7}")
            for metric in results["modelhangar"]:
                ours = statistics.median(results["modelhangar"][metric])
                theirs = statistics.median(results["docker-registry"][metric])
                print(f"{metric:<18} {ours:>12.1f} {theirs:>16.1f} {ours / theirs:>7.2f}")
        finally:
            for _, proc in servers.values():
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)


if __name__ == "__main__":
    main()
