"""Blobs in an S3-compatible bucket (`HANGAR_BLOBS=s3://BUCKET[/PREFIX]`), through boto3.

Keys under the prefix:

* `blobs/sha256/<hex>`: a blob, present only after its digest was verified;
* `tmp/<proc>/<uuid>`: an upload being written by the process `<proc>` (a multipart upload while
  it streams, one object once complete); it is copied to its blob key under the catalog's row
  lock, then deleted;

An upload streams: bytes are hashed as they arrive and cut into parts of `HANGAR_S3_PART_SIZE`
sent while the next ones arrive (a few in flight), so no local copy is ever made. A blob whose
digest does not match is never copied to its blob key: its temporary object and multipart upload
are removed at once (and, if the process dies first, by the next GC).

No flock and no clock decides which temporary objects are dead: each process holds a lease for
its whole life (`Catalog.lease("s3-proc-<proc>")`: a PostgreSQL advisory lock on a
connection of its own, an flock on SQLite), and the sweep removes only the temporary objects and
multipart uploads of processes whose lease it can take (README, "Safety rules": invariant 1).
The endpoint, region and credentials are read the standard AWS way (AWS_ENDPOINT_URL, AWS_REGION,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws); the bucket is checked at start-up
so a wrong credential fails there, not at the first upload.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from modelhangar.core.digests import parse_digest
from modelhangar.core.errors import HangarError, Unavailable
from modelhangar.core.waits import may_wait

MIN_PART = 5 << 20
READ_CHUNK = 1 << 20
PARTS_IN_FLIGHT = 4
_pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="s3-part")


class BlobStoreUnavailable(Unavailable):
    """The object store did not answer (or refused); the request may be retried."""

    retry_after = 5
    advice = "the blob store is unavailable right now; nothing was kept, retry in a few seconds"
    """What every face answers (a 503 with `Retry-After`): nothing half-written is kept (README)."""


class BlobStoreConfigError(HangarError):
    """HANGAR_BLOBS names a bucket this process cannot use (wrong credentials, no such bucket)."""


def parse_s3_url(url: str) -> tuple[str, str]:
    """(bucket, prefix without slashes) of `s3://BUCKET[/PREFIX]`."""
    if not url.startswith("s3://"):
        raise ValueError(f"invalid blob store {url!r}: use s3://BUCKET[/PREFIX]")
    bucket, _, prefix = url[5:].partition("/")
    if not bucket:
        raise ValueError(f"invalid blob store {url!r}: no bucket (use s3://BUCKET[/PREFIX])")
    return bucket, prefix.strip("/")


def _client(path_style: bool) -> Any:
    import boto3
    from botocore.config import Config

    # No SHA-256 of each request body for its signature (botocore signs bodies over plain HTTP only;
    # over HTTPS it already skips them): a part's integrity in transit is its CRC32 checksum, which
    # botocore sends and the object store checks, and a blob's is its digest, verified before it is
    # installed (README, "Blobs in S3 and several servers"). It was the upload's largest CPU cost.
    config = Config(
        s3={"addressing_style": "path" if path_style else "auto", "payload_signing_enabled": False},
        retries={"max_attempts": 3, "mode": "standard"},
        max_pool_connections=64,
        connect_timeout=5,
        read_timeout=60,
    )
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return boto3.session.Session().client("s3", region_name=region, config=config)


def _is_missing(exc: BaseException) -> bool:
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return False
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound", "NoSuchUpload")


@contextlib.contextmanager
def _wrapped(what: str) -> Iterator[None]:
    """Turn the S3 client's failures into BlobStoreUnavailable (a 503 with a retry hint)."""
    may_wait("the object store")
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError) as e:
        if _is_missing(e):
            raise FileNotFoundError(what) from e
        raise BlobStoreUnavailable(f"the object store failed on {what}: {e}") from e


def check_bucket(url: str, *, path_style: bool = False) -> None:
    """Raise BlobStoreConfigError unless this process can list the bucket `url` names."""
    bucket, prefix = parse_s3_url(url)
    _check(_client(path_style), url, bucket, f"{prefix}/" if prefix else "")


