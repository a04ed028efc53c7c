"""Who a per-client limit counts a request against."""

from __future__ import annotations

from starlette.requests import Request


def client_key(request: Request) -> str:
    """The client's IP address today; the user, once there are accounts (a key per user or token)."""
    client = request.client
    return client.host if client is not None else "unknown"
