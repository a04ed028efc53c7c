"""Transfer errors (worded as Ollama words them) and bounded reads of registry responses.

A registry's error body is never repeated to our client: the registry may be a service the
client could not reach itself (an internal host, or one a redirect pointed at), and its body
would carry that service's answer out. An error names the status and its standard reason only.
"""

from __future__ import annotations

import http
import ssl

import httpx

from modelhangar.core.errors import HangarError


class RegistryError(HangarError):
    """A pull or push failed; `status` is the HTTP status a non-streaming answer gets."""

    def __init__(self, message: str, *, status: int = 500) -> None:
        super().__init__(message)
        self.status = status


def read_bounded(response: httpx.Response, limit: int, too_large: str) -> bytes:
    """The (decoded) body, refusing more than `limit` bytes whatever the server claims."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RegistryError(too_large)
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) > limit:
            raise RegistryError(too_large)
    return bytes(body)


def reason(code: int) -> str:
    """The standard reason phrase of a status (never the one the registry sent)."""
    try:
        return http.HTTPStatus(code).phrase
    except ValueError:
        return "unknown status"


def check(response: httpx.Response, what: str) -> None:
    """Raise Ollama's errors for a failed registry request: 404 is `file does not exist`; a redirect
    (followed only for blob GETs, by the caller) is an error here."""
    code = response.status_code
    if code < 300:
        return
    if code < 400:
        raise RegistryError(f"{what}: unexpected redirect ({code} {reason(code)}), not followed")
    if code == 404:
        raise RegistryError(f"{what}: file does not exist", status=404)
    if code == 401:
        raise RegistryError("unauthorized: access denied", status=401)
    raise RegistryError(f"{what}: {code} {reason(code)}")


TRANSFER_ERRORS = (HangarError, OSError, httpx.HTTPError, httpx.InvalidURL)
"""What a pull or push may fail with; anything else is a bug."""

_PLAIN_HTTP = ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "HTTP_REQUEST", "PACKET_LENGTH_TOO_LONG")
"""OpenSSL's reasons when the other end of a TLS handshake answers in plain HTTP."""


def _address(e: httpx.RequestError) -> str:
    try:
        url = e.request.url
    except RuntimeError:  # raised without a request
        return "the registry"
    port = url.port or (443 if url.scheme == "https" else 80)
    host = f"[{url.host}]" if ":" in url.host else url.host
    return f"{host}:{port}"


def _cause(e: BaseException, kind: type[BaseException]) -> BaseException | None:
    seen: set[int] = set()
    c: BaseException | None = e
    while c is not None and id(c) not in seen:
        if isinstance(c, kind):
            return c
        seen.add(id(c))
        c = c.__cause__ or c.__context__
    return None


def transfer_error_text(e: BaseException) -> str:
    """What a failed pull or push says: a transport failure names the registry's host and port, and
    a registry that answered TLS in plain HTTP gets the advice to use `insecure` (README: pull, push)."""
    if not isinstance(e, httpx.TransportError):
        return str(e)
    where = _address(e)
    ssl_error = _cause(e, ssl.SSLError)
    if isinstance(ssl_error, ssl.SSLError):
        if ssl_error.reason in _PLAIN_HTTP:
            return f"the registry at {where} speaks plain HTTP; use --insecure to allow it"
        return f"TLS with the registry at {where} failed: {ssl_error.reason or ssl_error}"
    if isinstance(e, httpx.ConnectError):
        refused = _cause(e, OSError)
        why = refused.strerror if isinstance(refused, OSError) and refused.strerror else str(e)
        return f"cannot reach the registry at {where}: {why.lower() if why[:1].isupper() else why}"
    if isinstance(e, httpx.TimeoutException):
        return f"the registry at {where} did not answer in time"
    return f"the connection to the registry at {where} failed: {e}"
