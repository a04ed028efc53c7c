"""The registry face with the real `oras` 0.2.43 Python client against `hangar serve`."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from harness import ServerProcess, assert_store_consistent, blob_files

provider = pytest.importorskip("oras.provider", reason="oras is not installed (pip install oras==0.2.43)")


@pytest.fixture
def registry(server: ServerProcess) -> provider.Registry:
    return provider.Registry(hostname=server.host, insecure=True)


def test_push_pull_tags_delete(
    registry: provider.Registry,
    server: ServerProcess,
    home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)  # oras refuses to push files outside the working directory
    Path("model.bin").write_bytes(bytes(range(256)) * 64)
    Path("params.json").write_text('{"temperature": 0.5}')
    Path("big.bin").write_bytes(hashlib.sha256(b"seed").digest() * 200)  # 6400 bytes, chunked below
    target = f"{server.host}/lib/artifact"

    r = registry.push(target=f"{target}:v1", files=["model.bin", "params.json:application/json"])
    assert r.status_code == 201
    r = registry.push(target=f"{target}:v2", files=["big.bin"], do_chunked=True, chunk_size=1000)
    assert r.status_code == 201
    assert sorted(registry.get_tags(target)) == ["v1", "v2"]
    assert registry.get_tags(target, N=1) == ["v1"]
    manifest = registry.get_manifest(f"{target}:v1")
    assert [layer["annotations"]["org.opencontainers.image.title"] for layer in manifest["layers"]] == [
        "model.bin",
        "params.json",
    ]

    out = tmp_path / "out"
    pulled = registry.pull(target=f"{target}:v1", outdir=str(out))
    assert sorted(Path(p).name for p in pulled) == ["model.bin", "params.json"]
    assert (out / "model.bin").read_bytes() == Path("model.bin").read_bytes()
    assert (out / "params.json").read_text() == '{"temperature": 0.5}'
    registry.pull(target=f"{target}:v2", outdir=str(out))
    assert (out / "big.bin").read_bytes() == Path("big.bin").read_bytes()

    names = {m["name"] for m in httpx.get(f"{server.url}/api/tags").json()["models"]}
    assert {"lib/artifact:v1", "lib/artifact:v2"} <= names

    before = blob_files(home)
    assert registry.delete_tag(target, "v2") is True
    assert registry.get_tags(target) == ["v1"]
    assert registry.delete_tags(target, ["nope"]) == []
    big = "sha256-" + hashlib.sha256(Path("big.bin").read_bytes()).hexdigest()
    assert big in before and big not in blob_files(home)
    assert_store_consistent(home)
