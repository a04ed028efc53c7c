"""Requests a web page makes on a user's behalf, and request bodies too large to hold: refused at the door.

One ASGI middleware in front of every face:

* DNS rebinding (CVE-2024-28224): a server bound to a loopback address (127.0.0.0/8, ::1,
  localhost) answers only requests whose one `Host` names a local address, as Ollama does.
* Cross-site requests: a request whose `Origin` is neither the server's own nor allowed
  (HANGAR_ORIGINS plus Ollama's defaults) is refused with 403, whatever its method; allowed
  origins get CORS headers (and preflights an answer). A request carrying an `Origin` must
  declare a JSON body as JSON, so a page cannot slip one past the CORS preflight as `text/plain`.
* Request bodies other than blob uploads are capped (HANGAR_MAX_BODY): 413 before a byte is
  read when the length is declared, else as soon as the cap is passed.

Every refusal is worded in the face's own error format.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from email.message import Message
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as AsgiMessage

from modelhangar.core.config import Settings
from modelhangar.core.errors import TooLarge, Unavailable

OLLAMA_ORIGINS = (
    *(
        f"{scheme}://{host}{port}"
        for host in ("localhost", "127.0.0.1", "0.0.0.0")
        for scheme in ("http", "https")
        for port in ("", ":*")
    ),
    "app://*",
    "file://*",
    "tauri://*",
    "vscode-webview://*",
)
"""Ollama's default allowed origins (`envconfig.AllowedOrigins`)."""
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_OCI_CODES = {
    400: "UNSUPPORTED",
    401: "UNAUTHORIZED",
    403: "DENIED",
    413: "SIZE_INVALID",
    415: "UNSUPPORTED",
    503: "UNAVAILABLE",
}


def face_of(path: str) -> str:
    """The face that serves `path`: the one map of paths to faces (errors, credentials, audit)."""
    if path.startswith("/api/hangar"):
        return "hangar"
    if path.startswith("/api/"):
        return "ollama"
    if path == "/v2" or path.startswith("/v2/"):
        return "oci"
    if path == "/v1" or path.startswith("/v1/"):
        return "replicate"
    if path == "/ui" or path.startswith("/ui/"):
        return "web"
    if path.startswith("/_"):  # /_plugins, /_cluster, /_ingest, /_search and OpenSearch's other routes
        return "opensearch"
    return "http"


def error_response(path: str, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """An error in the format of the face that serves `path`."""
    face = face_of(path)
    if face == "oci":
        body: Any = {
            "errors": [{"code": _OCI_CODES.get(status, "UNKNOWN"), "message": message, "detail": {}}]
        }
        headers = {"Docker-Distribution-API-Version": "registry/2.0", **(headers or {})}
    elif face == "opensearch":
        from modelhangar.faces.opensearch.wire import error_for

        return error_for(status, message, headers)
    elif face == "replicate":  # Replicate's problem details
        titles = {401: "Unauthenticated", 403: "Forbidden", 404: "Not found", 405: "Method not allowed"}
        body = {"title": titles.get(status, "Error"), "detail": message, "status": status}
        return JSONResponse(body, status_code=status, headers=headers, media_type="application/problem+json")
    elif face == "web":
        from html import escape

        from starlette.responses import HTMLResponse

        page = (
            '<!doctype html><html lang="en"><meta charset="utf-8"><title>modelhangar: error</title>'
            f'<h1>{status}</h1><p>{escape(message)}</p><p><a href="/ui/">modelhangar</a></p></html>'
        )
        return HTMLResponse(page, status_code=status, headers=headers)
    elif face == "hangar" or path in ("/docs", "/redoc", "/openapi.json"):
        body = {"detail": message}
    else:
        body = {"error": message}
    return JSONResponse(body, status_code=status, headers=headers)


def unavailable(path: str, exc: Unavailable) -> Response:
    """A service the store needs gone for now (`core.errors.Unavailable`): 503 with `Retry-After`, in the
    format of the face that serves `path`."""
    return error_response(path, 503, exc.advice, {"Retry-After": str(exc.retry_after)})


def is_blob_upload(path: str) -> bool:
    """Paths whose bodies are blobs (streamed to disk, never held): not capped, not JSON."""
    return (
        path.startswith("/api/blobs/")
        or (path.startswith("/v2/") and "/blobs/" in path)
        or ML_CHUNK.fullmatch(path) is not None  # capped by the face at ML Commons' 10 MB per chunk
    )


ML_CHUNK = re.compile(r"/_plugins/_ml/models/[^/]+/(?:upload_chunk|chunk)/[^/]+/?")


def is_web_form(path: str) -> bool:
    """The web UI's own forms: sent from its pages (same origin) and carrying a CSRF token each."""
    return path.startswith("/ui/")


def is_loopback(host: str) -> bool:
    """Whether a bind address is a loopback one: 127.0.0.0/8, ::1 or localhost."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(value: str) -> str | None:
    """The name in a `Host` header (`name`, `name:port`, `[v6]`, `[v6]:port`), None if malformed."""
    if value.startswith("["):
        addr, sep, rest = value[1:].partition("]")
        if not sep or (rest and not re.fullmatch(r":\d{1,5}", rest)):
            return None
        return addr.lower()
    name, sep, port = value.rpartition(":")
    if not sep:
        return value.lower()
    if ":" in name or not port.isdigit():  # a bare IPv6 address is not a valid Host
        return None
    return name.lower()


def is_local_name(name: str) -> bool:
    """Ollama's rule for a loopback-bound server: local names and local or private addresses only."""
    if name in ("", "localhost", socket.gethostname().lower()):
        return True
    if name.endswith((".localhost", ".local", ".internal")):
        return True
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_unspecified


def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(p) for p in pattern.lower().split("*")))


