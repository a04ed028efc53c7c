"""Resumable blob uploads: sessions that receive a blob in ordered chunks, then commit it.

A session is a catalog row (`uploads`) plus a file `<home>/uploads/<id>`; the row's `size` is
the committed offset, the next chunk must start there. One request at a time works on a
session: it holds an exclusive lock (an open-file-description `fcntl` lock) on the session file
for its whole life (a second one is refused at once, never queued), and it re-reads the row
after taking the lock, so a session cancelled, expired or completed meanwhile is seen as gone
before a byte is written. A chunk that does not start at the offset is refused without taking
the lock (the lock is only tested), so a stray chunk never makes the right one look busy.

Completing renames the file away from its session name first, then installs it through
`Store.import_blob_file` (digest check, row-lock protocol, hard link where possible), so no
later request can ever reach the inode that became a blob. The bytes are hashed as they are
written, and the hash state is kept in memory between the chunks of a session, so completing
does not read the blob back (a session whose chunks went to several processes is hashed once at
the end instead). A session expires when it has been idle for `HANGAR_UPLOAD_EXPIRY` (default
1h): from then on it is unknown to every request, and the next GC removes it with `expire`.

Sessions are capped, so that no client can fill the disk and the catalog with them: at most
HANGAR_UPLOAD_SESSIONS_PER_CLIENT open sessions per client (the face says who the client is) and
HANGAR_UPLOAD_SESSIONS in all; past either, `start` raises TooManyUploads.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import struct
import threading
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa

from modelhangar.core.blobstore import write_all_at
from modelhangar.core.catalog import schema as t
from modelhangar.core.digests import parse_digest
from modelhangar.core.errors import HangarError, NotFound, SizeMismatch, Unavailable
from modelhangar.core.store import PRESENT, Actor, BlobCommit, Released, Statements, Store, now

_ID_RE = re.compile(r"[0-9a-f]{32}")
_COMMITTING = ".committing"
_MAX_RUNNING_HASHES = 1024


class _RunningHashes:
    """sha256 state of sessions between chunks, in this process: upload id -> (offset, hasher)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: OrderedDict[str, tuple[int, Any]] = OrderedDict()

    def take(self, upload_id: str, offset: int) -> Any | None:
        """The hasher of everything before `offset` (a fresh one at 0), or None if not known here."""
        with self._lock:
            state = self._states.pop(upload_id, None)
        if offset == 0:
            return hashlib.sha256()
        return state[1] if state is not None and state[0] == offset else None

    def keep(self, upload_id: str, offset: int, hasher: Any) -> None:
        with self._lock:
            self._states[upload_id] = (offset, hasher)
            while len(self._states) > _MAX_RUNNING_HASHES:
                self._states.popitem(last=False)  # that session is hashed at the end instead


_running = _RunningHashes()


class UploadUnknown(NotFound):
    """No such upload session (never started, cancelled, completed or expired)."""


class TooManyUploads(HangarError):
    """The client, or everyone together, holds as many open sessions as the settings allow."""


class UploadBusy(HangarError):
    """Another request is working on this upload session right now."""


class RangeInvalid(HangarError):
    """A chunk does not start where the upload stands; `offset` is where it does."""

    def __init__(self, offset: int, message: str) -> None:
        self.offset = offset
        super().__init__(message)


@dataclass(frozen=True)
class Upload:
    id: str
    repository: str
    created_at: float
    updated_at: float
    size: int
    client: str | None = None
    """Who opened it (`faces/client.py`): a session a user opened is that user's alone."""

    def serves(self, repository: str, client: str | None) -> bool:
        """Whether a request of `client` on `repository` may use this session: the repository
        (case-insensitively) and, for a session a signed-in user opened (`user:NAME`), that user;
        to anyone else it does not exist (README, "Accounts")."""
        if self.repository.lower() != repository.lower():
            return False
        return not (self.client or "").startswith("user:") or client == self.client

    def at(self, size: int, updated_at: float | None = None) -> Upload:
        """The same session at another offset (and last-chunk time)."""
        return replace(self, size=size, updated_at=self.updated_at if updated_at is None else updated_at)


def upload_expiry(store: Store) -> float:
    """Seconds a session lives after its last chunk (HANGAR_UPLOAD_EXPIRY, default 1h)."""
    return store.settings.upload_expiry


