"""Transfer errors (worded as Ollama words them) and bounded reads of registry responses."""

from __future__ import annotations

import httpx

from modelhangar.core.errors import HangarError

MAX_ERROR_BODY = 4 << 10


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


def error_text(response: httpx.Response) -> str:
    """At most a few KiB of an error body, on one line."""
    body = bytearray()
    try:
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) >= MAX_ERROR_BODY:
                break
    except httpx.HTTPError:
        pass
    return " ".join(body[:MAX_ERROR_BODY].decode("utf-8", "replace").split())


def check(response: httpx.Response, what: str) -> None:
    """Raise Ollama's errors for a failed registry request: 404 is `file does not exist`."""
    code = response.status_code
    if code < 400:
        return
    if code == 404:
        raise RegistryError(f"{what}: file does not exist", status=404)
    if code == 401:
        raise RegistryError("unauthorized: access denied", status=401)
    raise RegistryError(f"{what}: {code}: {error_text(response)}")


TRANSFER_ERRORS = (HangarError, OSError, httpx.HTTPError, httpx.InvalidURL)
"""What a pull or push may fail with; anything else is a bug."""
