"""Pull and push: verified, streamed blob transfers between this store and a registry.

Progress events are Ollama's (`status`, `digest`, `total`, `completed`). Every digest a remote
manifest names is validated before anything touches the disk (CVE-2024-37032), and every pulled
blob is verified against its digest before the store accepts it.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from modelhangar.core.digests import InvalidDigest, parse_digest
from modelhangar.core.errors import DigestMismatch, HangarError, InvalidManifest
from modelhangar.core.manifests import Descriptor, parse_manifest
from modelhangar.core.names import ModelName
from modelhangar.core.partials import partial_path
from modelhangar.core.store import Store
from modelhangar.transfer.registry_client import RegistryClient, RegistryError

Emit = Callable[[dict[str, Any]], None]
PROGRESS_EVERY = 8 << 20
PARALLEL = 4


def pull(store: Store, name: ModelName, *, insecure: bool, emit: Emit) -> str:
    """Fetch a model into the store under its full name; returns the manifest digest."""
    emit({"status": "pulling manifest"})
    with RegistryClient(name, insecure=insecure) as remote:
        content, media_type = remote.get_manifest()
        try:
            refs = parse_manifest(content, media_type)
        except InvalidManifest as e:
            raise RegistryError(f"pull model manifest: {e}") from e
        if refs.children:
            raise RegistryError("pull model manifest: manifest lists are not models")
        with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
            for done in [pool.submit(_pull_blob, store, remote, b, emit) for b in refs.blobs]:
                done.result()
    emit({"status": "writing manifest"})
    manifest_digest, _ = store.put_manifest(name.repository, name.tag, content, media_type)
    emit({"status": "success"})
    return manifest_digest


def _pull_blob(store: Store, remote: RegistryClient, blob: Descriptor, emit: Emit) -> None:
    """Fetch one blob into its partial file (resuming what is there), verify it, install it."""
    digest = blob.digest
    status = f"pulling {digest.removeprefix('sha256:')[:12]}"
    if store.reuse_blob(digest) is not None:
        emit({"status": status, "digest": digest, "total": blob.size, "completed": blob.size})
        return
    path = partial_path(store, digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # one download of a digest at a time, across processes
        if store.reuse_blob(digest) is not None or not path.exists():  # another pull finished it
            emit({"status": status, "digest": digest, "total": blob.size, "completed": blob.size})
            return
        have = f.seek(0, os.SEEK_END)
        if have > blob.size:
            f.truncate(0)
            have = 0
        if have < blob.size or blob.size == 0:
            with remote.blob(digest, have) as response:
                if have and response.status_code != 206:  # no range support: start over
                    f.truncate(0)
                    have = 0
                last = have
                for chunk in response.iter_bytes(1 << 20):
                    f.write(chunk)
                    have += len(chunk)
                    if have - last >= PROGRESS_EVERY:
                        emit({"status": status, "digest": digest, "total": blob.size, "completed": have})
                        last = have
            f.flush()
            os.fsync(f.fileno())
        emit({"status": status, "digest": digest, "total": blob.size, "completed": have})
        emit({"status": "verifying sha256 digest"})
        try:
            store.import_blob_file(path, digest)
        except DigestMismatch:
            path.unlink(missing_ok=True)  # a corrupt download is fetched again from scratch next time
            raise
        path.unlink(missing_ok=True)


def push(store: Store, name: ModelName, *, insecure: bool, emit: Emit) -> None:
    """Send a stored model (its blobs, then its manifest byte for byte) to the registry it names."""
    emit({"status": "retrieving manifest"})
    record = store.get_tag(name.repository, name.tag)
    stored = store.get_manifest(record.manifest_digest) if record is not None else None
    if stored is None:
        emit({"status": "couldn't retrieve manifest"})
        raise HangarError(f"model '{name.display_shortest()}' not found")
    content, media_type = stored
    refs = parse_manifest(content, media_type)
    with RegistryClient(name, insecure=insecure) as remote:
        for blob in refs.blobs:
            digest = str(parse_digest(blob.digest))
            status = f"pushing {digest.removeprefix('sha256:')[:12]}"
            emit({"status": status, "digest": digest, "total": blob.size, "completed": 0})
            if not remote.has_blob(digest):
                path = store.blobs.local_path(digest)
                if path is None or store.blob_size(digest) is None:
                    raise HangarError(f"blob {digest} is missing from this store")
                remote.upload_blob(digest, path)
            emit({"status": status, "digest": digest, "total": blob.size, "completed": blob.size})
        emit({"status": "pushing manifest"})
        remote.put_manifest(content, media_type)
    emit({"status": "success"})


TRANSFER_ERRORS = (RegistryError, HangarError, InvalidDigest, OSError, httpx.HTTPError)
