"""Blobs and resumable blob uploads of the registry face."""

from __future__ import annotations

from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from modelhangar.auth import actor_of
from modelhangar.core import repo_blobs, uploads
from modelhangar.core.errors import DigestMismatch, NotFound, SizeMismatch
from modelhangar.core.store import Actor, BlobCommit
from modelhangar.faces import quick
from modelhangar.faces.bodies import guarded, pump
from modelhangar.faces.client import client_key
from modelhangar.faces.oci import tokens
from modelhangar.faces.oci.errors import OciError
from modelhangar.faces.oci.manifests import check_push, store_of
from modelhangar.faces.oci.wire import (
    BlobBody,
    absolute,
    blob_digest,
    byte_range,
    content_range,
    repository_of,
    upload_range,
)


def _blob_headers(request: Request, name: str, digest: str, size: int) -> dict[str, str]:
    return {
        "Content-Length": str(size),
        "Content-Type": "application/octet-stream",
        "Docker-Content-Digest": digest,
        "Accept-Ranges": "bytes",
        "ETag": f'"{digest}"',
        # Ollama's puller reads the blob's URL from Location, even on a plain 200 (ollama#7244).
        "Location": absolute(request, f"/v2/{name}/blobs/{digest}"),
    }


async def get_blob(request: Request, name: str, digest: str) -> Response:
    """A blob of this repository: uploaded or mounted into it, or named by one of its manifests."""
    repository = repository_of(name)
    d = blob_digest(digest)
    store = store_of(request)
    actor = actor_of(request, "oci")
    if request.method == "HEAD":  # a pusher's HEAD is a claim on the blob: it resets the GC fuse
        size = await quick.run(repo_blobs.claim, store, repository, d, actor)
        if size is None:
            raise OciError("BLOB_UNKNOWN", detail={"digest": d})
        return Response(status_code=200, headers=_blob_headers(request, name, d, size))
    size = await quick.run(repo_blobs.blob_size, store, repository, d, actor)
    if size is None:
        raise OciError("BLOB_UNKNOWN", detail={"digest": d})
    if store.settings.blob_redirect:  # the bytes bypass the server (distribution's `redirect`)
        url = await run_in_threadpool(store.blobs.presigned_url, d)
        if url is not None:  # a Range header goes to the object store as it is
            headers = {"Location": url, "Docker-Content-Digest": d, "Content-Length": "0"}
            return Response(status_code=307, headers=headers)
    headers = _blob_headers(request, name, d, size)
    status, start, length = 200, 0, size
    raw_range = request.headers.get("range")
    if raw_range is not None:
        start, end = byte_range(raw_range, size)
        status, length = 206, end - start + 1
        headers["Content-Length"] = str(length)
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    if store.blobs.local_path(d) is None:  # an object store: a ranged GET streamed through
        try:
            chunks = await run_in_threadpool(store.blobs.stream, d, start, length)
        except FileNotFoundError:
            raise OciError("BLOB_UNKNOWN", detail={"digest": d}) from None
        return StreamingResponse(iterate_in_threadpool(chunks), status_code=status, headers=headers)
    try:
        f = await quick.run(store.blobs.open, d)
    except FileNotFoundError:
        raise OciError("BLOB_UNKNOWN", detail={"digest": d}) from None
    return BlobBody(f, start, length, status, headers)


async def delete_blob(request: Request, name: str, digest: str) -> Response:
    """Remove a blob from this repository (202); one a manifest of the repository names stays (405),
    so no manifest ever points at a missing blob. The bytes go once nothing else uses them."""
    repository = repository_of(name)
    d = blob_digest(digest)
    actor = actor_of(request, "oci")
    result = await run_in_threadpool(repo_blobs.withdraw, store_of(request), repository, d, actor)
    if result.outcome == "deleted":
        return Response(status_code=202, headers={"Content-Length": "0"})
    if result.outcome == "unknown":
        raise OciError("BLOB_UNKNOWN", detail={"digest": d})
    raise OciError(
        "UNSUPPORTED",
        f"blob is referenced by manifests of {name}: {', '.join(result.manifests)}; delete those first",
        {"digest": d, "manifests": result.manifests},
        headers={"Allow": "GET, HEAD"},
    )


