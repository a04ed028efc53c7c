"""A small OCI distribution client (anonymous; plain HTTP only when asked to be insecure)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urljoin

import httpx

from modelhangar.core.manifests import DOCKER_V2, OCI_MANIFEST
from modelhangar.core.names import ModelName

MAX_MANIFEST = 4 << 20
CHUNK = 1 << 20
ACCEPT = ", ".join([DOCKER_V2, OCI_MANIFEST])


class RegistryError(Exception):
    """The remote registry refused or failed a request; the message is Ollama-style."""


class RegistryClient:
    """Talks to the registry a model name points at: `host[:port]/namespace/model:tag`."""

    def __init__(self, name: ModelName, *, insecure: bool) -> None:
        scheme = "http" if insecure else "https"
        if name.scheme == "http" and not insecure:
            raise RegistryError("insecure protocol http")
        self.base = f"{scheme}://{name.host}"
        self.repository = f"{name.namespace}/{name.model}"
        self.tag = name.tag
        self.http = httpx.Client(
            base_url=self.base, timeout=httpx.Timeout(60.0, connect=10.0), follow_redirects=True
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _path(self, kind: str, ref: str) -> str:
        return f"/v2/{self.repository}/{kind}/{ref}"

    def get_manifest(self) -> tuple[bytes, str]:
        with self.http.stream("GET", self._path("manifests", self.tag), headers={"Accept": ACCEPT}) as r:
            if r.status_code == 404:
                raise RegistryError("pull model manifest: file does not exist")
            if r.status_code >= 400:
                raise RegistryError(f"pull model manifest: {r.status_code}: {r.read()[:500]!r}")
            body = bytearray()
            for chunk in r.iter_bytes():
                body += chunk
                if len(body) > MAX_MANIFEST:
                    raise RegistryError("pull model manifest: manifest too large")
            return bytes(body), r.headers.get("content-type", DOCKER_V2).split(";")[0]

    @contextmanager
    def blob(self, digest: str, start: int = 0) -> Iterator[httpx.Response]:
        """The blob's bytes from `start` on (a 206); a 200 means the registry sent it whole."""
        headers = {"Range": f"bytes={start}-"} if start else {}
        with self.http.stream("GET", self._path("blobs", digest), headers=headers) as r:
            if r.status_code >= 400:
                raise RegistryError(f"pull blob {digest}: {r.status_code}")
            yield r

    def has_blob(self, digest: str) -> bool:
        r = self.http.head(self._path("blobs", digest))
        return r.status_code == 200

    def upload_blob(self, digest: str, path: Path) -> None:
        r = self.http.post(f"/v2/{self.repository}/blobs/uploads/")
        if r.status_code not in (201, 202):
            raise RegistryError(f"push blob {digest}: {r.status_code}")
        if r.status_code == 201:
            return
        location = urljoin(self.base + "/", r.headers["location"])
        sep = "&" if "?" in location else "?"

        def body() -> Iterator[bytes]:
            with open(path, "rb") as f:
                while chunk := f.read(CHUNK):
                    yield chunk

        size = path.stat().st_size
        r = self.http.put(
            f"{location}{sep}digest={digest}",
            content=body(),
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
        )
        if r.status_code != 201:
            raise RegistryError(f"push blob {digest}: {r.status_code}: {r.text[:300]}")

    def put_manifest(self, content: bytes, media_type: str) -> None:
        r = self.http.put(
            self._path("manifests", self.tag), content=content, headers={"Content-Type": media_type}
        )
        if r.status_code not in (200, 201):
            raise RegistryError(f"push manifest: {r.status_code}: {r.text[:300]}")
