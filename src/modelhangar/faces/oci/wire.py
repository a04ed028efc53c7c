"""Registry wire conventions: names, references, digests, ranges, pagination, URLs, blob bodies."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Iterable
from typing import BinaryIO, Literal
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from modelhangar.core.digests import InvalidDigest, parse_digest
from modelhangar.core.names import DEFAULT_HOST
from modelhangar.faces.oci.errors import OciError

MAX_NAME = 255
SEND_CHUNK = 4 << 20
"""Blob bodies are read in pieces of this size: 4 MiB serves ~30% faster than 1 MiB on loopback."""
NAME_RE = re.compile(r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*")
TAG_RE = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
_CONTENT_RANGE = re.compile(r"(?:bytes[ =])?(\d{1,19})-(\d{1,19})(?:/(?:\d{1,19}|\*))?")
_RANGE = re.compile(r"bytes=(\d{0,19})-(\d{0,19})")
PREFIX = DEFAULT_HOST + "/"
"""What OCI names are under in the catalog (`library/tiny` is `registry.ollama.ai/library/tiny`)."""


def repository_of(name: str) -> str:
    """The catalog repository of an OCI repository name: `library/tiny` is `registry.ollama.ai/library/tiny`,
    so what the Ollama face calls `tiny` is pulled as `/v2/library/tiny/...`. Raises NAME_INVALID."""
    if len(name) > MAX_NAME or not NAME_RE.fullmatch(name):
        raise OciError("NAME_INVALID", detail={"name": name[:MAX_NAME]})
    return PREFIX + name


def oci_name(repository: str) -> str | None:
    """The OCI name of a catalog repository, if it has one (the inverse of `repository_of`)."""
    if not repository.lower().startswith(PREFIX):
        return None
    name = repository[len(PREFIX) :].lower()
    return name if len(name) <= MAX_NAME and NAME_RE.fullmatch(name) else None


def oci_names(keys: Iterable[str]) -> list[str]:
    """`oci_name` of each of a catalog's repository keys (names already lowercased, as
    `Store.repository_keys` gives them) that has one, in one pass."""
    cut, valid = len(PREFIX), NAME_RE.fullmatch
    return [n for k in keys if k.startswith(PREFIX) and len(n := k[cut:]) <= MAX_NAME and valid(n)]


def blob_digest(raw: str) -> str:
    """A `sha256:<hex>` digest from a URL or query; raises DIGEST_INVALID."""
    if not raw.startswith("sha256:"):
        message = "unsupported digest algorithm" if ":" in raw else "invalid digest"
        raise OciError("DIGEST_INVALID", message, {"digest": raw[:200]})
    try:
        return str(parse_digest(raw))
    except InvalidDigest:
        raise OciError("DIGEST_INVALID", "invalid digest", {"digest": raw[:200]}) from None


def parse_reference(raw: str) -> tuple[Literal["tag", "digest"], str]:
    """A manifest reference: a digest (it has a `:`) or a tag; raises DIGEST_INVALID or MANIFEST_INVALID."""
    if ":" in raw:
        return "digest", blob_digest(raw)
    if not TAG_RE.fullmatch(raw):
        raise OciError("MANIFEST_INVALID", "invalid tag", {"reference": raw[:200]})
    return "tag", raw


def content_range(raw: str) -> tuple[int, int]:
    """An upload chunk's inclusive `start-end` (with or without a `bytes=` prefix); else RANGE_INVALID."""
    m = _CONTENT_RANGE.fullmatch(raw.strip())
    if not m or int(m.group(2)) < int(m.group(1)):
        raise OciError("RANGE_INVALID", "invalid Content-Range", {"content_range": raw[:100]})
    return int(m.group(1)), int(m.group(2))


def byte_range(raw: str, size: int) -> tuple[int, int]:
    """The inclusive (start, end) of a single `Range: bytes=...` over `size` bytes; else RANGE_INVALID."""
    m = _RANGE.fullmatch(raw.strip())
    first, last = (m.group(1), m.group(2)) if m else ("", "")
    if first:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
        ok = start < size and (not last or int(last) >= start)
    elif last:  # a suffix: the last N bytes
        start, end = max(size - int(last), 0), size - 1
        ok = int(last) > 0 and size > 0
    else:
        ok, start, end = False, 0, 0
    if not ok:
        raise OciError(
            "RANGE_INVALID",
            "range not satisfiable",
            {"range": raw[:100], "size": size},
            headers={"Content-Range": f"bytes */{size}"},
        )
    return start, end


