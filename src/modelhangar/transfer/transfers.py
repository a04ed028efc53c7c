"""Pull and push: verified, streamed blob transfers between this store and a registry.

Progress events are Ollama's (`status`, `digest`, `total`, `completed`). Every digest a remote
manifest names is validated before anything touches the disk (CVE-2024-37032), and every pulled
blob is verified against its digest before the store accepts it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from modelhangar.core.digests import InvalidDigest, parse_digest
from modelhangar.core.errors import HangarError, InvalidManifest
from modelhangar.core.manifests import parse_manifest
from modelhangar.core.names import ModelName
from modelhangar.core.store import Store
from modelhangar.transfer.registry_client import RegistryClient, RegistryError

Emit = Callable[[dict[str, Any]], None]
PROGRESS_EVERY = 8 << 20


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
        for blob in refs.blobs:
            digest = blob.digest
            status = f"pulling {digest.removeprefix('sha256:')[:12]}"
            if store.reuse_blob(digest) is not None:
                emit({"status": status, "digest": digest, "total": blob.size, "completed": blob.size})
                continue
            writer = store.blob_writer()
            try:
                with remote.blob(digest) as response:
                    done, last = 0, 0
                    for chunk in response.iter_bytes(1 << 20):
                        writer.write(chunk)
                        done += len(chunk)
                        if done - last >= PROGRESS_EVERY:
                            emit({"status": status, "digest": digest, "total": blob.size, "completed": done})
                            last = done
            except BaseException:
                writer.discard()
                raise
            emit({"status": status, "digest": digest, "total": blob.size, "completed": writer.size})
            emit({"status": "verifying sha256 digest"})
            store.commit_blob(writer, digest)  # DigestMismatch keeps nothing
    emit({"status": "writing manifest"})
    manifest_digest, _ = store.put_manifest(name.repository, name.tag, content, media_type)
    emit({"status": "success"})
    return manifest_digest


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
