"""The Replicate tests' site: a server, its users' tokens, and pushing versions as `cog push` does."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from harness import ServerProcess


@dataclass
class Site:
    home: Path
    server: ServerProcess
    tokens: dict[str, str]
    work: Path

    def client(self, user: str) -> Any:
        import replicate

        return replicate.Client(api_token=self.tokens[user], base_url=self.server.url)

    def http(self, user: str | None) -> httpx.Client:
        headers = {} if user is None else {"Authorization": f"Bearer {self.tokens[user]}"}
        return httpx.Client(base_url=self.server.url, headers=headers, timeout=30)

    def push(
        self,
        user: str,
        model: str,
        seed: str,
        *,
        tag: str = "latest",
        labels: dict[str, str] | None = None,
        shared: bytes | None = None,
    ) -> str:
        """Push an image (one unique layer, plus `shared` if given) to `/v2/<model>` the way `cog push`
        does, with oras signing in as `user` (its token as the password); returns the version id."""
        return push_image(self, user, model, seed, tag=tag, labels=labels, shared=shared)


def push_image(
    site: Site,
    user: str,
    model: str,
    seed: str,
    *,
    tag: str,
    labels: dict[str, str] | None,
    shared: bytes | None,
) -> str:
    import oras.provider

    d = site.work / f"push-{hashlib.sha256(f'{model}{seed}{tag}'.encode()).hexdigest()[:12]}"
    d.mkdir(parents=True, exist_ok=True)
    layer = d / "weights.bin"
    layer.write_bytes(f"weights of {model} {seed}\n".encode() * 64)
    files = [str(layer)]
    if shared is not None:
        common = d / "common.bin"
        common.write_bytes(shared)
        files.append(str(common))
    config = d / "config.json"
    config.write_text(
        json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {"Labels": labels or {}},
                "rootfs": {"type": "layers", "diff_ids": []},
            }
        )
    )
    reg = oras.provider.Registry(hostname=site.server.host, insecure=True, auth_backend="basic")
    reg.auth.set_basic_auth(user, site.tokens[user])
    target = f"{site.server.host}/{model}:{tag}"
    response = reg.push(
        target=target,
        files=files,
        manifest_config=f"{config}:application/vnd.oci.image.config.v1+json",
        disable_path_validation=True,
    )
    assert response.status_code == 201, response.text
    digest: str = response.headers["Docker-Content-Digest"]
    return digest.removeprefix("sha256:")
