"""Routes of the OCI distribution API (spec v1.1) under `/v2/`, every answer in the spec's envelope.

One catch-all route parses the path itself, so a bad repository name is NAME_INVALID (not a
bare 404), an unsupported method is UNSUPPORTED, and no error, expected or not, escapes as a
plain-text 500 (oras retries a 500 for minutes).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from urllib.parse import quote, unquote

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from modelhangar.core.digests import InvalidDigest
from modelhangar.core.errors import (
    Denied,
    DigestMismatch,
    InvalidManifest,
    NotFound,
    QuotaExceeded,
    SizeMismatch,
    TooLarge,
    Unavailable,
)
from modelhangar.core.registry_tokens import Access
from modelhangar.faces.oci import blobs, manifests, tokens
from modelhangar.faces.oci.errors import OciError
from modelhangar.faces.oci.wire import repository_of

log = logging.getLogger("modelhangar.oci")

# Every method, so that unsupported ones get the envelope too.
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"]
API_VERSION = {"Docker-Distribution-API-Version": "registry/2.0"}
Handler = Callable[..., Awaitable[Response]]

# (path after /v2/, {method: handler}); the first full match wins, so the order matters.
_ENDPOINTS: list[tuple[re.Pattern[str], dict[str, Handler]]] = [
    (re.compile(r"token"), {"GET": tokens.token_endpoint, "POST": tokens.token_endpoint}),
    (re.compile(r"_catalog"), {"GET": manifests.catalog}),
    (re.compile(r"(?P<name>.+)/tags/list"), {"GET": manifests.list_tags}),
    (re.compile(r"(?P<name>.+)/referrers/(?P<digest>[^/]+)"), {"GET": manifests.list_referrers}),
    (
        re.compile(r"(?P<name>.+)/manifests/(?P<reference>[^/]+)"),
        {
            "GET": manifests.get_manifest,
            "HEAD": manifests.get_manifest,
            "PUT": manifests.put_manifest,
            "DELETE": manifests.delete_manifest,
        },
    ),
    (re.compile(r"(?P<name>.+)/blobs/uploads/?"), {"POST": blobs.start_upload}),
    (
        re.compile(r"(?P<name>.+)/blobs/uploads/(?P<upload_id>[^/]+)"),
        {
            "GET": blobs.upload_status,
            "PATCH": blobs.patch_upload,
            "PUT": blobs.finish_upload,
            "DELETE": blobs.cancel_upload,
        },
    ),
    (
        re.compile(r"(?P<name>.+)/blobs/(?P<digest>[^/]+)"),
        {"GET": blobs.get_blob, "HEAD": blobs.get_blob, "DELETE": blobs.delete_blob},
    ),
]


_PULL: frozenset[Handler] = frozenset(
    {manifests.list_tags, manifests.list_referrers, manifests.get_manifest, blobs.get_blob}
)
_DELETE: frozenset[Handler] = frozenset({manifests.delete_manifest, blobs.delete_blob})
_CATALOG = Access("registry", "catalog", ("*",))


def required(handler: Handler, params: dict[str, str]) -> Access | None:
    """What a route asks of a registry token (distribution's access items): reads pull, writes push;
    a delete takes `delete` or `push` (both are write access to the repository, `core/permissions.py`)."""
    if handler is manifests.catalog:
        return _CATALOG
    name = params.get("name")
    if name is None:
        return None
    if handler in _PULL:
        return Access("repository", name, ("pull",))
    if handler in _DELETE:
        return Access("repository", name, ("delete", "push"))
    return Access("repository", name, ("push",))


async def base(request: Request) -> Response:
    """The version check: this server speaks the distribution API; 401 with the token challenge
    until the client signs in (or, under HANGAR_AUTH=local, asks from this machine)."""
    try:
        tokens.authorize(request, None)
    except OciError as e:
        response = e.response()
        response.headers.update(API_VERSION)
        return response
    return JSONResponse({}, headers=API_VERSION)


def _resolve(path: str, method: str) -> tuple[Handler, dict[str, str]]:
    """The handler and its (decoded) parameters; a bad name is refused before a bad method."""
    for pattern, handlers in _ENDPOINTS:
        m = pattern.fullmatch(path)
        if m is None:
            continue
        params = {k: unquote(v) for k, v in m.groupdict().items()}
        if "name" in params:
            repository_of(params["name"])
        handler = handlers.get(method)
        if handler is None:
            allow = ", ".join(sorted(handlers))
            raise OciError(
                "UNSUPPORTED", f"method {method} not allowed here", {"allow": allow}, headers={"Allow": allow}
            )
        return handler, params
    raise OciError("UNSUPPORTED", "no such registry endpoint", {"path": path[:300]}, status=404)


def _as_oci_error(exc: Exception) -> OciError | None:
    """Core errors that reach the dispatcher, as the client errors they are."""
    if isinstance(exc, Unavailable):  # nothing half-written is kept: the client may retry
        return OciError("UNAVAILABLE", exc.advice, headers={"Retry-After": str(exc.retry_after)})
    if isinstance(exc, InvalidDigest):
        return OciError("DIGEST_INVALID", "invalid digest")
    if isinstance(exc, DigestMismatch):
        return OciError("DIGEST_INVALID", str(exc), {"expected": exc.expected, "actual": exc.actual})
    if isinstance(exc, InvalidManifest):
        return OciError("MANIFEST_INVALID", str(exc))
    if isinstance(exc, SizeMismatch):
        return OciError("SIZE_INVALID", str(exc))
    if isinstance(exc, TooLarge):
        return OciError("SIZE_INVALID", str(exc), status=413)
    if isinstance(exc, (Denied, QuotaExceeded)):
        return OciError("DENIED", str(exc))
    if isinstance(exc, NotFound):  # a repository the actor may not see is one that does not exist
        return OciError("NAME_UNKNOWN", str(exc))
    if isinstance(exc, ClientDisconnect):
        return OciError("BLOB_UPLOAD_INVALID", "the client went away before the body was complete")
    return None


def _raw_path(request: Request) -> str:
    """The path after `/v2/` as sent: an encoded `/` stays inside its segment (and is then refused)."""
    raw = request.scope.get("raw_path")
    path = raw.decode("latin-1").split("?", 1)[0] if raw else quote(request.url.path)
    return path.removeprefix(request.scope.get("root_path", "")).removeprefix("/v2/")


async def dispatch(request: Request) -> Response:
    path = _raw_path(request)
    try:
        handler, params = _resolve(path, request.method)
        if handler is not tokens.token_endpoint:
            tokens.authorize(request, required(handler, params))
        response = await handler(request, **params)
    except OciError as e:
        response = e.response()
    except Exception as e:  # never a bare 500: client errors are 4xx, server faults say so
        mapped = _as_oci_error(e)
        if mapped is None:
            log.exception("registry request %s /v2/%s failed", request.method, path)
            mapped = OciError("UNKNOWN", f"internal error: {type(e).__name__}")
        response = mapped.response()
    response.headers.update(API_VERSION)
    return response


def routes() -> list[BaseRoute]:
    return [
        Route("/v2", base, methods=["GET", "HEAD"]),
        Route("/v2/", base, methods=["GET", "HEAD"]),
        Route("/v2/{path:path}", dispatch, methods=_METHODS),
    ]