def _session_headers(request: Request, name: str, upload: uploads.Upload) -> dict[str, str]:
    return {
        "Location": absolute(request, f"/v2/{name}/blobs/uploads/{upload.id}"),
        "Range": upload_range(upload.size),
        "Docker-Upload-UUID": upload.id,
        "Content-Length": "0",
    }


def _created(request: Request, name: str, commit: BlobCommit) -> Response:
    return Response(
        status_code=201,
        headers={
            "Location": absolute(request, f"/v2/{name}/blobs/{commit.digest}"),
            "Docker-Content-Digest": commit.digest,
            "Content-Length": "0",
        },
    )


def _content_length(request: Request) -> int | None:
    raw = request.headers.get("content-length")
    if raw is None:
        return None
    if not raw.isdigit():
        raise OciError("SIZE_INVALID", "invalid Content-Length", {"content_length": raw[:50]})
    return int(raw)


def _check_size(expected: int | None, got: int) -> None:
    if expected is not None and expected != got:
        raise OciError("SIZE_INVALID", f"received {got} bytes, expected {expected}", {"size": got})


def _mount_source(raw: str | None) -> str | None:
    """The repository a mount names in `from`, if it is a valid name (else the client uploads)."""
    if not raw:
        return None
    try:
        return repository_of(raw)
    except OciError:
        return None


async def start_upload(request: Request, name: str) -> Response:
    """A new session (202), a cross-repository mount (201), or a whole blob in one POST (201)."""
    repository = repository_of(name)
    store = store_of(request)
    query = request.query_params
    algorithm = query.get("digest-algorithm")
    if algorithm not in (None, "", "sha256"):
        raise OciError("DIGEST_INVALID", "unsupported digest algorithm", {"digest-algorithm": algorithm[:50]})
    actor = actor_of(request, "oci")
    await check_push(store, repository, name, actor)
    mount, source = query.get("mount"), _mount_source(query.get("from"))
    # A mount needs read access to its source (and the token's pull scope on it); else, and when the
    # source cannot serve the blob, a session, as the spec says.
    if mount and mount.startswith("sha256:") and source is not None and tokens.may_pull(actor, query["from"]):
        d = blob_digest(mount)
        size = await run_in_threadpool(repo_blobs.mount, store, repository, source, d, actor)
        if size is not None:
            return _created(request, name, BlobCommit(digest=d, size=size, created=False))
    digest = query.get("digest")
    if digest is not None:
        return await _monolithic(request, name, repository, blob_digest(digest), actor)
    try:
        upload = await run_in_threadpool(uploads.start, store, repository, client_key(request))
    except uploads.TooManyUploads as e:
        retry = str(max(1, min(60, int(uploads.upload_expiry(store)))))
        raise OciError("TOOMANYREQUESTS", str(e), headers={"Retry-After": retry}) from None
    return Response(status_code=202, headers=_session_headers(request, name, upload))


async def _monolithic(request: Request, name: str, repository: str, digest: str, actor: Actor) -> Response:
    store = store_of(request)
    expected = _content_length(request)
    writer = store.blob_writer()
    await guarded(pump(request, writer), writer.discard)
    try:
        _check_size(expected, writer.size)
    except OciError:
        writer.discard()
        raise
    try:
        commit = await run_in_threadpool(
            lambda: store.commit_blob(
                writer, digest, also=repo_blobs.linker(store, repository, digest, actor)
            )
        )
    except DigestMismatch as e:
        raise OciError("DIGEST_INVALID", str(e), {"expected": e.expected, "actual": e.actual}) from None
    return _created(request, name, commit)


def _chunk_bounds(request: Request) -> tuple[int | None, int | None]:
    """(first byte, length) of the request's chunk, from Content-Range and Content-Length."""
    length = _content_length(request)
    raw = request.headers.get("content-range")
    if raw is None:
        return None, length
    start, end = content_range(raw)
    _check_size(end - start + 1 if length is None else length, end - start + 1)
    return start, end - start + 1


