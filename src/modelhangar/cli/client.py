"""A thin httpx client for the server: one-line errors instead of exceptions, NDJSON streams."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from modelhangar import __version__
from modelhangar.cli.errors import CliError
from modelhangar.cli.wording import not_found
from modelhangar.core.config import DEFAULT_PORT, parse_host

CHUNK = 1 << 20


def base_url(host: str | None) -> str:
    """The server's URL from `--host`, else HANGAR_HOST, else the default `127.0.0.1:11435`."""
    text = host or os.environ.get("HANGAR_HOST") or f"127.0.0.1:{DEFAULT_PORT}"
    scheme = "https" if text.strip().startswith("https://") else "http"
    try:
        name, port = parse_host(text)
    except ValueError as e:
        raise CliError(f"invalid host {text!r}: use HOST:PORT, e.g. 127.0.0.1:{DEFAULT_PORT}") from e
    if name == "0.0.0.0":  # a bind-all address: talk to this machine
        name = "127.0.0.1"
    elif name == "::":
        name = "::1"
    if ":" in name:
        name = f"[{name}]"
    return f"{scheme}://{name}:{port}"


def _error_text(response: httpx.Response) -> str:
    """The server's `error` (Ollama API) or `detail` (modelhangar API) text, else the raw body."""
    fallback = f"HTTP {response.status_code} {response.reason_phrase}"
    try:
        response.read()
    except httpx.HTTPError:
        return fallback
    try:
        doc = response.json()
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        for key in ("error", "detail"):
            value = doc.get(key)
            if isinstance(value, str) and value:
                return value
            if isinstance(value, list) and value:  # request validation errors
                return "; ".join(str(v.get("msg", v)) if isinstance(v, dict) else str(v) for v in value)
    text = " ".join(response.text.split())[:300]
    if not text:
        return fallback
    return text if text.startswith(str(response.status_code)) else f"HTTP {response.status_code}: {text}"


class Client:
    """Requests to one server; every failure becomes a CliError."""

    def __init__(self, host: str | None = None, token: str | None = None) -> None:
        self.url = base_url(host)
        self.address = self.url.split("://", 1)[1]
        """`HOST:PORT`, as errors name the server."""
        headers = {"User-Agent": f"hangar/{__version__}", "Accept": "application/json"}
        secret = (token or os.environ.get("HANGAR_TOKEN") or "").strip()
        if secret:  # `--token`, else HANGAR_TOKEN; never printed, not even in an error
            headers["Authorization"] = f"Bearer {secret}"
        self._http = httpx.Client(
            base_url=self.url, timeout=httpx.Timeout(None, connect=10.0), headers=headers
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
        try:
            return self._http.send(request, stream=stream)
        except httpx.ConnectError as e:
            raise CliError(f"cannot reach the server at {self.address} (is `hangar serve` running?)") from e
        except httpx.TimeoutException as e:
            raise CliError(f"the server at {self.address} did not answer in time") from e
        except httpx.HTTPError as e:
            raise CliError(f"request to the server at {self.address} failed: {e}") from e

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        allow: tuple[int, ...] = (),
        model: str | None = None,
    ) -> httpx.Response:
        """Send and return the response; statuses >= 400 not in `allow` raise with the server's text,
        a 404 saying `not found` in the one wording for a missing `model`."""
        response = self._send(self._http.build_request(method, path, json=json_body))
        if response.status_code >= 400 and response.status_code not in allow:
            raise _failure(response, model)
        return response

    def get_json(self, path: str) -> Any:
        return response_json(self.request("GET", path))

    def post_json(self, path: str, body: Any, *, model: str | None = None) -> Any:
        return response_json(self.request("POST", path, json_body=body, model=model))

    def stream_ndjson(self, path: str, body: Any, *, model: str | None = None) -> Iterator[dict[str, Any]]:
        """POST and yield each NDJSON object; an `{"error": ...}` line raises CliError (one saying
        `not found` in the one wording for a missing `model`)."""
        response = self._send(self._http.build_request("POST", path, json=body), stream=True)
        try:
            if response.status_code >= 400:
                raise _failure(response, model)
            for line in response.iter_lines():
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError as e:
                    raise CliError(f"the server sent a line that is not JSON: {line[:200]!r}") from e
                if isinstance(obj, dict) and obj.get("error"):
                    raise _worded(str(obj["error"]), model)
                if isinstance(obj, dict):
                    yield obj
        except httpx.HTTPError as e:
            raise CliError(f"the connection to the server at {self.address} broke: {e}") from e
        finally:
            response.close()

    def has_blob(self, digest: str) -> bool:
        return self.request("HEAD", f"/api/blobs/{digest}", allow=(404,)).status_code < 400

    def upload_blob(self, digest: str, path: Path, on_chunk: Callable[[int], None] | None = None) -> None:
        """POST a file's bytes to `/api/blobs/<digest>`, streamed with its Content-Length."""
        size = path.stat().st_size

        def chunks() -> Iterator[bytes]:
            with path.open("rb") as f:
                while chunk := f.read(CHUNK):
                    yield chunk
                    if on_chunk is not None:
                        on_chunk(len(chunk))

        request = self._http.build_request(
            "POST",
            f"/api/blobs/{digest}",
            content=chunks(),
            headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
        )
        response = self._send(request)
        if response.status_code >= 400:
            raise CliError(f"uploading {path.name}: {_error_text(response)}")


def _worded(text: str, model: str | None) -> CliError:
    """The server's error; its text for a missing `model` in the one wording for that."""
    return not_found(model) if model is not None and text.endswith("not found") else CliError(text)


def _failure(response: httpx.Response, model: str | None) -> CliError:
    if response.status_code == 401:
        sent = "authorization" in response.request.headers
        hint = "give a valid token" if sent else "send a token with --token or HANGAR_TOKEN"
        return CliError(f"{_error_text(response)} ({hint})")
    return _worded(_error_text(response), model if response.status_code == 404 else None)


def response_json(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError as e:
        raise CliError(
            f"the server answered {response.request.url.path} with something that is not JSON"
        ) from e
