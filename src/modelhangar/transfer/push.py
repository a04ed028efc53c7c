"""Push: a stored model's missing blobs (several at once), then its manifest byte for byte."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import BinaryIO

from modelhangar.core.digests import parse_digest
from modelhangar.core.manifests import Descriptor, parse_manifest
from modelhangar.core.names import InvalidName, ModelName, parse_name
from modelhangar.core.store import Store
from modelhangar.transfer import parallel
from modelhangar.transfer.errors import RegistryError
from modelhangar.transfer.progress import Emit, Progress
from modelhangar.transfer.registry_client import RegistryClient

CHUNK = 1 << 20


def push(store: Store, name: ModelName, *, insecure: bool, emit: Emit) -> str:
    """Send a stored model to the registry its name points at; returns the manifest digest."""
    emit({"status": "retrieving manifest"})
    record = store.get_tag(name.repository, name.tag)
    stored = store.get_manifest(record.manifest_digest) if record is not None else None
    if record is None or stored is None:
        emit({"status": "couldn't retrieve manifest"})
        raise RegistryError(f"model '{name.display_shortest()}' not found", status=404)
    content, media_type = stored
    refs = parse_manifest(content, media_type)
    if refs.children:
        raise RegistryError("push: a manifest list is not a model; push its entries by digest over /v2")
    sources = mount_sources(content, name)
    with RegistryClient(name, insecure=insecure) as remote:
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
    location = remote.start_upload(blob.digest, source)
    if location is None:  # mounted from `source`
        progress.done()
        return
    try:
        f = store.blobs.open(blob.digest)
    except FileNotFoundError:
        raise RegistryError(f"blob {blob.digest} is missing from this store", status=404) from None
    with f:
        if os.fstat(f.fileno()).st_size != blob.size:
            raise RegistryError(f"blob {blob.digest} is not the {blob.size} bytes its manifest says")
        remote.finish_upload(location, blob.digest, blob.size, lambda: _chunks(f, progress))
    progress.done()


def _chunks(f: BinaryIO, progress: Progress) -> Iterator[bytes]:
    f.seek(0)
    sent = 0
    while chunk := f.read(CHUNK):
        yield chunk
        sent += len(chunk)
        progress(sent)
