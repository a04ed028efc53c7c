"""Servers side by side for the benchmarks: `hangar serve` and Debian's docker-registry on free ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> float:
    """Poll `url` until it answers below 500; returns the seconds it took."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return time.perf_counter() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.005)
    proc.kill()
    raise RuntimeError(f"{url} did not come up")


def start_hangar(
    home: Path, env: dict[str, str] | None = None, src: Path | None = None
) -> tuple[str, subprocess.Popen[bytes]]:
    """`hangar serve` on a free port; with `src`, the modelhangar of that source tree (a `src/`
    directory, e.g. a worktree of an older commit: `--before` of the benchmarks) instead of this one."""
    port = free_port()
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("HANGAR_")}
    if src is not None:
        child_env["PYTHONPATH"] = os.pathsep.join([str(src), *filter(None, [os.environ.get("PYTHONPATH")])])
    child_env.update({"HANGAR_HOME": str(home), "HANGAR_GC_INTERVAL": "24h", "HANGAR_LOG_LEVEL": "warning"})
    child_env.update(env or {})
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelhangar.cli.main", "serve", "--host", f"127.0.0.1:{port}"],
        env=child_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(url + "/v2/", proc)
    return url, proc


def start_registry(work: Path) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    root = work / "registry"
    root.mkdir(parents=True, exist_ok=True)
    config = work / "registry.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(url + "/v2/", proc)
    return url, proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def before_src(tree: str | None) -> Path | None:
    """The `src/` of a `--before` source tree (checked), or None."""
    if tree is None:
        return None
    src = Path(tree) / "src"
    if not (src / "modelhangar").is_dir():
        raise SystemExit(f"--before {tree}: no src/modelhangar there")
    return src


def verdict(ratio: float, target: float) -> str:
    return f"target >= {target:g}x: {'MET' if ratio >= target else 'NOT MET'}"