def _live(store: Store, upload: Upload | None) -> bool:
    return upload is not None and upload.updated_at > now() - upload_expiry(store)


def uploads_dir(store: Store) -> Path:
    return store.settings.home / "uploads"


def is_upload_id(upload_id: str) -> bool:
    return isinstance(upload_id, str) and _ID_RE.fullmatch(upload_id) is not None


def _path(store: Store, upload_id: str) -> Path:
    """The session file; the id is checked first, so no input ever reaches outside the directory."""
    if not is_upload_id(upload_id):
        raise UploadUnknown(f"upload {upload_id!r} unknown")
    return uploads_dir(store) / upload_id


def _row(conn: sa.Connection, upload_id: str) -> Upload | None:
    row = conn.execute(sa.select(t.uploads).where(t.uploads.c.id == upload_id)).first()
    if row is None:
        return None
    return Upload(row.id, row.repository, row.created_at, row.updated_at, int(row.size), row.client)


def _check_caps(store: Store, conn: sa.Connection, client: str | None, ts: float) -> None:
    live = t.uploads.c.updated_at > ts - upload_expiry(store)
    count = sa.select(sa.func.count()).select_from(t.uploads)
    settings = store.settings
    if client is not None:
        mine = conn.execute(count.where(live, t.uploads.c.client == client)).scalar_one()
        if mine >= settings.upload_sessions_per_client:
            raise TooManyUploads(
                f"{'user ' + client[5:] if client.startswith('user:') else 'this client'} holds {mine} "
                "unfinished uploads, the most allowed "
                "(HANGAR_UPLOAD_SESSIONS_PER_CLIENT): finish or cancel one first"
            )
    if conn.execute(count.where(live)).scalar_one() >= settings.upload_sessions:
        raise TooManyUploads("too many unfinished uploads on this server (HANGAR_UPLOAD_SESSIONS): try later")


def start(store: Store, repository: str, client: str | None = None) -> Upload:
    """Open a new, empty session for a repository, on behalf of `client`; raises TooManyUploads."""
    upload_id = uuid.uuid4().hex
    ts = now()
    upload = Upload(upload_id, repository, ts, ts, 0, client)
    with store.catalog.write() as conn:  # the count and the insert in one transaction
        _check_caps(store, conn, client, ts)
        if not _in_bucket(store):  # in an object store the session is its row and its parts
            directory = uploads_dir(store)
            directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(directory / upload_id, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            os.close(fd)
        conn.execute(
            t.uploads.insert().values(
                id=upload_id, repository=repository, created_at=ts, updated_at=ts, size=0, client=client
            )
        )
    return upload


def get(store: Store, upload_id: str, repository: str, client: str | None = None) -> Upload:
    """A live session that serves `client` on `repository` (`Upload.serves`); raises UploadUnknown."""
    _path(store, upload_id)
    with store.catalog.read() as conn:
        upload = _row(conn, upload_id)
    if upload is None or not _live(store, upload) or not upload.serves(repository, client):
        raise UploadUnknown(f"upload {upload_id} unknown")
    return upload


def cancel(store: Store, upload_id: str, repository: str, client: str | None = None) -> None:
    """Drop a session and its bytes; a request writing to it at that moment then fails."""
    path = _path(store, upload_id)
    with store.catalog.write() as conn:
        upload = _row(conn, upload_id)
        if upload is None or not upload.serves(repository, client):
            raise UploadUnknown(f"upload {upload_id} unknown")
        conn.execute(t.uploads.delete().where(t.uploads.c.id == upload_id))
    if _in_bucket(store):
        from modelhangar.core import s3_uploads

        s3_uploads.forget(store, [upload_id])
        return
    path.unlink(missing_ok=True)


def save_offset(store: Store, upload: Upload, offset: int, also: Statements | None = None) -> Upload:
    """Commit `offset` as the session's new offset (running `also` in that transaction); raises
    UploadUnknown if the session is gone or no longer at `upload.size` (cancelled meanwhile)."""
    ts = now()
    with store.catalog.write() as conn:
        result = conn.execute(
            t.uploads.update()
            .where(t.uploads.c.id == upload.id, t.uploads.c.size == upload.size)
            .values(size=offset, updated_at=ts)
        )
        if result.rowcount != 1:
            raise UploadUnknown(f"upload {upload.id} was cancelled")
        if also is not None:
            also(conn)
    return upload.at(offset, ts)


def _flock_struct(kind: int) -> bytes:
    # struct flock on Linux (x86-64, arm64): type, whence, start, len (0: to the end), pid (0 for
    # open-file-description locks), padded to 32 bytes.
    return struct.pack("hhqqi4x", kind, os.SEEK_SET, 0, 0, 0)


_HELD = frozenset({errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES})
"""What a lock taken without waiting answers while another open file holds it."""
_NO_OFD = frozenset({errno.EINVAL, errno.ENOLCK, errno.EOPNOTSUPP})
"""What a filesystem without open-file-description locks answers: the flock alone is taken there."""


def _lock(fd: int, kind: int = fcntl.F_WRLCK) -> bool:
    """Lock the whole file, without waiting; False if another open file holds a conflicting lock
    (the caller then closes `fd`, which lets go of whatever this took).

    Open-file-description locks, like flock, belong to one `open` (not to the process), so two
    requests in one server exclude each other, and a dead process's locks go with it; unlike
    flock they can be tested without being taken (`_held`). The flock is taken as well, so that
    processes of versions that only flock the session (a store upgraded one server at a time)
    and this one still exclude each other.
    """
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _flock_struct(kind))
    except OSError as e:
        if e.errno in _HELD:
            return False
        if e.errno not in _NO_OFD:
            raise
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in _HELD:
            return False
        raise
    return True