def upload_range(size: int) -> str:
    """The `Range` header of an upload session: `0-<last byte received>` (`0-0` when empty)."""
    return f"0-{max(size - 1, 0)}"


def absolute(request: Request, path: str) -> str:
    """An absolute URL on this server (Ollama uses an upload Location without resolving it)."""
    return str(request.base_url).rstrip("/") + path


PAGE_MAX = 10_000
"""The most names one page of a catalog or tags list holds: a larger `n` gets this many and a `Link`
to the rest, as the spec allows (a registry may return fewer than `n`)."""


def page_params(request: Request) -> tuple[int | None, str | None]:
    """`n` (None when absent; at most PAGE_MAX) and `last` of a paginated listing; a bad `n`, or a
    `last` no name could follow (a NUL), is UNSUPPORTED."""
    last = request.query_params.get("last") or None
    if last is not None and "\x00" in last:
        raise OciError("UNSUPPORTED", "last must not hold a NUL character", status=400)
    raw_n = request.query_params.get("n")
    if raw_n is None or raw_n == "":
        return None, last
    if not (raw_n.isascii() and raw_n.isdigit()):
        raise OciError("UNSUPPORTED", "n must be a non-negative integer", {"n": raw_n[:50]}, status=400)
    return min(int(raw_n), PAGE_MAX), last


def next_link(path: str, n: int, last: str) -> dict[str, str]:
    return {"Link": f'<{path}?n={n}&last={quote(last, safe="")}>; rel="next"'}


_PATHSEND = "http.response.pathsend"
_ZEROCOPY = "http.response.zerocopysend"
_FD_DIR = "/proc/self/fd"
PATHSEND_HOLD = 60.0
"""Seconds an open blob is kept open after handing it to the server by path (the server opens the path
itself after `send` returns; once it has, closing ours changes nothing)."""


class BlobBody(StreamingResponse):
    """`length` bytes of an open blob from `start`: sent from the file by the kernel where the server
    offers `http.response.zerocopysend` (`modelhangar/zerocopy.py` does, under uvicorn: ranges too),
    else handed to the server by path (`http.response.pathsend`) when the whole blob is asked for,
    else read SEND_CHUNK at a time off the event loop and streamed.

    The file is opened before the response, so a blob deleted meanwhile still sends whole (its
    inode lives while open: the server is given `/proc/self/fd/<fd>`, never the blob's name); it is
    closed when the response ends, however it ends, or a while after the server took it.
    """

    def __init__(
        self, f: BinaryIO, start: int, length: int, status_code: int, headers: dict[str, str]
    ) -> None:
        self._file = f
        self._start, self._length = start, length
        self._whole = start == 0 and length == os.fstat(f.fileno()).st_size
        super().__init__(self._chunks(start, length), status_code=status_code, headers=headers)

    def _can_pathsend(self, scope: Scope) -> bool:
        return self._whole and _PATHSEND in scope.get("extensions", {}) and os.path.isdir(_FD_DIR)

    async def _zerocopysend(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        message = {
            "type": _ZEROCOPY,
            "file": self._file.fileno(),
            "offset": self._start,
            "count": self._length,
        }
        await send({**message, "more_body": False})

    async def _pathsend(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        await send({"type": _PATHSEND, "path": f"{_FD_DIR}/{self._file.fileno()}"})

    def _read(self, offset: int, n: int) -> bytes:
        return os.pread(self._file.fileno(), n, offset)

    async def _chunks(self, start: int, length: int) -> AsyncIterator[bytes]:
        offset, left = start, length
        while left > 0:
            data = await run_in_threadpool(self._read, offset, min(SEND_CHUNK, left))
            if not data:
                raise OSError("blob shorter than its recorded size")
            offset += len(data)
            left -= len(data)
            yield data

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if _ZEROCOPY in scope.get("extensions", {}) and scope.get("method") != "HEAD":
            try:
                await self._zerocopysend(send)
            finally:
                self._file.close()
            return
        if self._can_pathsend(scope):
            try:
                await self._pathsend(send)
            except BaseException:
                self._file.close()
                raise
            asyncio.get_running_loop().call_later(PATHSEND_HOLD, self._file.close)
            return
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._file.close()
