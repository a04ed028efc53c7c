"""OpenSearch's answers on the wire: the error envelope, the node's `GET /`, `/_cluster/health`."""

from __future__ import annotations

import hashlib
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from modelhangar import __version__

VERSION = "2.19.0"
CLUSTER = "modelhangar"


def error(
    status: int,
    reason: str,
    type_: str = "status_exception",
    causes: list[str] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """`{"error": {"root_cause": [...], "type", "reason"}, "status"}`, as `BytesRestResponse` writes it."""
    body = {
        "error": {
            "root_cause": [{"type": type_, "reason": c} for c in (causes or [reason])],
            "type": type_,
            "reason": reason,
        },
        "status": status,
    }
    return JSONResponse(body, status_code=status, headers=headers)


TYPES = {
    400: "illegal_argument_exception",
    401: "security_exception",
    403: "security_exception",
    404: "status_exception",
    405: "status_exception",
    409: "status_exception",
    413: "status_exception",
    429: "status_exception",
}


def error_for(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """An error of the server's shared layers (401, 413, 403 of the guards) in OpenSearch's envelope."""
    if status == 401:
        headers = {"WWW-Authenticate": 'Basic realm="OpenSearch Security"', **(headers or {})}
    return error(status, message, TYPES.get(status, "status_exception"), headers=headers)


def wants_opensearch(request: Request) -> bool:
    """Whether `GET /` or `HEAD /` comes from an OpenSearch client rather than from Ollama's.

    Ollama's clients name themselves (`ollama/...`, `ollama-python/...`, `ollama-js/...`) and get Ollama's
    text; any other client that names itself `opensearch...` or asks for JSON in `Accept` gets the node's
    JSON; everything else (browsers, `curl` with `Accept: */*`) gets Ollama's text, as before.
    """
    agent = request.headers.get("user-agent", "").lower()
    if agent.startswith("ollama"):
        return False
    if agent.startswith("opensearch"):
        return True
    return "application/json" in request.headers.get("accept", "").lower()


def node_info(uuid_seed: str) -> dict[str, Any]:
    uuid = hashlib.sha256(uuid_seed.encode()).hexdigest()[:22]
    return {
        "name": "modelhangar",
        "cluster_name": CLUSTER,
        "cluster_uuid": uuid,
        "version": {
            "distribution": "opensearch",
            "number": VERSION,
            "build_type": "tar",
            "build_hash": f"modelhangar-{__version__}",
            "build_date": "2025-02-04T00:00:00.000000Z",
            "build_snapshot": False,
            "lucene_version": "9.12.1",
            "minimum_wire_compatibility_version": "7.10.0",
            "minimum_index_compatibility_version": "7.0.0",
        },
        "tagline": "The OpenSearch Project: https://opensearch.org/",
    }


def health() -> dict[str, Any]:
    return {
        "cluster_name": CLUSTER,
        "status": "green",
        "timed_out": False,
        "number_of_nodes": 1,
        "number_of_data_nodes": 1,
        "discovered_master": True,
        "discovered_cluster_manager": True,
        "active_primary_shards": 0,
        "active_shards": 0,
        "relocating_shards": 0,
        "initializing_shards": 0,
        "unassigned_shards": 0,
        "delayed_unassigned_shards": 0,
        "number_of_pending_tasks": 0,
        "number_of_in_flight_fetch": 0,
        "task_max_waiting_in_queue_millis": 0,
        "active_shards_percent_as_number": 100.0,
    }
