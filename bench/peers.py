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


S3_KEY_ID, S3_SECRET, S3_REGION = "bench", "benchsecret", "us-east-1"


def start_s3(work: Path, bucket: str) -> tuple[str, subprocess.Popen[bytes]]:
    """moto's standalone S3 server on a free port, with `bucket` created: (endpoint URL, process)."""
    import boto3

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(url + "/moto-api/", proc)
    boto3.client(
        "s3",
        endpoint_url=url,
        region_name=S3_REGION,
        aws_access_key_id=S3_KEY_ID,
        aws_secret_access_key=S3_SECRET,
    ).create_bucket(Bucket=bucket)
    return url, proc


def s3_env(endpoint: str, url: str) -> dict[str, str]:
    """The environment of a `hangar serve` keeping its blobs at `url` (s3://BUCKET/PREFIX) on `endpoint`."""
    return {
        "HANGAR_BLOBS": url,
        "HANGAR_S3_PATH_STYLE": "1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": S3_REGION,
        "AWS_ACCESS_KEY_ID": S3_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
    }


def start_registry(
    work: Path, *, s3: tuple[str, str] | None = None, name: str = "registry"
) -> tuple[str, subprocess.Popen[bytes]]:
    """Debian's docker-registry on local files, or with `s3=(endpoint, bucket)` its `s3` storage driver
    (distribution 2.8's s3-aws: a `regionendpoint` means path-style addressing; it redirects blob
    GETs to presigned URLs by default, as modelhangar does with HANGAR_BLOB_REDIRECT=1)."""
    port = free_port()
    root = work / name
    root.mkdir(parents=True, exist_ok=True)
    config = work / f"{name}.yml"
    if s3 is None:
        storage = f"storage:\n  filesystem:\n    rootdirectory: {root}\n"
    else:
        storage = (
            f"storage:\n  s3:\n    region: {S3_REGION}\n    regionendpoint: {s3[0]}\n    bucket: {s3[1]}\n"
            f"    accesskey: {S3_KEY_ID}\n    secretkey: {S3_SECRET}\n    secure: false\n    v4auth: true\n"
            f"    rootdirectory: /{name}\n"
        )
    config.write_text(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"{storage}  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    # aws-sdk-go panics on AWS_CA_BUNDLE with its own transport; the endpoint is plain HTTP anyway
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
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