def declares_json(content_type: str) -> bool:
    message = Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


class Guards:
    """The middleware: host, origin, content type and body size, in that order."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.check_host = is_loopback(settings.host)
        self.origins = [_glob(p) for p in (*OLLAMA_ORIGINS, *settings.origins)]
        self.max_body = settings.max_body

    def origin_allowed(self, origin: str, host: str) -> bool:
        o = origin.lower()
        if o in (f"http://{host.lower()}", f"https://{host.lower()}"):
            return True
        return any(p.fullmatch(o) for p in self.origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        raw = scope["headers"]
        hosts = [v for k, v in raw if k == b"host"]
        if len(hosts) > 1:
            await error_response(path, 400, "several Host headers")(scope, receive, send)
            return
        host = hosts[0].decode("latin-1") if hosts else ""
        if self.check_host:
            name = host_name(host)
            if name is None or not is_local_name(name):
                await error_response(path, 403, "forbidden host")(scope, receive, send)
                return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        cors: dict[str, str] = {}
        if origin is not None:
            if not self.origin_allowed(origin, host):
                await error_response(path, 403, "forbidden origin")(scope, receive, send)
                return
            cors = {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
            method = scope["method"]
            if method == "OPTIONS" and "access-control-request-method" in headers:
                await self._preflight(headers, cors)(scope, receive, send)
                return
            has_body = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
            if (
                method in UNSAFE_METHODS
                and has_body
                and not is_blob_upload(path)
                and not is_web_form(path)
                and not declares_json(headers.get("content-type", ""))
            ):
                message = "a request from a web page must declare its JSON body as application/json"
                await error_response(path, 415, message, cors)(scope, receive, send)
                return
            send = _with_headers(send, cors)
        if is_blob_upload(path):
            await self.app(scope, receive, send)
            return
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            await self._too_large(path, cors)(scope, receive, send)
            return
        await self._capped(scope, receive, send, cors)

    @staticmethod
    def _preflight(headers: Headers, cors: dict[str, str]) -> Response:
        allow = {
            **cors,
            "Access-Control-Allow-Methods": "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS",
            "Access-Control-Max-Age": "43200",
        }
        requested = headers.get("access-control-request-headers")
        if requested:
            allow["Access-Control-Allow-Headers"] = requested
        return Response(status_code=204, headers=allow)

    def _too_large(self, path: str, cors: dict[str, str]) -> Response:
        message = f"request body is larger than the {self.max_body}-byte limit (HANGAR_MAX_BODY)"
        return error_response(path, 413, message, {**cors, "Connection": "close"})

    async def _capped(self, scope: Scope, receive: Receive, send: Send, cors: dict[str, str]) -> None:
        """Run the app with a receive that refuses bytes past the cap; then answer 413 instead of
        whatever the app made of the refusal."""
        received = 0
        over = started = False

        async def capped_receive() -> AsgiMessage:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    over = True
                    raise TooLarge(self.max_body)
            return message

        async def guarded_send(message: AsgiMessage) -> None:
            nonlocal started
            if over and not started:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, capped_receive, guarded_send)
        except Exception:
            if not over or started:
                raise
        if over and not started:
            await self._too_large(scope["path"], cors)(scope, receive, send)


def _with_headers(send: Send, extra: dict[str, str]) -> Send:
    encoded = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]

    async def sending(message: AsgiMessage) -> None:
        if message["type"] == "http.response.start":
            names = {k for k, _ in message.get("headers", [])}
            message = {
                **message,
                "headers": [*message.get("headers", []), *(h for h in encoded if h[0] not in names)],
            }
        await send(message)

    return sending
