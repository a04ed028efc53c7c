"""Small HTTP servers for transfer tests: a scripted registry, and a throttling relay."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

DOCKER_V2 = "application/vnd.docker.distribution.manifest.v2+json"
OLLAMA_CONFIG = "application/vnd.docker.container.image.v1+json"
OLLAMA_MODEL = "application/vnd.ollama.image.model"
_MANIFEST = re.compile(r"/v2/([^/]+/[^/]+)/manifests/([^/]+)")
_BLOB = re.compile(r"/v2/([^/]+/[^/]+)/blobs/([^/]+)")
_UPLOADS = re.compile(r"/v2/([^/]+/[^/]+)/blobs/uploads/")


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def ollama_manifest(config: bytes, layers: list[bytes], **layer_extra: Any) -> bytes:
    """An Ollama-style Docker v2 manifest naming `config` and `layers`."""
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_V2,
            "config": {"mediaType": OLLAMA_CONFIG, "digest": digest_of(config), "size": len(config)},
            "layers": [
                {"mediaType": OLLAMA_MODEL, "digest": digest_of(b), "size": len(b), **layer_extra}
                for b in layers
            ],
        }
    ).encode()


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    sent: int = 0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: Any


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.owner.handle(self)

    do_HEAD = do_POST = do_PUT = do_PATCH = do_GET

    def answer(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> int:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        return len(body)

    def body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("content-length") or 0))


class _Base:
    def __init__(self) -> None:
        self.requests: list[Seen] = []
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.owner = self
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def handle(self, h: _Handler) -> None:
        seen = Seen(h.command, h.path, {k.lower(): v for k, v in h.headers.items()})
        self.requests.append(seen)
        seen.sent = self.serve(h)

    def serve(self, h: _Handler) -> int:
        raise NotImplementedError


@dataclass
class Script:
    """What a FakeRegistry serves and how it behaves."""

    manifests: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # "ns/model:ref" -> body, type
    blobs: dict[str, bytes] = field(default_factory=dict)
    token: str | None = None  # require `Authorization: Bearer <token>` on /v2/
    realm: str | None = None  # the challenge's realm (default: this server's /token)
    ranges: bool = True
    oversize: bytes = b""  # appended to every blob body
    mount_only: set[str] = field(default_factory=set)  # blobs GET/HEAD call unknown, though mountable
    blob_store: Any = None  # a FakeRegistry serving blob GETs at /cdn/<digest>: GETs answer 307 there


class FakeRegistry(_Base):
    """A scripted registry (manifests, blobs, monolithic uploads, mounts, Bearer challenges)."""

    def __init__(self) -> None:
        self.script = Script()
        self.uploads: dict[str, str] = {}
        super().__init__()

    def add_model(self, repo_tag: str, config: bytes, layers: list[bytes], **layer_extra: Any) -> bytes:
        manifest = ollama_manifest(config, layers, **layer_extra)
        self.script.manifests[repo_tag] = (manifest, DOCKER_V2)
        for b in (config, *layers):
            self.script.blobs[digest_of(b)] = b
        return manifest

    def blob_requests(self) -> list[Seen]:
        return [r for r in self.requests if "/blobs/" in r.path]

    def serve(self, h: _Handler) -> int:
        s = self.script
        url = urlsplit(h.path)
        if url.path == "/token":
            return h.answer(200, json.dumps({"token": s.token}).encode())
        if url.path.startswith("/cdn/") and url.path[5:] in s.blobs:  # no auth: a signed-URL store
            return self._blob(h, s.blobs[url.path[5:]])
        if s.token and h.headers.get("authorization") != f"Bearer {s.token}":
            realm = s.realm or f"http://{self.host}/token"
            challenge = f'Bearer realm="{realm}",service="fake",scope="repository:x:pull"'
            return h.answer(401, b'{"errors":[]}', {"WWW-Authenticate": challenge})
        if m := _MANIFEST.fullmatch(url.path):
            return self._manifest(h, f"{m.group(1)}:{m.group(2)}")
        if m := _UPLOADS.fullmatch(url.path):
            return self._start_upload(h, m.group(1), parse_qs(url.query))
        if url.path.startswith("/upload/") and h.command == "PUT":
            data = h.body()
            digest = parse_qs(url.query)["digest"][0]
            assert digest_of(data) == digest, "a pushed blob does not match its digest"
            s.blobs[digest] = data
            return h.answer(201, headers={"Docker-Content-Digest": digest})
        if (m := _BLOB.fullmatch(url.path)) and m.group(2) in s.blobs and m.group(2) not in s.mount_only:
            if s.blob_store is not None and h.command == "GET":
                s.blob_store.script.blobs[m.group(2)] = s.blobs[m.group(2)]
                return h.answer(307, headers={"Location": f"http://{s.blob_store.host}/cdn/{m.group(2)}"})
            return self._blob(h, s.blobs[m.group(2)] + s.oversize)
        return h.answer(404, b'{"errors":[{"code":"NOT_FOUND"}]}')

    def _manifest(self, h: _Handler, key: str) -> int:
        if h.command == "PUT":
            self.script.manifests[key] = (h.body(), h.headers.get("content-type", ""))
            return h.answer(201, headers={"Docker-Content-Digest": digest_of(self.script.manifests[key][0])})
        if key not in self.script.manifests:
            return h.answer(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')
        body, media_type = self.script.manifests[key]
        return h.answer(200, body, {"Content-Type": media_type})

    def _start_upload(self, h: _Handler, repo: str, query: dict[str, list[str]]) -> int:
        h.body()
        mount = query.get("mount", [""])[0]
        if mount and mount in self.script.blobs and query.get("from"):
            return h.answer(201, headers={"Docker-Content-Digest": mount})
        upload = uuid.uuid4().hex
        self.uploads[upload] = repo
        return h.answer(202, headers={"Location": f"/upload/{upload}?_state=a%3Db"})

    def _blob(self, h: _Handler, data: bytes) -> int:
        m = re.fullmatch(r"bytes=(\d+)-", h.headers.get("range") or "")
        if m and self.script.ranges:
            start = int(m.group(1))
            if start >= len(data):
                return h.answer(416)
            return h.answer(
                206, data[start:], {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
            )
        return h.answer(200, data)


class Relay(_Base):
    """Forwards GET/HEAD to `upstream`, at most `rate` bytes/s; a dead upstream cuts the response."""

    def __init__(self, upstream: str, rate: float | None = None) -> None:
        self.upstream = upstream
        self.rate = rate
        super().__init__()

    def serve(self, h: _Handler) -> int:
        headers = {k: v for k, v in h.headers.items() if k.lower() in ("accept", "range", "authorization")}
        sent, started = 0, False
        try:
            with httpx.stream(h.command, self.upstream + h.path, headers=headers, timeout=30) as r:
                h.send_response(r.status_code)
                for k in ("content-length", "content-type", "content-range", "docker-content-digest"):
                    if k in r.headers:
                        h.send_header(k, r.headers[k])
                h.end_headers()
                started = True
                for chunk in r.iter_raw(64 << 10):
                    h.wfile.write(chunk)
                    sent += len(chunk)
                    if self.rate:
                        time.sleep(len(chunk) / self.rate)
        except httpx.HTTPError:
            if not started:
                return h.answer(502)
            h.close_connection = True  # the client sees a short body, as from a crashed server
        return sent