def _held(fd: int) -> bool:
    """Whether another request holds the session (a lock test that takes nothing; False where the
    filesystem has no open-file-description locks: the flock then decides, under `_lock`)."""
    try:
        got = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, _flock_struct(fcntl.F_WRLCK))
    except OSError as e:
        if e.errno in _NO_OFD:
            return False
        raise
    return bool(struct.unpack("hhqqi4x", got)[0] != fcntl.F_UNLCK)


class UploadHandle:
    """A session held by one request: append bytes, then `save` (a chunk) or `complete` (the blob).

    Anything but a successful `save`/`complete` leaves the session where it was: `abort`
    truncates what this request wrote.
    """

    def __init__(self, store: Store, upload: Upload, fd: int, path: Path) -> None:
        self.store = store
        self.upload = upload
        self.path = path
        self._fd: int | None = fd
        self.start = upload.size
        self.offset = upload.size
        self._hasher = _running.take(upload.id, upload.size)

    @property
    def written(self) -> int:
        return self.offset - self.start

    def _fileno(self) -> int:
        if self._fd is None:
            raise UploadUnknown(f"upload {self.upload.id} is closed")
        return self._fd

    def write(self, data: bytes) -> None:
        self.write_piece([data])
        self.hash_piece([data])

    def write_piece(self, chunks: Sequence[bytes]) -> None:
        """Append received chunks (a PieceSink: may run beside `hash_piece`)."""
        self.offset += write_all_at(self._fileno(), chunks, self.offset)

    def hash_piece(self, chunks: Sequence[bytes]) -> None:
        if self._hasher is not None:
            for c in chunks:
                self._hasher.update(c)

    def _check_length(self, expected: int | None) -> None:
        if expected is not None and expected != self.written:
            raise SizeMismatch(f"received {self.written} bytes, expected {expected}")

    def save(self, expected: int | None = None) -> Upload:
        """Commit this request's bytes as the session's new offset (and release the session)."""
        try:
            self._check_length(expected)
            saved = save_offset(self.store, self.upload, self.offset)
        except BaseException:
            self.abort()
            raise
        if self._hasher is not None:
            _running.keep(self.upload.id, self.offset, self._hasher)
        self._close()
        return saved

    def complete(
        self, digest: str, expected: int | None = None, *, also: Statements | None = None
    ) -> BlobCommit:
        """Install everything received as the blob `digest` (running `also` in that transaction); the
        session ends either way, except when this request's own bytes were short (then only they
        are dropped).

        Raises DigestMismatch (nothing kept) if the content is not `digest`.
        """
        want = str(parse_digest(digest))
        try:
            self._check_length(expected)
            os.fchmod(self._fileno(), 0o600)  # the inode may become the blob file itself
            os.fsync(self._fileno())
        except BaseException:
            self.abort()
            raise
        committing = self.path.with_name(self.path.name + _COMMITTING)
        try:
            os.rename(self.path, committing)  # from here on no request can open the session file
        except FileNotFoundError:
            self._close()
            raise UploadUnknown(f"upload {self.upload.id} was cancelled") from None
        known = "sha256:" + self._hasher.hexdigest() if self._hasher is not None else None
        upload_id = self.upload.id

        def end_session(conn: sa.Connection) -> None:
            conn.execute(t.uploads.delete().where(t.uploads.c.id == upload_id))

        def install(conn: sa.Connection) -> None:
            end_session(conn)
            if also is not None:
                also(conn)

        try:  # the session row goes in the transaction that installs the blob
            return self.store.import_blob_file(committing, want, known_digest=known, also=install)
        except BaseException:
            # the failure that got here is the one to answer, not a catalog that is gone meanwhile
            with contextlib.suppress(Unavailable), self.store.catalog.write() as conn:
                end_session(conn)
            raise
        finally:
            committing.unlink(missing_ok=True)
            self._close()

    def abort(self) -> None:
        """Forget what this request wrote and release the session."""
        if self._fd is not None and self.offset != self.start:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self.start)
            self.offset = self.start
        self._close()

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
            self._fd = None


