"""Pull: a remote manifest, then its blobs (resumable, verified, in parallel) into the store.

Every digest the remote manifest names is validated (`parse_manifest`) before any request for a
blob or any path is made from it (CVE-2024-37032). A blob is downloaded into
`<home>/partials/sha256-<hex>.partial`, which survives restarts: the next pull continues it with
`Range: bytes=<have>-` (or starts over when the registry ignores ranges); a pull that fails for any
other reason than being cut off removes its partial at once. The store accepts a blob only once
its content hashes to its digest, and a manifest only if its sizes are the blobs' sizes.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
from collections.abc import Sequence
from typing import BinaryIO

import httpx

from modelhangar.core.errors import BlobUnknown, DigestMismatch, InvalidManifest, Refused, SizeMismatch
from modelhangar.core.manifests import Descriptor, ManifestRefs, parse_manifest
from modelhangar.core.names import ModelName
from modelhangar.core.partials import locked, partial_path
from modelhangar.core.store import Actor, Store
from modelhangar.transfer import parallel
from modelhangar.transfer.errors import RegistryError
from modelhangar.transfer.net import TransferLimits, TransferTooSlow
from modelhangar.transfer.progress import Emit, Progress
from modelhangar.transfer.registry_client import RegistryClient, RemoteManifest

CHUNK = 1 << 20
PLATFORM = {"os": "linux", "architecture": "amd64"}
_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(?:\d+|\*)")


def pull(store: Store, name: ModelName, *, insecure: bool, emit: Emit, actor: Actor) -> str:
    """Fetch a model into the store under its full name; returns the manifest digest.

    Pulling onto a name the store holds with another manifest overwrites it as `actor`: the old version
    goes through the planner (to the trash), and a blocker refuses the pull (409) with nothing changed.

    Where it may fetch from, and how long and slowly, depends on the settings and the actor
    (`net.TransferLimits`)."""
    emit({"status": "pulling manifest"})
    http = TransferLimits.of(store.settings, actor).client(pull=True)
    with RegistryClient(name, insecure=insecure, http=http) as remote:
        manifest, refs = _manifest(remote)
        _fetch_blobs(store, remote, refs.blobs, emit)
        emit({"status": "verifying sha256 digest"})
        emit({"status": "writing manifest"})
        put = functools.partial(
            store.put_manifest, name.repository, name.tag, manifest.content, refs.media_type, actor=actor
        )
        try:
            try:
                digest, _ = put()
            except BlobUnknown:  # a GC took a fresh blob before the manifest held it: fetch it again
                _fetch_blobs(store, remote, refs.blobs, emit)
                digest, _ = put()
        except Refused as e:
            raise RegistryError(str(e), status=409) from e
        except SizeMismatch as e:
            raise RegistryError(f"pull model manifest: {e}", status=400) from None
    emit({"status": "success"})
    return digest


def _parse(manifest: RemoteManifest) -> ManifestRefs:
    try:
        return parse_manifest(manifest.content, manifest.media_type)
    except InvalidManifest as e:
        raise RegistryError(f"pull model manifest: {e.reason[:300]}", status=400) from e


def _manifest(remote: RegistryClient) -> tuple[RemoteManifest, ManifestRefs]:
    """The tag's manifest; for a manifest list, its linux/amd64 entry (verified against its digest)."""
    manifest = remote.get_manifest(remote.tag)
    refs = _parse(manifest)
    if not refs.children:
        return manifest, refs
    child = _platform_entry(manifest.content, refs.children)
    manifest = remote.get_manifest(child)
    if manifest.digest != child:
        raise RegistryError(f"pull model manifest: digest mismatch: want {child}, got {manifest.digest}")
    refs = _parse(manifest)
    if refs.children:
        raise RegistryError("pull model manifest: a manifest list inside a manifest list is not a model")
    return manifest, refs


