"""The registry face with the real `skopeo` (docker:// transport, plain HTTP) against `hangar serve`."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness import ServerProcess, assert_store_consistent, blob_file, blob_files

SKOPEO = shutil.which("skopeo")
pytestmark = pytest.mark.skipif(SKOPEO is None, reason="skopeo is not installed (apt-get install skopeo)")


def put(root: Path, data: bytes) -> tuple[str, int]:
    hexd = hashlib.sha256(data).hexdigest()
    (root / "blobs" / "sha256" / hexd).write_bytes(data)
    return f"sha256:{hexd}", len(data)


def make_layout(root: Path, *, text: bytes, note: str) -> dict[str, Any]:
    """An OCI image layout holding one image tagged v1: a config (differs by `note`) and one gzip layer."""
    (root / "blobs" / "sha256").mkdir(parents=True)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as t:
        info = tarfile.TarInfo("hello.txt")
        info.size, info.mtime, info.mode = len(text), 0, 0o644
        t.addfile(info, io.BytesIO(text))
    layer_digest, layer_size = put(root, gzip.compress(raw.getvalue(), mtime=0))
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()]},
        "history": [{"created_by": note}],
    }
    config_digest, config_size = put(root, json.dumps(config, separators=(",", ":")).encode())
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config_size,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_digest,
                    "size": layer_size,
                }
            ],
        },
        separators=(",", ":"),
    ).encode()
    manifest_digest, manifest_size = put(root, manifest)
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest_size,
                "annotations": {"org.opencontainers.image.ref.name": "v1"},
            }
        ],
    }
    (root / "index.json").write_text(json.dumps(index))
    (root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    return {"manifest": manifest, "digest": manifest_digest, "config": config_digest, "layer": layer_digest}


def skopeo(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert SKOPEO is not None
    proc = subprocess.run(
        [SKOPEO, "--insecure-policy", *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    if check:
        assert proc.returncode == 0, f"skopeo {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_copy_inspect_list_delete(server: ServerProcess, home: Path, tmp_path: Path) -> None:
    hello = make_layout(tmp_path / "hello", text=b"hello from modelhangar\n", note="hello")
    other = make_layout(
        tmp_path / "other", text=b"hello from modelhangar\n", note="other"
    )  # shares the layer
    ref = f"docker://{server.host}/lib/hello:v1"
    skopeo("copy", "--dest-tls-verify=false", f"oci:{tmp_path / 'hello'}:v1", ref)
    skopeo(
        "copy",
        "--dest-tls-verify=false",
        f"oci:{tmp_path / 'other'}:v1",
        f"docker://{server.host}/lib/other:v1",
    )

    inspected = json.loads(skopeo("inspect", "--tls-verify=false", ref).stdout)
    assert inspected["Digest"] == hello["digest"] and inspected["Architecture"] == "amd64"
    assert skopeo("inspect", "--raw", "--tls-verify=false", ref).stdout.encode() == hello["manifest"]
    tags = json.loads(skopeo("list-tags", "--tls-verify=false", f"docker://{server.host}/lib/hello").stdout)
    assert tags["Tags"] == ["v1"]
    names = {m["name"] for m in httpx.get(f"{server.url}/api/tags").json()["models"]}
    assert {"lib/hello:v1", "lib/other:v1"} <= names

    back = tmp_path / "back"
    skopeo("copy", "--src-tls-verify=false", ref, f"oci:{back}:v1")
    for digest in (hello["config"], hello["layer"]):
        hexd = digest.removeprefix("sha256:")
        assert (back / "blobs" / "sha256" / hexd).read_bytes() == (
            tmp_path / "hello" / "blobs" / "sha256" / hexd
        ).read_bytes()

    skopeo("delete", "--tls-verify=false", ref)
    gone = skopeo("inspect", "--tls-verify=false", ref, check=False)
    # lib/hello keeps the shared layer it was pushed (a blob link), so it is the manifest that is unknown
    assert gone.returncode != 0 and "manifest unknown" in gone.stderr.lower(), gone.stderr
    names = {m["name"] for m in httpx.get(f"{server.url}/api/tags").json()["models"]}
    assert "lib/hello:v1" not in names and "lib/other:v1" in names
    on_disk = blob_files(home)
    assert blob_file(hello["config"]) not in on_disk  # unshared: gone (trash retention 0)
    assert blob_file(hello["layer"]) in on_disk  # still used by lib/other
    assert blob_file(other["config"]) in on_disk
    assert_store_consistent(home)