def _upload_errors(request: Request, name: str, upload_id: str, exc: Exception) -> OciError:
    location = absolute(request, f"/v2/{name}/blobs/uploads/{upload_id}")
    if isinstance(exc, uploads.RangeInvalid):
        headers = {"Location": location, "Range": upload_range(exc.offset)}
        return OciError("RANGE_INVALID", str(exc), {"offset": exc.offset}, headers=headers)
    if isinstance(exc, uploads.UploadBusy):
        return OciError("RANGE_INVALID", str(exc), {"upload": upload_id}, headers={"Location": location})
    if isinstance(exc, SizeMismatch):
        return OciError("SIZE_INVALID", str(exc), {"upload": upload_id})
    if isinstance(exc, NotFound):
        return OciError("BLOB_UPLOAD_UNKNOWN", detail={"upload": upload_id[:64]})
    raise exc


async def _acquire(request: Request, name: str, repository: str, upload_id: str) -> uploads.UploadHandle:
    start, _ = _chunk_bounds(request)
    try:
        return await run_in_threadpool(
            lambda: uploads.acquire(
                store_of(request), upload_id, repository, client=client_key(request), start_at=start
            )
        )
    except (uploads.RangeInvalid, uploads.UploadBusy, NotFound) as e:
        raise _upload_errors(request, name, upload_id, e) from None


async def patch_upload(request: Request, name: str, upload_id: str) -> Response:
    """Append one chunk: it must start at the session's offset (Content-Range, if given)."""
    repository = repository_of(name)
    await check_push(store_of(request), repository, name, actor_of(request, "oci"))
    _, length = _chunk_bounds(request)
    handle = await _acquire(request, name, repository, upload_id)
    await guarded(pump(request, handle), handle.abort)
    try:
        upload = await run_in_threadpool(handle.save, length)
    except (SizeMismatch, NotFound) as e:
        raise _upload_errors(request, name, upload_id, e) from None
    return Response(status_code=202, headers=_session_headers(request, name, upload))


async def finish_upload(request: Request, name: str, upload_id: str) -> Response:
    """Close the session with `?digest=` (and maybe a last chunk); the content must hash to it."""
    repository = repository_of(name)
    actor = actor_of(request, "oci")
    await check_push(store_of(request), repository, name, actor)
    raw_digest = request.query_params.get("digest")
    if not raw_digest:
        raise OciError("DIGEST_INVALID", "the digest query parameter is required", {"upload": upload_id[:64]})
    digest = blob_digest(raw_digest)
    _, length = _chunk_bounds(request)
    handle = await _acquire(request, name, repository, upload_id)
    await guarded(pump(request, handle), handle.abort)
    try:
        link = repo_blobs.linker(store_of(request), repository, digest, actor)
        commit = await run_in_threadpool(lambda: handle.complete(digest, length, also=link))
    except DigestMismatch as e:
        raise OciError("DIGEST_INVALID", str(e), {"expected": e.expected, "actual": e.actual}) from None
    except (SizeMismatch, NotFound) as e:
        raise _upload_errors(request, name, upload_id, e) from None
    return _created(request, name, commit)


async def upload_status(request: Request, name: str, upload_id: str) -> Response:
    repository = repository_of(name)
    await check_push(store_of(request), repository, name, actor_of(request, "oci"))
    try:
        upload = await run_in_threadpool(
            uploads.get, store_of(request), upload_id, repository, client_key(request)
        )
    except NotFound as e:
        raise _upload_errors(request, name, upload_id, e) from None
    headers = _session_headers(request, name, upload)
    del headers["Content-Length"]
    return Response(status_code=204, headers=headers)


async def cancel_upload(request: Request, name: str, upload_id: str) -> Response:
    repository = repository_of(name)
    await check_push(store_of(request), repository, name, actor_of(request, "oci"))
    try:
        await run_in_threadpool(uploads.cancel, store_of(request), upload_id, repository, client_key(request))
    except NotFound as e:
        raise _upload_errors(request, name, upload_id, e) from None
    return Response(status_code=204)
