"""Manifests, tags and the repository catalog of the registry face."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, Literal

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from modelhangar.auth import actor_of
from modelhangar.core import repo_blobs
from modelhangar.core.digests import sha256_digest
from modelhangar.core.errors import (
    BlobUnknown,
    Conflict,
    Denied,
    InvalidManifest,
    NotFound,
    QuotaExceeded,
    Refused,
)
from modelhangar.core.manifests import MAX_MANIFEST_BYTES, OCI_INDEX, parse_manifest
from modelhangar.core.planner import Planner, Target
from modelhangar.core.store import Actor, Store
from modelhangar.faces import quick
from modelhangar.faces.oci.errors import OciError
from modelhangar.faces.oci.wire import (
    PREFIX,
    absolute,
    blob_digest,
    next_link,
    oci_name,
    oci_names,
    page_params,
    parse_reference,
    repository_of,
)
from modelhangar.faces.streams import started


def store_of(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


async def check_push(store: Store, repository: str, name: str, actor: Actor) -> None:
    """DENIED (403) for another account's namespace or model; NAME_UNKNOWN for one it may not see."""
    try:
        await quick.run(repo_blobs.may_push, store, repository, actor)
    except Denied as e:
        raise OciError("DENIED", str(e), {"name": name}) from None
    except NotFound:
        raise OciError("NAME_UNKNOWN", detail={"name": name}) from None


async def unknown(store: Store, repository: str, code: str, detail: Any, actor: Actor) -> OciError:
    """`code` (e.g. MANIFEST_UNKNOWN), or NAME_UNKNOWN when the repository itself does not exist
    (for `actor`: another account's private repository does not)."""
    if not await quick.run(repo_blobs.repository_known, store, repository, actor):
        return OciError("NAME_UNKNOWN", detail={"name": oci_name(repository)})
    return OciError(code, detail=detail)


async def existing_reference(
    store: Store, repository: str, raw: str, actor: Actor
) -> tuple[Literal["tag", "digest"], str]:
    """The reference of a read or delete: no manifest has an invalid tag, so that is MANIFEST_UNKNOWN
    (404); MANIFEST_INVALID is for a pushed manifest only."""
    try:
        return parse_reference(raw)
    except OciError as e:
        if e.code != "MANIFEST_INVALID":
            raise
    raise await unknown(store, repository, "MANIFEST_UNKNOWN", {"reference": raw[:200]}, actor)


def _lookup(
    store: Store, repository: str, kind: str, ref: str, pull: bool, actor: Actor
) -> tuple[str, bytes, str] | None:
    """The manifest, by tag or digest, if `actor` may read the repository; a pull by tag counts as a
    use of that tag (on the event loop where the catalog allows it: `faces/quick.py`)."""
    if kind != "tag":
        return store.find_manifest(repository, digest=ref, actor=actor)
    found = store.find_manifest(repository, tag=ref, actor=actor)
    if found is not None and pull:
        store.mark_used(repository, ref)
    return found


async def get_manifest(request: Request, name: str, reference: str) -> Response:
    repository = repository_of(name)
    store = store_of(request)
    actor = actor_of(request, "oci")
    kind, ref = await existing_reference(store, repository, reference, actor)
    found = await quick.run(_lookup, store, repository, kind, ref, request.method == "GET", actor)
    if found is None:
        raise await unknown(store, repository, "MANIFEST_UNKNOWN", {"reference": reference}, actor)
    digest, content, media_type = found
    headers = {
        "Docker-Content-Digest": digest,
        "Content-Type": media_type,
        "Content-Length": str(len(content)),
        "ETag": f'"{digest}"',
    }
    if request.method == "HEAD":
        return Response(status_code=200, headers=headers)
    return Response(content, status_code=200, headers=headers)


async def _read_manifest(request: Request) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_MANIFEST_BYTES:
            raise OciError("SIZE_INVALID", "manifest too large", {"limit": MAX_MANIFEST_BYTES}, status=413)
    return bytes(body)


def _media_type(request: Request) -> str | None:
    """The pushed Content-Type without parameters, when it names a manifest type at all."""
    media = request.headers.get("content-type", "").split(";")[0].strip()
    return media if media and ("manifest" in media or "index" in media) else None


async def put_manifest(request: Request, name: str, reference: str) -> Response:
    repository = repository_of(name)
    kind, ref = parse_reference(reference)
    content = await _read_manifest(request)
    digest = str(sha256_digest(content))
    if kind == "digest" and ref != digest:
        raise OciError("DIGEST_INVALID", f"manifest digest is {digest}", {"reference": ref, "digest": digest})
    store = store_of(request)
    actor = actor_of(request, "oci")
    await check_push(store, repository, name, actor)
    try:
        await run_in_threadpool(
            lambda: store.put_manifest(
                repository,
                ref if kind == "tag" else None,
                content,
                _media_type(request),
                actor=actor,
                exact_tag=True,
                keep_untagged=True,  # a manifest a tag moves off stays, pullable by digest (README)
            )
        )
    except Conflict as e:
        raise OciError("DENIED", str(e), {"tag": ref}) from None
    except (Refused, Denied, QuotaExceeded) as e:
        raise OciError("DENIED", str(e), {"tag": ref}) from None
    except BlobUnknown as e:
        raise OciError(
            "MANIFEST_BLOB_UNKNOWN",
            f"manifest references unknown blobs or manifests: {', '.join(e.digests)}",
            details=[{"digest": d} for d in e.digests],
        ) from None
    except InvalidManifest as e:
        raise OciError("MANIFEST_INVALID", str(e), {"reason": str(e)}) from None
    except NotFound:  # another account's private repository: as if absent, so not ours to push to
        raise OciError("NAME_UNKNOWN", detail={"name": name}) from None
    headers = {
        "Location": absolute(request, f"/v2/{name}/manifests/{digest}"),
        "Docker-Content-Digest": digest,
        "Content-Length": "0",
    }
    subject = parse_manifest(content, _media_type(request)).subject  # valid: the store took it
    if subject is not None:  # tells the client this registry keeps the referrers list itself
        headers["OCI-Subject"] = subject.digest
    return Response(status_code=201, headers=headers)


