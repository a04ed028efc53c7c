"""Who a per-client limit counts a request against."""

from __future__ import annotations

from starlette.requests import Request


def client_key(request: Request) -> str:
    """The signed-in user (`user:<name>`) when the request carries a token, else the client's IP
    address (the local admin and anonymous clients): caps such as HANGAR_UPLOAD_SESSIONS_PER_CLIENT
    count per user where there is one, per address otherwise (issue 11)."""
    from modelhangar.auth import maybe_actor

    actor = maybe_actor(request)
    if actor is not None and actor.principal is not None:
        return f"user:{actor.principal}"
    client = request.client
    return client.host if client is not None else "unknown"
