"""Moving a store's blobs to another blob location: a bucket, another directory, or back to the data
directory (`hangar migrate-blobs`; README, "Moving blobs to another place").

The store is offline while its blobs move: the migration holds the blob-location gate alone
(`core/blob_location.py`), which every open store (each `hangar serve`, each store command) holds
shared for its whole life, so none runs meanwhile and none can start; a server that could upload
or delete beside the copy would make the copied set stale, and servers only read HANGAR_BLOBS at
start-up anyway. The gate is a PostgreSQL advisory lock or an flock, so it goes with a migration
that is killed.

What moves: every blob the catalog holds as `present`, each streamed from the current location
into the destination through the blob-store interface (bounded memory: a few chunks, or a few
multipart parts, per object; several objects at once), hashed as it streams (a source blob that
does not hash to its digest stops the migration before the switch), then read back from the
destination and hashed again with its size checked. An object the destination already holds
with the right size and content is skipped, so a run killed at any point resumes where it
stopped; one with the wrong size or content is copied again. Blobs being deleted, files the
catalog does not know and unfinished upload sessions do not move: sessions are cancelled at the
switch (their bytes are not blobs yet, nothing references them; a client starts them again).

Only once every blob verified does one catalog transaction record the destination as the store's
blob location (and cancel the sessions, and audit the move); from then on every process must run
with the HANGAR_BLOBS the report names. With `delete_source` the source objects are deleted after
that commit, each only after its destination copy is seen again: the store no longer reads from
the source, so no blob a live model, tag or trash entry references is removed from the place the
store reads (README, "Safety rules": invariant 1); nothing leaves the store itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import sqlalchemy as sa

from modelhangar.core import blob_location, s3_uploads
from modelhangar.core.blobstore import BlobStore, open_blob_store
from modelhangar.core.catalog import schema as t
from modelhangar.core.catalog.db import Catalog
from modelhangar.core.config import Settings
from modelhangar.core.errors import HangarError
from modelhangar.core.s3blobs import S3BlobStore
from modelhangar.core.store import PRESENT, Actor, Store, now

JOBS = 4
"""Objects copied at once by default."""


class MigrationError(HangarError):
    """The migration cannot start (same place, the store in use) or cannot finish."""


@dataclass
class Progress:
    """Where a migration stands; passed to the progress callback after every step."""

    objects: int = 0
    bytes: int = 0
    objects_done: int = 0
    bytes_done: int = 0
    last: str = ""
    """What happened to the last object: `copied`, `present`, `recopied`, `failed`."""
    last_digest: str = ""
    last_size: int = 0


@dataclass
class MigrationReport:
    source: str
    destination: str
    setting: str
    """The HANGAR_BLOBS every process of the store needs from now on."""
    blobs: int = 0
    bytes: int = 0
    copied: list[str] = field(default_factory=list)
    copied_bytes: int = 0
    present: list[str] = field(default_factory=list)
    """Already in the destination, with the right size and content."""
    recopied: list[str] = field(default_factory=list)
    """In the destination with the wrong size or content: copied again (also in `copied`)."""
    failed: list[dict[str, str]] = field(default_factory=list)
    switched: bool = False
    already_switched: bool = False
    """An earlier run switched the store already (this one at most deleted the source)."""
    uploads_cancelled: list[str] = field(default_factory=list)
    source_deleted: list[str] = field(default_factory=list)
    source_deleted_bytes: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        """Bytes copied per second."""
        return self.copied_bytes / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": not self.failed, "bytes_per_second": round(self.rate)}


ProgressCallback = Callable[[Progress], None]


def _hash(blobs: BlobStore, digest: str, size: int) -> str:
    path = blobs.local_path(digest)
    h = hashlib.sha256()
    if path is not None:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    else:
        for chunk in blobs.stream(digest, 0, size):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _verified(blobs: BlobStore, digest: str, size: int) -> bool:
    """Does `blobs` hold `digest` with this size and content?"""
    if blobs.size(digest) != size:
        return False
    try:
        return _hash(blobs, digest, size) == digest
    except (FileNotFoundError, OSError):
        return False


class _Copier:
    def __init__(
        self, source: BlobStore, dest: BlobStore, progress: ProgressCallback | None, state: Progress
    ) -> None:
        self.source, self.dest = source, dest
        self._progress = progress
        self._state = state
        self._lock = threading.Lock()
        self._inflight: dict[str, int] = {}
        self._finished_bytes = 0

    def _tell(self) -> None:
        if self._progress is not None:
            self._progress(replace(self._state))

    def _moved(self, digest: str, n: int) -> None:
        with self._lock:
            self._inflight[digest] = self._inflight.get(digest, 0) + n
            self._state.bytes_done = self._finished_bytes + sum(self._inflight.values())
            self._tell()

    def done(self, digest: str, size: int, outcome: str) -> None:
        with self._lock:
            self._inflight.pop(digest, None)
            self._finished_bytes += size
            self._state.objects_done += 1
            self._state.bytes_done = self._finished_bytes + sum(self._inflight.values())
            self._state.last, self._state.last_digest, self._state.last_size = outcome, digest, size
            self._tell()
            self._state.last = ""  # told once; byte ticks that follow carry no object event

    def one(self, digest: str, size: int) -> str:
        """Make the destination hold `digest`, verified; returns `present`, `copied` or `recopied`."""
        have = self.dest.size(digest)
        if have == size and _verified(self.dest, digest, size):
            return "present"
        outcome = "copied" if have is None else "recopied"
        with self._lock:
            self._inflight[digest] = 0
        writer = self.dest.writer()
        try:
            for chunk in self.source.stream(digest, 0, size):
                writer.write(chunk)
                self._moved(digest, len(chunk))
            got = writer.finish()
            if got != digest or writer.size != size:
                raise MigrationError(
                    f"the source copy of {digest} is damaged (it hashes to {got}, {writer.size} bytes, "
                    f"the catalog says {size}): run `hangar fsck --verify`"
                )
            self.dest.install(writer, digest)
        except BaseException:
            writer.discard()
            raise
        if not _verified(self.dest, digest, size):
            raise MigrationError(f"the destination's copy of {digest} does not verify after the copy")
        return outcome


def _open_at(settings: Settings, location: str, catalog: Catalog) -> BlobStore:
    return open_blob_store(replace(settings, blobs=location), catalog)


def _present_blobs(store: Store) -> list[tuple[str, int]]:
    with store.catalog.read() as conn:
        rows = conn.execute(
            sa.select(t.blobs.c.digest, t.blobs.c.size)
            .where(t.blobs.c.state == PRESENT)
            .order_by(t.blobs.c.digest)
        )
        return [(r.digest, int(r.size)) for r in rows]


@contextlib.contextmanager
def _gate_alone(settings: Settings) -> Iterator[None]:
    """Hold the blob-location gate alone for the block, or raise: the store must be offline."""
    catalog = Catalog(settings.database_url, lock_dir=settings.home)
    try:
        with catalog.gate(blob_location.GATE, shared=False) as alone:
            if not alone:
                raise MigrationError(
                    f"the store at {settings.home} is in use: stop every `hangar serve` and store command "
                    "on it (and any other migration) first; blobs move only while the store is offline"
                )
            yield
    finally:
        catalog.dispose()


def migrate(
    settings: Settings,
    to: str,
    *,
    delete_source: bool = False,
    allow_unknown: bool = False,
    jobs: int = JOBS,
    progress: ProgressCallback | None = None,
    actor: Actor | None = None,
) -> MigrationReport:
    """Move the blobs of the store `settings` names (from the location HANGAR_BLOBS gives) to `to`
    (`s3://BUCKET[/PREFIX]`, `file:/DIR`, a directory, or `` / `local` for the data directory's own
    files); see the module's docstring. Safe to run again after any interruption.

    A destination that holds blobs this catalog does not know may be another store's: this store's
    GC would reclaim them once it reads from there, so the migration refuses unless `allow_unknown`
    (they are this store's own old copies, from an earlier migration away from there)."""
    home = settings.home
    source = blob_location.normalize(settings.blobs, home)
    dest = blob_location.normalize(to, home)
    actor = actor or Actor(name="local", face="cli", admin=True)
    report = MigrationReport(source=source, destination=dest, setting=blob_location.setting(dest))
    started = time.monotonic()
    with _gate_alone(settings):
        at = _recorded(settings)
        if at is not None and at == dest and source != dest:
            report.already_switched = True  # an earlier run switched: at most the source is left to delete
            store = Store(replace(settings, blobs=dest), gate=False)
            try:
                if delete_source:
                    src = _open_at(settings, source, store.catalog)
                    try:
                        _delete_source(store, src, store.blobs, _present_blobs(store), report)
                    finally:
                        src.close()
            finally:
                store.close()
            report.seconds = time.monotonic() - started
            return report
        if source == dest:
            raise MigrationError(
                f"the store's blobs are already in {blob_location.describe(dest, home)}: nothing to move"
            )
        store = Store(settings, gate=False)  # refuses a HANGAR_BLOBS that is not the recorded place
        try:
            target = _open_at(settings, dest, store.catalog)
            try:
                if not allow_unknown:
                    _refuse_unknown(store, target, dest)
                _copy_all(store, target, jobs, progress, report)
                parts: list[str] = []
                if not report.failed:
                    parts = _switch(store, source, dest, actor, report)
                if report.switched and delete_source:
                    _delete_source(store, store.blobs, target, _present_blobs(store), report, parts)
            finally:
                target.close()
        finally:
            store.close()
    report.seconds = time.monotonic() - started
    return report


def _refuse_unknown(store: Store, target: BlobStore, dest: str) -> None:
    with store.catalog.read() as conn:
        known = {r.digest for r in conn.execute(sa.select(t.blobs.c.digest))}
    unknown = [d for d, _ in target.iter_blobs() if d not in known]
    if unknown:
        raise MigrationError(
            f"{blob_location.describe(dest, store.settings.home)} already holds {len(unknown)} blobs this "
            f"store does not know (e.g. {unknown[0]}): if another store keeps its blobs there, choose "
            "another place (this store's GC would reclaim them); if they are this store's old copies, "
            "run again with --allow-unknown"
        )


def _copy_all(
    store: Store, target: BlobStore, jobs: int, progress: ProgressCallback | None, report: MigrationReport
) -> None:
    blobs = _present_blobs(store)
    state = Progress(objects=len(blobs), bytes=sum(size for _, size in blobs))
    report.blobs, report.bytes = state.objects, state.bytes
    copier = _Copier(store.blobs, target, progress, state)
    if progress is not None:
        progress(replace(state))
    pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="migrate")
    try:
        futures = {pool.submit(copier.one, d, size): (d, size) for d, size in blobs}
        for f in as_completed(futures):
            digest, size = futures[f]
            try:
                outcome = f.result()
            except FileNotFoundError:
                outcome = "failed"
                report.failed.append(
                    {"digest": digest, "reason": "missing from the source: run `hangar fsck`"}
                )
            except (HangarError, OSError) as e:
                outcome = "failed"
                report.failed.append({"digest": digest, "reason": str(e)})
            if outcome == "present":
                report.present.append(digest)
            elif outcome in ("copied", "recopied"):
                report.copied.append(digest)
                report.copied_bytes += size
                if outcome == "recopied":
                    report.recopied.append(digest)
            copier.done(digest, size, outcome)
    finally:  # interrupted (Ctrl-C): the blobs not started yet are dropped, the running ones end
        pool.shutdown(wait=True, cancel_futures=True)