def _check(s3: Any, url: str, bucket: str, prefix: str) -> None:
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    try:
        s3.head_bucket(Bucket=bucket)
        s3.list_objects_v2(Bucket=bucket, Prefix=prefix + "blobs/", MaxKeys=1)
    except NoCredentialsError:
        raise BlobStoreConfigError(
            f"HANGAR_BLOBS={url}: no AWS credentials found (set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"
        ) from None
    except ClientError as e:
        code = str(e.response.get("Error", {}).get("Code", ""))
        why = {
            "403": "access denied: check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the profile)",
            "AccessDenied": "access denied: check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY",
            "InvalidAccessKeyId": "the access key is not known to the server (AWS_ACCESS_KEY_ID)",
            "SignatureDoesNotMatch": "the secret key is wrong (AWS_SECRET_ACCESS_KEY)",
            "404": "no such bucket",
            "NoSuchBucket": "no such bucket",
        }.get(code, f"the server answered {code or e}")
        raise BlobStoreConfigError(f"HANGAR_BLOBS={url}: {why}") from None
    except BotoCoreError as e:
        raise BlobStoreConfigError(f"HANGAR_BLOBS={url}: cannot reach the object store: {e}") from None


class _Body:
    """A blob's bytes from S3 as a small read-only file (what `Store.read_blob` needs)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def read(self, n: int = -1) -> bytes:
        with _wrapped("read"):
            data: bytes = self._stream.read() if n is None or n < 0 else self._stream.read(n)
        return data

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> _Body:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class S3Writer:
    """A blob streaming into `tmp/<proc>/<uuid>`: hashed as it goes, cut into multipart parts."""

    store: S3BlobStore
    key: str
    _hash: Any = field(default_factory=hashlib.sha256)
    _buf: list[bytes] = field(default_factory=list)
    _buffered: int = 0
    _size: int = 0
    _digest: str = ""
    _mpu: str | None = None
    _parts: list[Future[dict[str, Any]]] = field(default_factory=list)
    _done: bool = False

    @property
    def size(self) -> int:
        return self._size

    @property
    def digest(self) -> str:
        return self._digest

    def write(self, data: bytes) -> None:
        self.write_piece([data])
        self.hash_piece([data])

    def hash_piece(self, chunks: Sequence[bytes]) -> None:
        for c in chunks:
            self._hash.update(c)

    def write_piece(self, chunks: Sequence[bytes]) -> None:
        for c in chunks:
            if c:
                self._buf.append(c)
                self._buffered += len(c)
                self._size += len(c)
        while self._buffered >= self.store.part_size:
            self._send_part(final=False)

    def _take(self, n: int) -> bytes:
        data = b"".join(self._buf)
        self._buf = [data[n:]] if len(data) > n else []
        self._buffered = len(data) - min(n, len(data))
        return data[:n]

    def _send_part(self, *, final: bool) -> None:
        s3, bucket = self.store.s3, self.store.bucket
        if self._mpu is None:
            with _wrapped("starting an upload"):
                self._mpu = s3.create_multipart_upload(Bucket=bucket, Key=self.key)["UploadId"]
        data = self._take(self._buffered if final else self.store.part_size)
        number = len(self._parts) + 1
        mpu = self._mpu

        def send() -> dict[str, Any]:
            with _wrapped("an upload part"):
                r = s3.upload_part(Bucket=bucket, Key=self.key, UploadId=mpu, PartNumber=number, Body=data)
            return {"PartNumber": number, "ETag": r["ETag"]}

        in_flight = [f for f in self._parts if not f.done()]
        if len(in_flight) >= PARTS_IN_FLIGHT:
            in_flight[0].result()
        self._parts.append(_pool.submit(send))

    def finish(self) -> str:
        s3, bucket = self.store.s3, self.store.bucket
        if self._mpu is None:  # small: one PUT
            with _wrapped("an upload"):
                s3.put_object(Bucket=bucket, Key=self.key, Body=self._take(self._buffered))
        else:
            if self._buffered:
                self._send_part(final=True)
            parts = [f.result() for f in self._parts]
            with _wrapped("completing an upload"):
                s3.complete_multipart_upload(
                    Bucket=bucket, Key=self.key, UploadId=self._mpu, MultipartUpload={"Parts": parts}
                )
            self._mpu = None
        self._done = True
        self._digest = "sha256:" + self._hash.hexdigest()
        return self._digest

    def discard(self) -> None:
        s3, bucket = self.store.s3, self.store.bucket
        for f in self._parts:
            with contextlib.suppress(Exception):
                f.result()
        self._buf, self._buffered = [], 0
        with contextlib.suppress(Exception):
            if self._mpu is not None:
                s3.abort_multipart_upload(Bucket=bucket, Key=self.key, UploadId=self._mpu)
                self._mpu = None
        with contextlib.suppress(Exception):
            s3.delete_object(Bucket=bucket, Key=self.key)


class S3BlobStore:
    """The BlobStore of `core/blobstore.py` over one bucket and prefix; `local_path` is always None,
    so the faces stream (or redirect to a presigned URL) instead of sending a file."""

    def __init__(
        self,
        url: str,
        *,
        part_size: int = 16 << 20,
        path_style: bool = False,
        lease: Callable[[str], AbstractContextManager[bool]] | None = None,
    ) -> None:
        self.url = url
        self.bucket, prefix = parse_s3_url(url)
        self.prefix = f"{prefix}/" if prefix else ""
        self.part_size = max(MIN_PART, part_size)
        self.s3 = _client(path_style)
        self._lease_of = lease
        self._check()
        self.proc_id = uuid.uuid4().hex
        self._lease: AbstractContextManager[bool] | None = None
        if lease is not None:
            self._lease = lease(f"s3-proc-{self.proc_id}")
            if not self._lease.__enter__():
                raise RuntimeError("could not take this process's own lease")

    def _check(self) -> None:
        _check(self.s3, self.url, self.bucket, self.prefix)

    def close(self) -> None:
        if self._lease is not None:
            with contextlib.suppress(Exception):
                self._lease.__exit__(None, None, None)
            self._lease = None

    # ------------------------------------------------------------------ keys

    def key(self, digest: str) -> str:
        return f"{self.prefix}blobs/sha256/{parse_digest(digest).hex}"

    def _tmp_key(self) -> str:
        return f"{self.prefix}tmp/{self.proc_id}/{uuid.uuid4().hex}"

    # ------------------------------------------------------------------ BlobStore

    def exists(self, digest: str) -> bool:
        return self.size(digest) is not None

    def size(self, digest: str) -> int | None:
        try:
            with _wrapped(f"blob {digest}"):
                r = self.s3.head_object(Bucket=self.bucket, Key=self.key(digest))
        except FileNotFoundError:
            return None
        return int(r["ContentLength"])

    def local_path(self, digest: str) -> Path | None:
        return None

    def open(self, digest: str) -> BinaryIO:
        with _wrapped(f"blob {digest}"):
            r = self.s3.get_object(Bucket=self.bucket, Key=self.key(digest))
        return _Body(r["Body"])  # type: ignore[return-value]

    def stream(self, digest: str, start: int, length: int) -> Iterator[bytes]:
        """`length` bytes from `start`, as a ranged GET; the request is made before this returns, so
        a missing blob raises FileNotFoundError here, not in the middle of a response."""
        if length <= 0:
            return iter(())
        with _wrapped(f"blob {digest}"):
            r = self.s3.get_object(
                Bucket=self.bucket, Key=self.key(digest), Range=f"bytes={start}-{start + length - 1}"
            )
        body = r["Body"]

        def chunks() -> Iterator[bytes]:
            try:
                while True:
                    with _wrapped(f"blob {digest}"):
                        data = body.read(READ_CHUNK)
                    if not data:
                        return
                    yield data
            finally:
                body.close()

        return chunks()

    def presigned_url(self, digest: str, expires: int = 900) -> str:
        url: str = self.s3.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self.key(digest)}, ExpiresIn=expires
        )
        return url

    def writer(self) -> S3Writer:
        return S3Writer(store=self, key=self._tmp_key())

    def install(self, writer: Any, digest: str) -> None:
        """Copy the verified temporary object to the blob's key, then drop the temporary one."""
        assert isinstance(writer, S3Writer) and writer.digest == str(parse_digest(digest))
        self._copy(writer.key, self.key(digest), writer.size)
        with contextlib.suppress(Exception):
            self.s3.delete_object(Bucket=self.bucket, Key=writer.key)

    def _copy(self, src: str, dst: str, size: int) -> None:
        from boto3.s3.transfer import TransferConfig

        with _wrapped("copying a blob into place"):
            if size < (5 << 30):
                self.s3.copy_object(
                    Bucket=self.bucket, Key=dst, CopySource={"Bucket": self.bucket, "Key": src}
                )
            else:  # a single copy is limited to 5 GiB: copy in parts
                cfg = TransferConfig(multipart_chunksize=max(self.part_size, 256 << 20))
                self.s3.copy({"Bucket": self.bucket, "Key": src}, self.bucket, dst, Config=cfg)

    def delete(self, digest: str) -> bool:
        if not self.exists(digest):
            return False
        with _wrapped(f"deleting blob {digest}"):
            self.s3.delete_object(Bucket=self.bucket, Key=self.key(digest))
        return True

    def _pages(self, prefix: str) -> Iterator[dict[str, Any]]:
        """Every object under `prefix`, one page (1000 keys) at a time, each page fresh from the
        server: nothing is listed ahead and kept."""
        token: str | None = None
        while True:
            kw: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
            if token:
                kw["ContinuationToken"] = token
            with _wrapped("listing the bucket"):
                page = self.s3.list_objects_v2(**kw)
            yield from page.get("Contents", [])
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")

    def iter_blobs(self) -> Iterator[tuple[str, float]]:
        for digest, mtime, _size in self.iter_blob_sizes():
            yield digest, mtime

    def iter_blob_sizes(self) -> Iterator[tuple[str, float, int]]:
        """Each listed page gives its objects' sizes: `du` and `fsck` make no HEAD per object."""
        base = f"{self.prefix}blobs/sha256/"
        for obj in self._pages(base):
            digest = "sha256:" + obj["Key"][len(base) :]
            try:
                parse_digest(digest)
            except ValueError:
                continue
            yield digest, obj["LastModified"].timestamp(), int(obj["Size"])

    def _proc_dead(self, proc: str, dead: dict[str, bool]) -> bool:
        """True if the process `proc` is gone: its lease can be taken (then it is released again)."""
        if proc == self.proc_id:
            return False
        if proc not in dead:
            if self._lease_of is None:
                dead[proc] = False
            else:
                with self._lease_of(f"s3-proc-{proc}") as got:
                    dead[proc] = got
        return dead[proc]

    def sweep_strays(self, older_than: float) -> list[str]:
        """Temporary objects and multipart uploads of dead processes, and keys under `blobs/` that are
        not blobs (older than `older_than`)."""
        removed: list[str] = []
        dead: dict[str, bool] = {}
        tmp = f"{self.prefix}tmp/"
        for obj in self._pages(tmp):
            proc = obj["Key"][len(tmp) :].split("/", 1)[0]
            if self._proc_dead(proc, dead):
                with _wrapped("removing a temporary object"):
                    self.s3.delete_object(Bucket=self.bucket, Key=obj["Key"])
                removed.append(obj["Key"][len(self.prefix) :])
        for key, upload_id in self._multipart_uploads(tmp):
            proc = key[len(tmp) :].split("/", 1)[0]
            if self._proc_dead(proc, dead):
                with contextlib.suppress(FileNotFoundError), _wrapped("aborting an upload"):
                    self.s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
                removed.append(f"multipart:{key[len(self.prefix) :]}")
        base = f"{self.prefix}blobs/"
        for obj in self._pages(base):
            rest = obj["Key"][len(base) :]
            if rest.startswith("sha256/"):
                try:
                    parse_digest("sha256:" + rest[7:])
                    continue
                except ValueError:
                    pass
            if obj["LastModified"].timestamp() < older_than:
                with _wrapped("removing a stray object"):
                    self.s3.delete_object(Bucket=self.bucket, Key=obj["Key"])
                removed.append(obj["Key"][len(self.prefix) :])
        return removed

    def _multipart_uploads(self, prefix: str) -> Iterator[tuple[str, str]]:
        kw: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        while True:
            with _wrapped("listing uploads"):
                page = self.s3.list_multipart_uploads(**kw)
            for u in page.get("Uploads", []):
                yield u["Key"], u["UploadId"]
            if not page.get("IsTruncated"):
                return
            kw["KeyMarker"] = page.get("NextKeyMarker", "")
            kw["UploadIdMarker"] = page.get("NextUploadIdMarker", "")
