"""Resumable upload sessions over an object store: any server continues a session another started.

The session is its catalog row (`uploads`, `size` the committed offset) plus its parts
(`upload_parts`): each request that saves bytes streams them into one object of its own,
`uploads/<id>/<offset>` (a multipart upload while it streams), and commits the part and the new
offset in one transaction. One request at a time works on a session: it holds the catalog lease
`upload-<id>` (a PostgreSQL advisory lock, so it goes with a server that dies) and re-reads the row
after taking it.

Completing composes the parts into one temporary object (server-side copies of parts of 5 MiB or
more; the bytes streamed through otherwise), checks its digest (the hash kept in memory when one
process saw every byte, else the object read back), and installs it under the blob's row lock, as
`Store.commit_blob` does; a mismatch leaves nothing. GC expires idle sessions and removes objects
under `uploads/` that no session owns (README, "Safety rules").
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from contextlib import AbstractContextManager
from typing import Any

import sqlalchemy as sa

from modelhangar.core.catalog import schema as t
from modelhangar.core.digests import parse_digest
from modelhangar.core.errors import DigestMismatch, SizeMismatch, Unavailable
from modelhangar.core.s3blobs import MIN_PART, S3BlobStore, S3Writer, _wrapped
from modelhangar.core.store import BlobCommit, Statements, Store


def _parts(conn: sa.Connection, upload_id: str) -> list[tuple[int, int, str]]:
    p = t.upload_parts.c
    q = sa.select(p.offset, p.size, p.key).where(p.upload_id == upload_id).order_by(p.offset)
    return [(int(r.offset), int(r.size), r.key) for r in conn.execute(q)]


def part_key(blobs: S3BlobStore, upload_id: str, offset: int) -> str:
    return f"{blobs.prefix}uploads/{upload_id}/{offset:020d}-{uuid.uuid4().hex[:8]}"


def delete_parts(blobs: S3BlobStore, keys: list[str]) -> None:
    for key in keys:
        with contextlib.suppress(Exception):
            blobs.s3.delete_object(Bucket=blobs.bucket, Key=key)


class S3UploadHandle:
    """A session held by one request (see `uploads.UploadHandle`, whose interface this has)."""

    def __init__(self, store: Store, upload: Any, lease: AbstractContextManager[bool], hasher: Any) -> None:
        assert isinstance(store.blobs, S3BlobStore)
        self.store = store
        self.blobs: S3BlobStore = store.blobs
        self.upload = upload
        self.start = upload.size
        self._lease: AbstractContextManager[bool] | None = lease
        self._hasher = hasher
        self._writer = S3Writer(store=self.blobs, key=part_key(self.blobs, upload.id, upload.size))

    @property
    def offset(self) -> int:
        return int(self.start + self._writer.size)

    @property
    def written(self) -> int:
        return int(self._writer.size)

    def write(self, data: bytes) -> None:
        self.write_piece([data])
        self.hash_piece([data])

    def write_piece(self, chunks: Any) -> None:
        self._writer.write_piece(chunks)

    def hash_piece(self, chunks: Any) -> None:
        self._writer.hash_piece(chunks)  # this part's own hash (unused) and the session's
        if self._hasher is not None:
            for c in chunks:
                self._hasher.update(c)

    def _check_length(self, expected: int | None) -> None:
        if expected is not None and expected != self.written:
            raise SizeMismatch(f"received {self.written} bytes, expected {expected}")

    def _save_part(self, conn: sa.Connection) -> None:
        if self.written:
            conn.execute(
                t.upload_parts.insert().values(
                    upload_id=self.upload.id, offset=self.start, size=self.written, key=self._writer.key
                )
            )

    def save(self, expected: int | None = None) -> Any:
        from modelhangar.core.uploads import _running, save_offset

        try:
            self._check_length(expected)
            if self.written:
                self._writer.finish()
            saved = save_offset(self.store, self.upload, self.offset, also=self._save_part)
        except BaseException:
            self.abort()
            raise
        if self._hasher is not None:
            _running.keep(self.upload.id, self.offset, self._hasher)
        self._release()
        return saved

    def complete(
        self, digest: str, expected: int | None = None, *, also: Statements | None = None
    ) -> BlobCommit:
        from modelhangar.core.uploads import UploadUnknown

        want = str(parse_digest(digest))
        upload_id = self.upload.id
        try:
            self._check_length(expected)
            if self.written:
                self._writer.finish()
        except BaseException:
            self.abort()
            raise
        with self.store.catalog.read() as conn:
            parts = _parts(conn, upload_id)
        if self.written:
            parts.append((self.start, self.written, self._writer.key))
        keys = [k for _, _, k in parts]

        def end_session(conn: sa.Connection) -> None:
            conn.execute(t.uploads.delete().where(t.uploads.c.id == upload_id))
            conn.execute(t.upload_parts.delete().where(t.upload_parts.c.upload_id == upload_id))

        def install(conn: sa.Connection) -> None:
            gone = conn.execute(t.uploads.delete().where(t.uploads.c.id == upload_id)).rowcount
            if not gone:
                raise UploadUnknown(f"upload {upload_id} was cancelled")
            conn.execute(t.upload_parts.delete().where(t.upload_parts.c.upload_id == upload_id))
            if also is not None:
                also(conn)

        composed: str | None = None
        try:
            composed, size, actual = self._compose(parts)
            if actual != want:
                raise DigestMismatch(want, actual)
            blobs = self.blobs
            key = composed
            created = self.store._install_blob(
                want, size, lambda: blobs._copy(key, blobs.key(want), size), install
            )
            return BlobCommit(digest=want, size=size, created=created)
        except BaseException:
            # the failure that got here is the one to answer, not a catalog that is gone meanwhile
            with contextlib.suppress(Unavailable), self.store.catalog.write() as conn:
                end_session(conn)
            raise
        finally:
            delete_parts(self.blobs, keys + ([composed] if composed and composed not in keys else []))
            self._release()

    def _compose(self, parts: list[tuple[int, int, str]]) -> tuple[str, int, str]:
        """(temporary key, size, digest) of the parts joined in order."""
        blobs, s3, bucket = self.blobs, self.blobs.s3, self.blobs.bucket
        size = sum(n for _, n, _ in parts)
        known = "sha256:" + self._hasher.hexdigest() if self._hasher is not None else None
        if len(parts) == 1:  # one part is the blob as it is: installed from its own key, not copied
            key = parts[0][2]
            if known is not None:
                return key, size, known
            h = hashlib.sha256()
            for chunk in _read(blobs, key, size):
                h.update(chunk)
            return key, size, "sha256:" + h.hexdigest()
        target = blobs._tmp_key()
        if all(n >= MIN_PART for _, n, _ in parts[:-1]) and len(parts) > 1:
            with _wrapped("joining upload parts"):
                mpu = s3.create_multipart_upload(Bucket=bucket, Key=target)["UploadId"]
                done = []
                for number, (_, _, key) in enumerate(parts, 1):
                    r = s3.upload_part_copy(
                        Bucket=bucket,
                        Key=target,
                        UploadId=mpu,
                        PartNumber=number,
                        CopySource={"Bucket": bucket, "Key": key},
                    )
                    done.append({"PartNumber": number, "ETag": r["CopyPartResult"]["ETag"]})
                s3.complete_multipart_upload(
                    Bucket=bucket, Key=target, UploadId=mpu, MultipartUpload={"Parts": done}
                )
            if known is not None:
                return target, size, known
            h = hashlib.sha256()
            for chunk in _read(blobs, target, size):
                h.update(chunk)
            return target, size, "sha256:" + h.hexdigest()
        # None, or small parts: stream them through one writer.
        w = S3Writer(store=blobs, key=target)
        try:
            for _, n, key in parts:
                for chunk in _read(blobs, key, n):
                    w.write(chunk)
            w.finish()
        except BaseException:
            w.discard()
            raise
        return target, size, w.digest

    def abort(self) -> None:
        self._writer.discard()
        self._release()

    def _release(self) -> None:
        if self._lease is not None:
            self._lease.__exit__(None, None, None)
            self._lease = None


def _read(blobs: S3BlobStore, key: str, size: int) -> Any:
    if size <= 0:
        return iter(())
    with _wrapped("reading an upload part"):
        body = blobs.s3.get_object(Bucket=blobs.bucket, Key=key)["Body"]
    return body.iter_chunks(1 << 20)


def acquire(
    store: Store, upload_id: str, repository: str, client: str | None, start_at: int | None
) -> S3UploadHandle:
    from modelhangar.core.uploads import RangeInvalid, _busy, _running, get

    lease = store.catalog.lease(f"upload-{upload_id}")
    # To a client it does not serve there is no session: settled before the lease (README, "Accounts").
    offset = get(store, upload_id, repository, client).size
    if start_at is not None and start_at != offset:
        # Refused without reading under the lease, which is taken only for the instant that tells
        # "busy" from "out of range", so a stray chunk barely overlaps the right one.
        with lease as free:
            pass
        if not free:
            raise _busy(upload_id)
        raise RangeInvalid(offset, f"chunk starts at {start_at}, the upload is at {offset}")
    if not lease.__enter__():
        lease.__exit__(None, None, None)
        raise _busy(upload_id)
    try:
        upload = get(
            store, upload_id, repository, client
        )  # after the lease: sees a cancel, expiry or completion
        if start_at is not None and start_at != upload.size:
            raise RangeInvalid(upload.size, f"chunk starts at {start_at}, the upload is at {upload.size}")
        return S3UploadHandle(store, upload, lease, _running.take(upload_id, upload.size))
    except BaseException:
        lease.__exit__(None, None, None)
        raise


def forget(store: Store, upload_ids: list[str]) -> None:
    """Remove the part objects of sessions whose rows are gone (the caller deleted them)."""
    assert isinstance(store.blobs, S3BlobStore)
    with store.catalog.write() as conn:
        q = sa.select(t.upload_parts.c.key).where(t.upload_parts.c.upload_id.in_(upload_ids))
        keys = [r.key for r in conn.execute(q)]
        conn.execute(t.upload_parts.delete().where(t.upload_parts.c.upload_id.in_(upload_ids)))
    delete_parts(store.blobs, keys)


def sweep(store: Store) -> list[str]:
    """Objects and multipart uploads under `uploads/` of sessions that no longer exist (a crash
    between a session's end and the removal of its parts), skipping any session a request holds."""
    blobs = store.blobs
    assert isinstance(blobs, S3BlobStore)
    base = f"{blobs.prefix}uploads/"
    removed: list[str] = []
    with store.catalog.read() as conn:
        live = {r.id for r in conn.execute(sa.select(t.uploads.c.id))}
    found: list[tuple[str, str | None]] = [(o["Key"], None) for o in blobs._pages(base)]
    found += [(k, u) for k, u in blobs._multipart_uploads(base)]
    for key, mpu in found:
        upload_id = key[len(base) :].split("/", 1)[0]
        if upload_id in live:
            continue
        with store.catalog.lease(f"upload-{upload_id}") as free:
            if not free:
                continue
            with store.catalog.read() as conn:
                if conn.execute(sa.select(t.uploads.c.id).where(t.uploads.c.id == upload_id)).first():
                    continue
            with contextlib.suppress(FileNotFoundError), _wrapped("removing an upload part"):
                if mpu is None:
                    blobs.s3.delete_object(Bucket=blobs.bucket, Key=key)
                else:
                    blobs.s3.abort_multipart_upload(Bucket=blobs.bucket, Key=key, UploadId=mpu)
            removed.append(key[len(blobs.prefix) :])
    return removed