def _in_bucket(store: Store) -> bool:
    from modelhangar.core.s3blobs import S3BlobStore

    return isinstance(store.blobs, S3BlobStore)


def acquire(
    store: Store, upload_id: str, repository: str, *, client: str | None = None, start_at: int | None = None
) -> UploadHandle:
    """Take a session for one request of `client` (`get`); `start_at` (a chunk's first byte) must be
    its offset.

    Raises UploadUnknown, UploadBusy or RangeInvalid.
    """
    path = _path(store, upload_id)
    if _in_bucket(store):
        from modelhangar.core import s3_uploads

        return s3_uploads.acquire(store, upload_id, repository, client, start_at)  # type: ignore[return-value]
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise UploadUnknown(f"upload {upload_id} unknown") from None
    try:
        # To a client it does not serve there is no session: that is settled before anything tells
        # that another request holds it, or lets this one hold it (README, "Accounts").
        upload = get(store, upload_id, repository, client)
        if start_at is not None:
            _check_start(fd, upload, start_at)
        if not _lock(fd):
            raise _busy(upload_id)
        upload, offset = _current(store, fd, upload_id, repository, client)
        if os.fstat(fd).st_size != offset:
            os.ftruncate(fd, offset)  # bytes of a request that died before saving
        if offset != upload.size:
            upload = upload.at(offset)
        if start_at is not None and start_at != offset:
            raise RangeInvalid(offset, f"chunk starts at {start_at}, the upload is at {offset}")
    except BaseException:
        os.close(fd)
        raise
    return UploadHandle(store, upload, fd, path)


def _current(
    store: Store, fd: int, upload_id: str, repository: str, client: str | None
) -> tuple[Upload, int]:
    """The live session (`get`) and its offset (what its file and its row agree on)."""
    upload = get(store, upload_id, repository, client)
    return upload, min(os.fstat(fd).st_size, upload.size)


def _busy(upload_id: str) -> UploadBusy:
    return UploadBusy(f"upload {upload_id} is busy with another request")


def _check_start(fd: int, upload: Upload, start_at: int) -> None:
    """Before the lock, with the session as just read: a chunk that does not start at the offset is
    refused without locking, so that it cannot make the right one busy ("busy" if another request
    holds the session, else out of range). What is read without the lock only refuses; `acquire`
    checks again under the lock, and a chunk at the offset of a held session is busy there."""
    offset = min(os.fstat(fd).st_size, upload.size)
    if start_at != offset:  # refused either way, never by taking the lock
        if _held(fd):
            raise _busy(upload.id)
        raise RangeInvalid(offset, f"chunk starts at {start_at}, the upload is at {offset}")


