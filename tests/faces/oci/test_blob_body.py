"""Blob bodies (faces/oci/wire.py): handed to the server by path where it offers ASGI's
`http.response.pathsend`, streamed otherwise and for ranges, the same bytes either way.

The ASGI server is played by this test (uvicorn, which `hangar serve` runs on, has no pathsend;
the OCI API tests cover the streamed path through it): it offers the extension or not and
collects what the response sends.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from modelhangar.faces.oci.wire import BlobBody

DATA = bytes(range(256)) * 40_000  # ~10 MB: more than one streamed piece


def respond(path: Path, start: int, length: int, *, pathsend: bool) -> tuple[list[dict[str, Any]], bytes]:
    """Run one BlobBody; returns the messages sent and the body as the client would get it."""
    f = open(path, "rb")  # noqa: SIM115 - the response closes it
    status = 200 if length == len(DATA) else 206
    body = BlobBody(f, start, length, status, {"Content-Length": str(length)})
    scope: dict[str, Any] = {"type": "http", "method": "GET", "extensions": {}}
    if pathsend:
        scope["extensions"]["http.response.pathsend"] = {}
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)
        if message["type"] == "http.response.pathsend":  # as a server does: open the path, send it
            with open(message["path"], "rb") as sent:
                received.append(sent.read())

    received: list[bytes] = []

    async def run() -> None:
        await body(scope, receive, send)

    asyncio.run(run())
    chunks = [m.get("body", b"") for m in messages if m["type"] == "http.response.body"]
    return messages, b"".join(received) + b"".join(chunks)


@pytest.fixture
def blob(tmp_path: Path) -> Path:
    path = tmp_path / "sha256-blob"
    path.write_bytes(DATA)
    return path


def test_a_whole_blob_goes_by_path_where_the_server_offers_it(blob: Path) -> None:
    messages, got = respond(blob, 0, len(DATA), pathsend=True)
    assert [m["type"] for m in messages] == ["http.response.start", "http.response.pathsend"]
    assert messages[0]["status"] == 200
    assert messages[1]["path"].startswith("/proc/self/fd/")  # the open file, never the blob's name
    assert got == DATA


def test_the_path_is_the_file_opened_before_the_response_even_if_the_blob_is_deleted(blob: Path) -> None:
    f = open(blob, "rb")  # noqa: SIM115 - the response closes it
    body = BlobBody(f, 0, len(DATA), 200, {})
    blob.unlink()  # a delete between the check and the send
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    asyncio.run(body({"type": "http", "extensions": {"http.response.pathsend": {}}}, receive, send))
    with open(sent[1]["path"], "rb") as again:
        assert again.read() == DATA


@pytest.mark.parametrize("pathsend", [True, False])
@pytest.mark.parametrize(
    ("start", "end"), [(0, 0), (5, 99), (len(DATA) - 10, len(DATA) - 1), (1, len(DATA) - 1)]
)
def test_ranges_are_streamed_either_way(blob: Path, pathsend: bool, start: int, end: int) -> None:
    messages, got = respond(blob, start, end - start + 1, pathsend=pathsend)
    assert "http.response.pathsend" not in [m["type"] for m in messages]
    assert messages[0]["status"] == 206
    assert got == DATA[start : end + 1]


def test_without_the_extension_a_whole_blob_is_streamed(blob: Path) -> None:
    messages, got = respond(blob, 0, len(DATA), pathsend=False)
    assert {m["type"] for m in messages} == {"http.response.start", "http.response.body"}
    assert got == DATA
    assert len([m for m in messages if m["type"] == "http.response.body"]) > 1


def test_the_file_is_closed_when_a_streamed_response_ends(blob: Path) -> None:
    before = len(os.listdir("/proc/self/fd"))
    respond(blob, 3, 100, pathsend=False)
    assert len(os.listdir("/proc/self/fd")) == before
