"""A small OCI distribution client: manifests, blobs (with Range), uploads (with cross-repo mount).

Plain HTTP only when asked to be insecure. Anonymous: a registry answering 401 with a Bearer
challenge gets one token request, to a realm on its own host only (see `auth`). Every response
body we keep is size-bounded; blob bodies are bounded by their caller. Redirects are followed only
for blob GETs (registries on object storage answer those with a 307), only to http(s), at most
MAX_REDIRECTS, and never with the registry's token; every hop is checked where it connects (see
`net`). A registry's error bodies are never repeated in our answers.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import quote

import httpx

from modelhangar.core.digests import sha256_digest
from modelhangar.core.manifests import DOCKER_LIST, DOCKER_V2, OCI_INDEX, OCI_MANIFEST
from modelhangar.core.names import ModelName
from modelhangar.transfer.auth import fetch_token, parse_challenge, same_host
from modelhangar.transfer.errors import RegistryError, check, read_bounded

MAX_MANIFEST = 4 << 20
MAX_REDIRECTS = 3
MANIFEST_TYPES = (DOCKER_V2, OCI_MANIFEST, DOCKER_LIST, OCI_INDEX)
ACCEPT = ", ".join(MANIFEST_TYPES)
_UPLOAD_RANGE = re.compile(r"(?:bytes=)?0-(\d+)")
Body = bytes | Callable[[], Iterator[bytes]] | None
"""A request body: bytes, or a factory of chunks (called again if the request is retried)."""


@dataclass(frozen=True)
class RemoteManifest:
    content: bytes
    media_type: str | None
    """The Content-Type when it is a manifest type; else None (the body's `mediaType` decides)."""
    digest: str


class RegistryClient:
    """Talks to the registry a model name points at: `host[:port]/namespace/model:tag`."""

    def __init__(self, name: ModelName, *, insecure: bool, http: httpx.Client) -> None:
        if name.scheme not in (None, "http", "https"):
            raise RegistryError(f"unsupported protocol scheme {name.scheme!r}", status=400)
        if name.scheme == "http" and not insecure:
            raise RegistryError("insecure protocol http", status=400)
        try:
            self.base = httpx.URL(f"{'http' if insecure else 'https'}://{name.host}/")
        except httpx.InvalidURL as e:
            raise RegistryError(f"invalid registry host {name.host!r}", status=400) from e
        self.repository = f"{name.namespace}/{name.model}"
        self.tag = name.tag
        self._token: str | None = None
        self._lock = threading.Lock()
        self.http = http  # follows no redirect itself

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def url(self, kind: str, reference: str) -> httpx.URL:
        return self.base.join(f"/v2/{self.repository}/{kind}/{reference}")

    # ------------------------------------------------------------------ requests and tokens

    def _send(self, method: str, url: httpx.URL, headers: dict[str, str], body: Body) -> httpx.Response:
        sent = dict(headers)
        token = self._token
        if token is not None and same_host(url, self.base):
            sent["Authorization"] = f"Bearer {token}"
        content = body() if callable(body) else body
        request = self.http.build_request(method, url, headers=sent, content=content)
        return self.http.send(request, stream=True)

    def _refresh_token(self, challenge: dict[str, str], stale: str | None) -> None:
        with self._lock:
            if self._token == stale:  # else another thread already fetched a fresh one
                self._token = fetch_token(self.http, challenge, self.base)

    @contextmanager
    def request(
        self, method: str, url: httpx.URL, *, headers: dict[str, str] | None = None, body: Body = None
    ) -> Iterator[httpx.Response]:
        """A streamed response; a 401 Bearer challenge is answered once with an anonymous token."""
        stale = self._token
        response = self._send(method, url, headers or {}, body)
        try:
            if response.status_code == 401:
                challenge = parse_challenge(response.headers.get("www-authenticate", ""))
                if challenge is not None:
                    response.close()
                    self._refresh_token(challenge, stale)
                    response = self._send(method, url, headers or {}, body)
            yield response
        finally:
            response.close()

    # ------------------------------------------------------------------ manifests

    def get_manifest(self, reference: str) -> RemoteManifest:
        """The manifest's exact bytes (at most MAX_MANIFEST), checked against Docker-Content-Digest."""
        with self.request("GET", self.url("manifests", reference), headers={"Accept": ACCEPT}) as r:
            check(r, "pull model manifest")
            content = read_bounded(r, MAX_MANIFEST, "pull model manifest: manifest too large")
            content_type = r.headers.get("content-type", "").split(";")[0].strip()
            claimed = r.headers.get("docker-content-digest")
        digest = str(sha256_digest(content))
        if claimed and claimed != digest:
            raise RegistryError(f"pull model manifest: digest mismatch: want {claimed[:80]}, got {digest}")
        return RemoteManifest(content, content_type if content_type in MANIFEST_TYPES else None, digest)

    def put_manifest(self, content: bytes, media_type: str) -> str | None:
        """PUT the manifest byte for byte under the tag; the registry's Docker-Content-Digest, if any."""
        headers = {"Content-Type": media_type}
        with self.request("PUT", self.url("manifests", self.tag), headers=headers, body=content) as r:
            check(r, "push manifest")
            claimed: str | None = r.headers.get("docker-content-digest")
            return claimed

    # ------------------------------------------------------------------ blobs

    @contextmanager
    def blob(self, digest: str, start: int = 0) -> Iterator[httpx.Response]:
        """GET the blob from `start` on: a 206 if the registry honours the Range, a 200 if not.

        A 416 is handed back too (the caller starts over); other errors raise.
        """
        headers = {"Range": f"bytes={start}-"} if start else {}
        what = f"pull blob {digest}"
        with contextlib.ExitStack() as stack:
            r = stack.enter_context(self.request("GET", self.url("blobs", digest), headers=headers))
            for _ in range(MAX_REDIRECTS):
                if not r.is_redirect:
                    break
                target = self._redirect_target(r, what)
                r.close()
                request = self.http.build_request("GET", target, headers=headers)  # no token
                r = self.http.send(request, stream=True)
                stack.callback(r.close)
            if r.is_redirect:
                raise RegistryError(f"{what}: more than {MAX_REDIRECTS} redirects")
            if r.status_code != 416:
                check(r, what)
            yield r

    def _redirect_target(self, response: httpx.Response, what: str) -> httpx.URL:
        try:
            target = response.url.join(response.headers["location"])
        except (httpx.InvalidURL, KeyError):
            raise RegistryError(f"{what}: redirected to an invalid URL") from None
        if target.scheme not in ("http", "https") or not target.host:
            raise RegistryError(f"{what}: redirected to a URL that is not http(s)")
        if target.scheme == "http" and self.base.scheme == "https":
            raise RegistryError(f"{what}: redirected from https to plain http")
        return target

    def has_blob(self, digest: str) -> bool:
        with self.request("HEAD", self.url("blobs", digest)) as r:
            if r.status_code == 404:
                return False
            if r.is_redirect:  # to where the registry keeps it: present
                return True
            check(r, f"push blob {digest}")
            return True

    def start_upload(self, digest: str, mount_from: str | None = None) -> httpx.URL | None:
        """POST a new upload: None if the registry mounted the blob from `mount_from`, else its URL."""
        query = f"?mount={digest}&from={quote(mount_from, safe='/')}" if mount_from else ""
        with self.request("POST", self.base.join(f"/v2/{self.repository}/blobs/uploads/{query}")) as r:
            check(r, f"push blob {digest}")
            if r.status_code == 201:
                return None
            location = _session_url(r)
            if r.status_code != 202 or location is None:
                raise RegistryError(f"push blob {digest}: unexpected answer {r.status_code} to an upload")
            return location

    def upload_offset(self, location: httpx.URL) -> tuple[httpx.URL, int] | None:
        """Where an upload session stands: (its URL, bytes received), or None if it is gone.

        A `Range: 0-0` answer is read as empty (it is ambiguous with one byte; a chunk sent from 0
        to a session holding one byte is refused, and the caller starts a new session).
        """
        with self.request("GET", location) as r:
            if r.status_code not in (200, 204):
                return None
            m = _UPLOAD_RANGE.fullmatch(r.headers.get("range", "").strip())
            if m is None:
                return None
            end = int(m.group(1))
            return _session_url(r) or location, (end + 1 if end else 0)

    def send_chunk(self, location: httpx.URL, digest: str, start: int, size: int, body: Body) -> httpx.URL:
        """PATCH `size` bytes at offset `start` (`Content-Range: start-end`); the session's next URL."""
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(size),
            "Content-Range": f"{start}-{start + size - 1}",
        }
        with self.request("PATCH", location, headers=headers, body=body) as r:
            check(r, f"push blob {digest}")
            if r.status_code != 202:
                raise RegistryError(f"push blob {digest}: unexpected answer {r.status_code} to a chunk")
            return _session_url(r) or location

    def finish_upload(self, location: httpx.URL, digest: str, size: int, body: Body) -> None:
        """PUT the whole blob to the upload's URL (the digest in the query); expects a 201."""
        sep = "&" if location.query else "?"
        target = httpx.URL(f"{location}{sep}digest={digest}")
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        with self.request("PUT", target, headers=headers, body=body) as r:
            check(r, f"push blob {digest}")
            if r.status_code != 201:
                raise RegistryError(f"push blob {digest}: unexpected answer {r.status_code} to the upload")
            claimed = r.headers.get("docker-content-digest")
            if claimed and claimed != digest:
                raise RegistryError(f"push blob {digest}: the registry stored {claimed[:80]}")


def _session_url(response: httpx.Response) -> httpx.URL | None:
    """The upload session's (next) URL an answer names, resolved against the request's URL."""
    location = response.headers.get("docker-upload-location") or response.headers.get("location")
    return response.url.join(location) if location else None