async def list_referrers(request: Request, name: str, digest: str) -> Response:
    """OCI 1.1 referrers: an image index of the repository's manifests whose subject is `digest`.

    Never a 404 (an unknown repository or digest has no referrers); `artifactType` filters.
    """
    repository = repository_of(name)
    subject = blob_digest(digest)
    wanted = request.query_params.get("artifactType") or None
    actor = actor_of(request, "oci")
    found = await run_in_threadpool(
        lambda: store_of(request).referrers(repository, subject, wanted, actor=actor)
    )
    descriptors = []
    for r in found:
        d: dict[str, Any] = {"mediaType": r.media_type, "digest": r.digest, "size": r.size}
        if r.artifact_type:
            d["artifactType"] = r.artifact_type
        if r.annotations:
            d["annotations"] = r.annotations
        descriptors.append(d)
    headers = {"OCI-Filters-Applied": "artifactType"} if wanted else {}
    body = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors}
    return JSONResponse(body, headers=headers, media_type=OCI_INDEX)


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


async def delete_manifest(request: Request, name: str, reference: str) -> Response:
    """Untag (by tag) or remove from the repository (by digest) through the one deletion planner."""
    repository = repository_of(name)
    store = store_of(request)
    actor = actor_of(request, "oci")
    kind, ref = await existing_reference(store, repository, reference, actor)
    # By tag only the tag goes: the manifest stays pullable by digest (README, "the registry face").
    target = Target("untag" if kind == "tag" else "manifest", repository, ref)
    dry_run = _truthy(request.query_params.get("dry_run"))
    plan = await run_in_threadpool(lambda: Planner(store).delete([target], actor, dry_run=dry_run))
    if plan.not_found:
        raise await unknown(store, repository, "MANIFEST_UNKNOWN", {"reference": reference}, actor)
    if plan.blockers:
        reasons = "; ".join(f"{b.kind} {b.id}: {b.reason}" for b in plan.blockers)
        status = 403 if all(b.kind == "permission" for b in plan.blockers) else 409
        raise OciError("DENIED", f"refused: {reasons}", {"plan": plan.to_dict()}, status=status)
    if dry_run:
        return JSONResponse(plan.to_dict())
    return Response(status_code=202, headers={"Content-Length": "0"})


async def list_tags(request: Request, name: str) -> Response:
    """A repository's tags in byte order; with `n`, one page read from the catalog (n + 1 names)."""
    repository = repository_of(name)
    store = store_of(request)
    actor = actor_of(request, "oci")
    n, last = page_params(request)
    want = None if n is None else n + 1
    tags = await run_in_threadpool(lambda: store.tag_names(repository, last, want, actor=actor))
    if not tags and not await run_in_threadpool(repo_blobs.repository_known, store, repository, actor):
        raise OciError("NAME_UNKNOWN", detail={"name": name})
    headers: dict[str, str] = {}
    if n is not None and len(tags) > n:
        tags = tags[:n]
        headers = next_link(f"/v2/{name}/tags/list", n, tags[-1]) if tags else {}
    return JSONResponse({"name": name, "tags": tags}, headers=headers)


CATALOG_BATCH = 1000


def _catalog_names(store: Store, after: str | None, want: int, actor: Actor) -> list[str]:
    """At most `want` OCI names of the catalog in order after `after`, read a batch of repository keys
    at a time (keys without an OCI name are skipped)."""
    names: list[str] = []
    cursor = None if after is None else PREFIX + after
    while len(names) < want:
        batch = max(want - len(names), 1)
        keys = store.repository_keys(PREFIX, cursor, batch, actor=actor)
        names += oci_names(keys)
        if len(keys) < batch:
            break
        cursor = keys[-1]
    return names[:want]


def _whole_catalog(store: Store, after: str | None, actor: Actor) -> Generator[bytes, None, None]:
    """`{"repositories":[...]}` of every OCI name after `after`, streamed from one snapshot a batch at a
    time (flat memory at any size; names need no JSON escaping, NAME_RE allows none). The head goes
    with the first batch, after the query (`streams.started`)."""
    keys = store.iter_repository_keys(PREFIX, None if after is None else PREFIX + after, actor=actor)
    head, sep = b'{"repositories":[', ""
    try:
        for batch in keys:
            names = oci_names(batch)
            if names:
                yield head + (sep + '"' + '","'.join(names) + '"').encode()
                head, sep = b"", ","
        yield head + b"]}"
    finally:
        keys.close()


async def catalog(request: Request) -> Response:
    """Repositories in OCI name order; with `n`, one page read from the catalog (n + 1 names); without,
    all of them, streamed."""
    n, last = page_params(request)
    if n == 0:
        return JSONResponse({"repositories": []})
    store = store_of(request)
    actor = actor_of(request, "oci")
    if n is None:
        return await started(lambda: _whole_catalog(store, last, actor), "application/json")
    names = await run_in_threadpool(_catalog_names, store, last, n + 1, actor)
    headers: dict[str, str] = {}
    if len(names) > n:
        names = names[:n]
        headers = next_link("/v2/_catalog", n, names[-1])
    body = '{"repositories":[' + ",".join(f'"{n}"' for n in names) + "]}"  # names need no escaping
    return Response(body, headers=headers, media_type="application/json")
