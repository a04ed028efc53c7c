"""Push: a stored model's missing blobs (several at once), then its manifest byte for byte."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from modelhangar.core.digests import parse_digest
from modelhangar.core.manifests import Descriptor, parse_manifest
from modelhangar.core.names import InvalidName, ModelName, parse_name
from modelhangar.core.partials import locked, push_record_path
from modelhangar.core.store import Actor, Store
from modelhangar.transfer import parallel
from modelhangar.transfer.auth import same_host
from modelhangar.transfer.errors import TRANSFER_ERRORS, RegistryError
from modelhangar.transfer.net import TransferLimits
from modelhangar.transfer.progress import Emit, Progress
from modelhangar.transfer.registry_client import RegistryClient

CHUNK = 1 << 20
PUSH_CHUNK = 16 << 20
"""Blobs larger than this go up in PATCH chunks of this size, so an interrupted push can resume."""


def push(
    store: Store,
    name: ModelName,
    *,
    insecure: bool,
    emit: Emit,
    actor: Actor,
    source: ModelName | None = None,
) -> str:
    """Send a stored model (`name`, or `source` pushed as `name`) to the registry `name` points at;
    returns the manifest digest."""
    local = source or name
    emit({"status": "retrieving manifest"})
    record = store.get_tag(local.repository, local.tag, actor=actor)
    stored = store.get_manifest(record.manifest_digest) if record is not None else None
    if record is None or stored is None:
        emit({"status": "couldn't retrieve manifest"})
        raise RegistryError(f"model '{local.display_shortest()}' not found", status=404)
    content, media_type = stored
    refs = parse_manifest(content, media_type)
    if refs.children:
        raise RegistryError("push: a manifest list is not a model; push its entries by digest over /v2")
    sources = mount_sources(content, name)
    http = TransferLimits.of(store.settings, actor).client(pull=False)
    with RegistryClient(name, insecure=insecure, http=http) as remote:
        blobs = list({b.digest: b for b in refs.blobs}.values())
        parallel.each(lambda b: _push_blob(store, remote, b, sources.get(b.digest), emit), blobs, name="push")
        emit({"status": "pushing manifest"})
        claimed = remote.put_manifest(content, media_type)
    if claimed and claimed != record.manifest_digest:
        raise RegistryError(
            f"push manifest: the registry stored {claimed[:80]}, not {record.manifest_digest}"
        )
    emit({"status": "success"})
    return record.manifest_digest


def mount_sources(content: bytes, name: ModelName) -> dict[str, str]:
    """{digest: "ns/model"} for layers whose `from` names another repository on the same registry."""
    out: dict[str, str] = {}
    doc = json.loads(content)
    for layer in [doc.get("config"), *doc.get("layers", [])]:
        source = layer.get("from") if isinstance(layer, dict) else None
        if not isinstance(source, str) or not source:
            continue
        try:  # Ollama writes `ns/model`; a full `host/ns/model` must be on the target's host
            other = parse_name(f"{name.host}/{source}" if source.count("/") == 1 else source)
            digest = str(parse_digest(layer.get("digest", "")))
        except (InvalidName, ValueError):
            continue
        repository = f"{other.namespace}/{other.model}"
        if other.host.lower() == name.host.lower() and repository != f"{name.namespace}/{name.model}":
            out[digest] = repository
    return out


def _push_blob(
    store: Store, remote: RegistryClient, blob: Descriptor, source: str | None, emit: Emit
) -> None:
    progress = Progress(emit, "pushing", blob.digest, blob.size)
    progress(0, force=True)
    if remote.has_blob(blob.digest):
        progress.done()
        return
    try:
        f = _open_blob(store, blob.digest, blob.size)
    except FileNotFoundError:
        raise RegistryError(f"blob {blob.digest} is missing from this store", status=404) from None
    with f:
        if os.fstat(f.fileno()).st_size != blob.size:
            raise RegistryError(f"blob {blob.digest} is not the {blob.size} bytes its manifest says")
        if blob.size <= PUSH_CHUNK:
            location = remote.start_upload(blob.digest, source)
            if location is not None:  # else mounted from `source`
                body = functools.partial(_read, f, 0, blob.size, progress)
                remote.finish_upload(location, blob.digest, blob.size, body)
        else:
            _push_in_chunks(store, remote, blob, source, f, progress)
    progress.done()


def _push_in_chunks(
    store: Store,
    remote: RegistryClient,
    blob: Descriptor,
    source: str | None,
    f: BinaryIO,
    progress: Progress,
) -> None:
    """PATCH the blob PUSH_CHUNK at a time, remembering the session in `<home>/partials`, so that a
    push cut off (even by a crash) continues from the registry's offset next time."""
    path = push_record_path(store, str(remote.base), remote.repository, blob.digest)
    with locked(path) as record:
        if remote.has_blob(blob.digest):  # another push finished it while we waited
            path.unlink(missing_ok=True)
            return
        session = _resume(remote, path, blob.size)
        if session is None:
            location = remote.start_upload(blob.digest, source)
            if location is None:  # mounted from `source`
                path.unlink(missing_ok=True)
                return
            session = (location, 0)
        location, offset = session
        progress(offset, force=True)  # where this push starts: past what the registry already has
        try:
            while offset < blob.size:
                _remember(record, location)
                n = min(PUSH_CHUNK, blob.size - offset)
                body = functools.partial(_read, f, offset, n, progress)
                location = remote.send_chunk(location, blob.digest, offset, n, body)
                offset += n
            _remember(record, location)
            remote.finish_upload(location, blob.digest, 0, b"")
        except RegistryError:  # the registry refused the session: the next push starts a new one
            path.unlink(missing_ok=True)
            raise
        path.unlink(missing_ok=True)  # (a dropped connection keeps it, to resume next time)


def _resume(remote: RegistryClient, path: Path, size: int) -> tuple[httpx.URL, int] | None:
    """The remembered session and how far the registry got, if it still has it (and no more than
    `size` bytes of it)."""
    try:
        doc = json.loads(path.read_bytes() or b"{}")
        location = httpx.URL(doc["location"])
    except (ValueError, KeyError, TypeError, httpx.InvalidURL):
        return None
    if not same_host(location, remote.base):  # never follow a record to another host
        return None
    try:
        found = remote.upload_offset(location)
    except TRANSFER_ERRORS:
        return None
    return found if found is not None and found[1] <= size else None


def _remember(record: BinaryIO, location: httpx.URL) -> None:
    record.truncate(0)
    record.write(json.dumps({"location": str(location)}).encode())
    record.flush()
    os.fsync(record.fileno())


def _read(f: BinaryIO, start: int, length: int, progress: Progress) -> Iterator[bytes]:
    """`length` bytes of `f` from `start`, CHUNK at a time, reporting progress as they go."""
    offset, end = start, start + length
    while offset < end:
        chunk = os.pread(f.fileno(), min(CHUNK, end - offset), offset)
        if not chunk:
            raise RegistryError("blob shorter than its size")
        yield chunk
        offset += len(chunk)
        progress(offset)


def _open_blob(store: Any, digest: str, size: int) -> Any:
    """The blob as an open file: its own, or (an object store) an unnamed spooled copy."""
    if store.blobs.local_path(digest) is not None:
        return store.blobs.open(digest)
    import tempfile

    store.settings.home.mkdir(parents=True, exist_ok=True)
    f = tempfile.TemporaryFile(dir=store.settings.home)  # noqa: SIM115 - the caller closes it
    try:
        for chunk in store.blobs.stream(digest, 0, size):
            f.write(chunk)
        f.flush()
    except BaseException:
        f.close()
        raise
    return f
