"""The distribution spec's error envelope: `{"errors": [{"code", "message", "detail"}]}`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from starlette.responses import JSONResponse

# code: (HTTP status, message), as the spec names them and docker's distribution answers them.
CODES: dict[str, tuple[int, str]] = {
    "BLOB_UNKNOWN": (404, "blob unknown to registry"),
    "BLOB_UPLOAD_INVALID": (400, "blob upload invalid"),
    "BLOB_UPLOAD_UNKNOWN": (404, "blob upload unknown to registry"),
    "DIGEST_INVALID": (400, "provided digest did not match uploaded content"),
    "MANIFEST_BLOB_UNKNOWN": (400, "manifest references a manifest or blob unknown to registry"),
    "MANIFEST_INVALID": (400, "manifest invalid"),
    "MANIFEST_UNKNOWN": (404, "manifest unknown to registry"),
    "NAME_INVALID": (400, "invalid repository name"),
    "NAME_UNKNOWN": (404, "repository name not known to registry"),
    "SIZE_INVALID": (400, "provided length did not match content length"),
    "RANGE_INVALID": (416, "invalid content range"),
    "UNAUTHORIZED": (401, "authentication required"),
    "DENIED": (403, "requested access to the resource is denied"),
    "UNSUPPORTED": (405, "the operation is unsupported"),
    "TOOMANYREQUESTS": (429, "too many requests"),
    "UNAVAILABLE": (503, "service unavailable"),  # distribution's errcode.ErrorCodeUnavailable
    "UNKNOWN": (500, "unknown error"),
}


class OciError(Exception):
    """One or more errors of the same code, answered with that code's status (or `status`)."""

    def __init__(
        self,
        code: str,
        message: str | None = None,
        detail: Any = None,
        *,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
        details: Sequence[Any] | None = None,
    ) -> None:
        default_status, default_message = CODES[code]
        self.code = code
        self.message = message or default_message
        self.status = status or default_status
        self.headers = dict(headers or {})
        self.details = list(details) if details is not None else [{} if detail is None else detail]
        super().__init__(self.message)

    def response(self) -> JSONResponse:
        errors = [{"code": self.code, "message": self.message, "detail": d} for d in self.details]
        return JSONResponse({"errors": errors}, status_code=self.status, headers=self.headers)