def _platform_entry(content: bytes, children: Sequence[Descriptor]) -> str:
    entries = json.loads(content).get("manifests", [])  # parse_manifest already checked its shape
    for entry, child in zip(entries, children, strict=True):
        platform = entry.get("platform")
        if isinstance(platform, dict) and all(platform.get(k) == v for k, v in PLATFORM.items()):
            return child.digest
    raise RegistryError("pull model manifest: a manifest list without a linux/amd64 entry is not a model")


def _fetch_blobs(store: Store, remote: RegistryClient, blobs: Sequence[Descriptor], emit: Emit) -> None:
    unique = list({b.digest: b for b in blobs}.values())
    _check_space(store, [b for b in unique if store.blob_size(b.digest) is None])
    parallel.each(lambda b: _fetch_blob(store, remote, b, emit), unique, name="pull")


def _check_space(store: Store, missing: Sequence[Descriptor]) -> None:
    """Refuse a pull the disk cannot hold before a byte of it is fetched (sizes as the manifest says)."""
    need = 0
    for blob in missing:
        try:
            have = partial_path(store, blob.digest).stat().st_size
        except FileNotFoundError:
            have = 0
        need += max(blob.size - have, 0)
    free = shutil.disk_usage(store.settings.home).free
    if need > free:
        raise RegistryError(
            f"insufficient disk space: the model needs {need} more bytes, {free} are free", status=507
        )


def _fetch_blob(store: Store, remote: RegistryClient, blob: Descriptor, emit: Emit) -> None:
    """Fetch one blob into its partial file (resuming what is there), verify it, install it."""
    progress = Progress(emit, "pulling", blob.digest, blob.size)
    if store.reuse_blob(blob.digest) is not None:
        progress.done()
        return
    path = partial_path(store, blob.digest)
    with locked(path) as f:
        if store.reuse_blob(blob.digest) is not None:  # another pull installed it meanwhile
            path.unlink(missing_ok=True)
            progress.done()
            return
        have = os.fstat(f.fileno()).st_size
        if have > blob.size:
            f.truncate(0)
            have = 0
        try:
            if have < blob.size:
                have = _download(remote, blob, f, have, progress)
        except BaseException as e:
            # Kept only to resume a transfer that was cut off after some bytes came; anything the
            # registry answered wrongly leaves nothing behind.
            cut_off = isinstance(e, httpx.TransportError | TransferTooSlow)
            if not (cut_off and os.fstat(f.fileno()).st_size > 0):
                path.unlink(missing_ok=True)
            raise
        f.flush()
        os.fsync(f.fileno())
        progress(have, force=True)
        try:
            store.import_blob_file(path, blob.digest)
        except DigestMismatch as e:
            path.unlink(missing_ok=True)  # fetched again from scratch next time
            raise RegistryError(
                f"digest mismatch, file must be downloaded again: want {e.expected}, got {e.actual}"
            ) from e
        path.unlink(missing_ok=True)


def _download(remote: RegistryClient, blob: Descriptor, f: BinaryIO, have: int, progress: Progress) -> int:
    """Append the rest of the blob to `f` from offset `have`; returns the bytes `f` now holds."""
    with remote.blob(blob.digest, have) as r:
        resumed = r.status_code == 206 and _range_start(r.headers.get("content-range", "")) == have
        if r.status_code != 416 and (resumed or r.status_code == 200):
            if not resumed and have:  # the registry ignored the range: start over
                f.truncate(0)
                have = 0
            progress(have, force=True)
            for chunk in r.iter_bytes(CHUNK):
                if have + len(chunk) > blob.size:
                    f.truncate(0)
                    raise RegistryError(
                        f"pull blob {blob.digest}: larger than the {blob.size} bytes it should be"
                    )
                f.write(chunk)
                have += len(chunk)
                progress(have)
            return have
    if not have:
        raise RegistryError(f"pull blob {blob.digest}: unexpected answer {r.status_code}")
    f.truncate(0)  # a range the registry cannot serve from here: start over
    return _download(remote, blob, f, 0, progress)


def _range_start(header: str) -> int | None:
    m = _CONTENT_RANGE.fullmatch(header.strip())
    return int(m.group(1)) if m else None