def expire(store: Store, older_than: float | None = None) -> list[str]:
    """Remove sessions idle for `older_than` seconds (default: the expiry setting) and leftover
    files; skips any session a request holds. Returns what was removed, as `uploads/<name>`."""
    cutoff = now() - (upload_expiry(store) if older_than is None else older_than)
    directory = uploads_dir(store)
    removed: list[str] = []
    with store.catalog.read() as conn:
        stale = [
            r.id for r in conn.execute(sa.select(t.uploads.c.id).where(t.uploads.c.updated_at <= cutoff))
        ]
    if _in_bucket(store):
        return _expire_in_bucket(store, stale, cutoff)
    for upload_id in stale:
        fd = None
        with contextlib.suppress(FileNotFoundError):
            fd = os.open(directory / upload_id, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            if fd is not None and not _lock(fd, fcntl.F_RDLCK):  # a writer's lock conflicts
                continue
            with store.catalog.write() as conn:
                gone = conn.execute(
                    t.uploads.delete().where(t.uploads.c.id == upload_id, t.uploads.c.updated_at <= cutoff)
                ).rowcount
            if gone:
                (directory / upload_id).unlink(missing_ok=True)
                removed.append(f"uploads/{upload_id}")
        finally:
            if fd is not None:
                os.close(fd)
    if directory.is_dir():
        removed += _sweep_files(store, directory, cutoff)
    return removed


def _expire_in_bucket(store: Store, stale: list[str], cutoff: float) -> list[str]:
    from modelhangar.core import s3_uploads

    removed: list[str] = []
    for upload_id in stale:
        with store.catalog.lease(f"upload-{upload_id}") as free:
            if not free:
                continue  # a request holds it
            with store.catalog.write() as conn:
                gone = conn.execute(
                    t.uploads.delete().where(t.uploads.c.id == upload_id, t.uploads.c.updated_at <= cutoff)
                ).rowcount
            if gone:
                s3_uploads.forget(store, [upload_id])
                removed.append(f"uploads/{upload_id}")
    return removed + s3_uploads.sweep(store)


def _sweep_files(store: Store, directory: Path, cutoff: float) -> list[str]:
    """Files no live session owns: interrupted completions, junk, files whose row is gone."""
    removed = []
    with store.catalog.read() as conn:
        live = {r.id for r in conn.execute(sa.select(t.uploads.c.id))}
    with os.scandir(directory) as it:
        entries = [e for e in it if e.name not in live]
    for entry in entries:
        try:
            if entry.stat(follow_symlinks=False).st_mtime > cutoff:
                continue
            fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:  # vanished, a symlink, or a directory: leave symlinks and dirs alone
            if entry.is_symlink():
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed.append(f"uploads/{entry.name}")
            continue
        try:
            if not _lock(fd, fcntl.F_RDLCK):
                continue
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                os.unlink(entry.path)
                removed.append(f"uploads/{entry.name}")
        finally:
            os.close(fd)
    return removed


BlobDeletion = Literal["deleted", "referenced", "recent", "unknown"]


def retire_loose_blob(
    store: Store, conn: sa.Connection, digest: str, actor: Actor, *, target: str | None = None
) -> tuple[BlobDeletion, Released]:
    """In the caller's write transaction: retire a blob no manifest references, under the row lock,
    and audit it as `target` (default: the digest). The caller commits, then calls
    `finish_deletions` with the released blobs.

    `referenced`: a manifest names it, nothing changed; `recent`: a writer used it within the
    reuse fuse, so the reclaim timer frees it when the fuse ends; `unknown`: not present.
    """
    released = Released()
    ts = now()
    store.retire_blobs(conn, [digest], ts, released)
    if released.blobs:
        conn.execute(
            t.audit.insert().values(
                at=ts,
                actor=actor.name,
                face=actor.face,
                action="delete-blob",
                target=target or digest,
                dry_run=False,
                outcome="ok",
                bytes_freed=released.bytes,
                detail=json.dumps({"blobs": released.blobs}),
            )
        )
        return "deleted", released
    if released.deferred:
        return "recent", released
    state = conn.execute(sa.select(t.blobs.c.state).where(t.blobs.c.digest == digest)).scalar()
    return ("referenced" if state == PRESENT else "unknown"), released


def withdraw_blob(store: Store, digest: str, actor: Actor) -> BlobDeletion:
    """Delete a blob no manifest references (e.g. an upload never used), in a transaction of its own;
    see `retire_loose_blob`."""
    d = str(parse_digest(digest))
    with store.catalog.write() as conn:
        outcome, released = retire_loose_blob(store, conn, d, actor)
    store.finish_deletions(released.blobs)
    return outcome