def _recorded(settings: Settings) -> str | None:
    catalog = Catalog(settings.database_url, lock_dir=settings.home)
    try:
        with catalog.read() as conn:
            return blob_location.recorded(conn)
    except sa.exc.DBAPIError:  # no catalog yet
        return None
    finally:
        catalog.dispose()


def _switch(store: Store, source: str, dest: str, actor: Actor, report: MigrationReport) -> list[str]:
    """One transaction: the catalog records `dest`, unfinished upload sessions end, the move is
    audited. Returns the keys of the ended sessions' parts (in a bucket source)."""
    with store.catalog.write() as conn:
        at = blob_location.recorded(conn)
        if at is not None and at != source:  # cannot happen under the gate; never switch blindly
            raise MigrationError(f"the catalog records {at} now, not {source}: run the migration again")
        sessions = [r.id for r in conn.execute(sa.select(t.uploads.c.id))]
        parts = [r.key for r in conn.execute(sa.select(t.upload_parts.c.key))]
        conn.execute(t.upload_parts.delete())
        conn.execute(t.uploads.delete())
        blob_location.record(conn, dest)
        conn.execute(
            t.audit.insert().values(
                at=now(),
                actor=actor.name,
                face=actor.face,
                action="migrate-blobs",
                target=dest or "local",
                dry_run=False,
                outcome="ok",
                bytes_freed=0,
                detail=json.dumps(
                    {
                        "from": source or "local",
                        "to": dest or "local",
                        "blobs": report.blobs,
                        "bytes": report.bytes,
                        "copied": len(report.copied),
                        "uploads_cancelled": sessions,
                    }
                ),
            )
        )
    report.switched = True
    report.uploads_cancelled = sessions
    return parts


def _delete_source(
    store: Store,
    source: BlobStore,
    current: BlobStore,
    blobs: list[tuple[str, int]],
    report: MigrationReport,
    parts: list[str] | None = None,
) -> None:
    """After the switch committed: delete each blob from the old place once the current place is seen
    to hold it (with its size); then the old place's upload-session leftovers."""
    with store.catalog.read() as conn:
        at = blob_location.recorded(conn)
    if at != report.destination:  # the store must read from the destination before anything goes
        raise MigrationError("the catalog does not record the destination: the source is kept")
    for digest, size in blobs:
        if current.size(digest) != size:
            report.failed.append({"digest": digest, "reason": "not in the destination: kept in the source"})
            continue
        with contextlib.suppress(FileNotFoundError):
            if source.delete(digest):
                report.source_deleted.append(digest)
                report.source_deleted_bytes += size
    if isinstance(source, S3BlobStore):
        s3_uploads.delete_parts(source, parts or [])
        return
    root = store.settings.home / "uploads"  # local sessions' files (ended by the switch)
    if root.is_dir():
        for entry in os.scandir(root):
            if entry.is_file(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
