"""Ollama's wire conventions: `{"error": ...}` bodies, JSON requests, NDJSON streams, times."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from modelhangar.core import jsonsafe
from modelhangar.core.listing import timestamp as timestamp  # Go's RFC 3339, one definition
from modelhangar.core.names import InvalidName, ModelName, display_stored, parse_name


class OllamaError(Exception):
    """An error answered as `{"error": message}` with an HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object, or a 400 as Ollama words it (a body past the server's limit was
    already refused with 413 by `guards`)."""
    raw = await request.body()
    if not raw or raw.isspace():
        raise OllamaError(400, "missing request body")
    try:
        doc = jsonsafe.loads(raw)
    except jsonsafe.TooLarge as e:
        raise OllamaError(413, str(e)) from None
    except jsonsafe.InvalidJSON as e:
        raise OllamaError(400, f"invalid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise OllamaError(400, "request body must be a JSON object")
    return doc


def model_field(body: dict[str, Any], *keys: str) -> str:
    """The first non-empty string among `keys` (e.g. `model`, then deprecated `name`)."""
    for key in keys:
        value = body.get(key)
        if isinstance(value, str) and value:
            return value
        if value is not None and not isinstance(value, str):
            raise OllamaError(400, f"{key} must be a string")
    raise OllamaError(400, "model is required")


def parse_or(raw: str, status: int, message: str) -> ModelName:
    try:
        return parse_name(raw)
    except InvalidName as e:
        raise OllamaError(status, message) from e


def display(repository: str, tag: str) -> str:
    """Ollama's shortest display form of a stored repository and tag (falls back to raw)."""
    return display_stored(repository, tag) or f"{repository}:{tag}"


def ndjson(objects: Iterable[dict[str, Any]]) -> StreamingResponse:
    """One JSON object per line, never a blank line (the client would crash on one)."""

    def lines() -> Iterable[bytes]:
        for obj in objects:
            yield json.dumps(obj, separators=(",", ":")).encode() + b"\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")


def empty_ok() -> Response:
    return Response(status_code=200)


def display_plan(plan: dict[str, Any] | None) -> dict[str, Any] | None:
    """Plan names in Ollama's display form (`name:tag`), the form users typed."""
    if plan is None:
        return None
    out = dict(plan)
    for key in ("models", "tags"):
        out[key] = [display(*m.rsplit(":", 1)) if "@" not in m else m for m in plan[key]]
    out["kept"] = [
        {**k, "used_by": display(*k["used_by"].rsplit(":", 1)) if ":" in k["used_by"] else k["used_by"]}
        for k in plan["kept"]
    ]
    return out
