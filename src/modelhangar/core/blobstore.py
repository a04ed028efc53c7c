"""Content-addressed blob I/O, kept apart from registry logic.

The catalog decides *whether* a blob exists; this module only moves bytes. Every path is built
from a digest that `parse_digest` accepted (64 lowercase hex), so no input reaches outside the
data directory. Files are named as Ollama names them: `blobs/sha256-<hex>`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from modelhangar.core.digests import parse_digest

if TYPE_CHECKING:
    from modelhangar.core.catalog.db import Catalog
    from modelhangar.core.config import Settings

COPY_CHUNK = 1 << 20
_IOV_MAX = 1024


_SYNC_FILE_RANGE_WRITE = 2
_sync_file_range: Any = None


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing a just-written range to the disk now (Linux
    `sync_file_range(SYNC_FILE_RANGE_WRITE)`: it does not wait for it, nor make it durable), so the
    `fsync` that makes an upload durable (README, Safety rules 1 and 3) finds little left to write
    instead of a whole blob; a no-op where the call does not exist."""
    global _sync_file_range
    if _sync_file_range is None:
        _sync_file_range = False
        if sys.platform.startswith("linux"):
            import ctypes
            import ctypes.util

            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
                fn = libc.sync_file_range
                fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
                _sync_file_range = fn
            except (OSError, AttributeError):
                pass
    if _sync_file_range and length > 0:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)  # an error only means "not now"


def write_all_at(fd: int, chunks: Sequence[bytes], offset: int) -> int:
    """Write `chunks` one after the other at `offset` with `pwritev` (no joining copy), then start
    their writeback (`start_writeback`); returns the bytes written."""
    total = 0
    views = [memoryview(c) for c in chunks if c]
    while views:
        n = os.pwritev(fd, views[:_IOV_MAX], offset + total)
        total += n
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if views and n:
            views[0] = views[0][n:]
    start_writeback(fd, offset, total)
    return total


class PieceSink(Protocol):
    """Where a request body goes in pieces (lists of received chunks), in order: `write_piece` and
    `hash_piece` each see every piece once, in order, and may run at the same time as each other
    (on two threads: pwritev and sha256 both release the GIL)."""

    def write_piece(self, chunks: Sequence[bytes]) -> None: ...

    def hash_piece(self, chunks: Sequence[bytes]) -> None: ...


class BlobWriter(PieceSink, Protocol):
    """A blob being written: bytes go in, then the store installs it under its digest."""

    @property
    def size(self) -> int: ...

    @property
    def digest(self) -> str: ...

    def write(self, data: bytes) -> None: ...

    def finish(self) -> str:
        """Flush to stable storage; return the `sha256:<hex>` digest of what was written."""
        ...

    def discard(self) -> None: ...


class BlobStore(Protocol):
    """What the store needs from blob storage; local files now, an object store later."""

    def exists(self, digest: str) -> bool: ...

    def size(self, digest: str) -> int | None: ...

    def local_path(self, digest: str) -> Path | None:
        """A file path to serve from, where the backend has one."""
        ...

    def open(self, digest: str) -> BinaryIO: ...

    def stream(self, digest: str, start: int, length: int) -> Iterator[bytes]:
        """`length` bytes of the blob from `start` (for a backend with no `local_path`); raises
        FileNotFoundError before the first byte if the blob is gone."""
        ...

    def presigned_url(self, digest: str, expires: int = 900) -> str | None:
        """A URL a client may GET the blob from directly, where the backend has one."""
        ...

    def writer(self) -> BlobWriter: ...

    def close(self) -> None: ...

    def install(self, writer: BlobWriter, digest: str) -> None:
        """Make a finished writer's content the blob `digest` (atomically; replaces any old file)."""
        ...

    def delete(self, digest: str) -> bool:
        """Remove the blob; True if something was removed. Idempotent."""
        ...

    def iter_blobs(self) -> Iterator[tuple[str, float]]:
        """(digest, mtime) of every stored blob file."""
        ...

    def iter_blob_sizes(self) -> Iterator[tuple[str, float, int]]:
        """(digest, mtime, size) of every stored blob, from the listing itself (a bucket's LIST gives
        each object's size: no request per blob)."""
        ...

    def sweep_strays(self, older_than: float) -> list[str]:
        """Remove leftovers that are not blobs (temp files of dead processes, partials); return them."""
        ...


@dataclass
class _FileWriter:
    """Streams into a private temp file, hashing as it goes (a PieceSink too)."""

    path: Path
    _file: BinaryIO
    _hash: hashlib._Hash
    _size: int = 0
    _digest: str = ""

    @property
    def size(self) -> int:
        return self._size

    @property
    def digest(self) -> str:
        return self._digest

    def write(self, data: bytes) -> None:
        self.write_piece([data])
        self.hash_piece([data])

    def write_piece(self, chunks: Sequence[bytes]) -> None:
        self._size += write_all_at(self._file.fileno(), chunks, self._size)

    def hash_piece(self, chunks: Sequence[bytes]) -> None:
        for c in chunks:
            self._hash.update(c)

    def finish(self) -> str:
        os.fsync(self._file.fileno())
        self._file.close()
        self._digest = "sha256:" + self._hash.hexdigest()
        return self._digest

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class LocalBlobStore:
    """Blobs as files under `<home>/blobs`, temp files under a per-process `<home>/tmp/<id>/`.

    Each process holds an exclusive flock on `tmp/<id>.lock` for its whole life, so a sweep
    removes only temp directories of processes that are gone (or crashed): no timing guesses.
    """

    def __init__(self, blobs_dir: Path, tmp_dir: Path) -> None:
        self.blobs_dir = blobs_dir
        self.tmp_root = tmp_dir
        blobs_dir.mkdir(parents=True, exist_ok=True)
        tmp_dir.mkdir(parents=True, exist_ok=True)
        self._proc_id = uuid.uuid4().hex
        # Lock under a name sweepers ignore, then rename: a sweeper only ever sees locked files.
        pending = tmp_dir / f"{self._proc_id}.locking"
        self._lock_file = open(pending, "wb")  # noqa: SIM115 - held for the life of the process
        fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.replace(pending, tmp_dir / f"{self._proc_id}.lock")
        self.tmp_dir = tmp_dir / self._proc_id
        self.tmp_dir.mkdir(exist_ok=True)

    def close(self) -> None:
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            (self.tmp_root / f"{self._proc_id}.lock").unlink()
        self._lock_file.close()

    def path(self, digest: str) -> Path:
        return self.blobs_dir / parse_digest(digest).filename

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: str) -> int | None:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            return None

    def local_path(self, digest: str) -> Path | None:
        return self.path(digest)

    def open(self, digest: str) -> BinaryIO:
        return open(self.path(digest), "rb")

    def stream(self, digest: str, start: int, length: int) -> Iterator[bytes]:
        f = self.open(digest)

        def chunks() -> Iterator[bytes]:
            with f:
                offset, left = start, length
                while left > 0:
                    data = os.pread(f.fileno(), min(COPY_CHUNK, left), offset)
                    if not data:
                        raise OSError("blob shorter than its recorded size")
                    offset += len(data)
                    left -= len(data)
                    yield data

        return chunks()

    def presigned_url(self, digest: str, expires: int = 900) -> str | None:
        return None

    def writer(self) -> _FileWriter:
        path = self.tmp_dir / f"upload-{uuid.uuid4().hex}"
        return _FileWriter(path=path, _file=open(path, "xb"), _hash=hashlib.sha256())

    def install(self, writer: BlobWriter, digest: str) -> None:
        assert isinstance(writer, _FileWriter)
        final = self.path(digest)
        os.chmod(writer.path, 0o600)
        os.replace(writer.path, final)
        _fsync_dir(self.blobs_dir)

    def link_or_copy_in(self, source: Path, digest: str) -> None:
        """Install a blob from an existing file (hard link where possible, else a copy)."""
        final = self.path(digest)
        tmp = self.tmp_dir / f"import-{uuid.uuid4().hex}"
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, final)
        _fsync_dir(self.blobs_dir)

    def delete(self, digest: str) -> bool:
        try:
            self.path(digest).unlink()
        except FileNotFoundError:
            return False
        return True

    def iter_blobs(self) -> Iterator[tuple[str, float]]:
        for digest, mtime, _size in self.iter_blob_sizes():
            yield digest, mtime

    def iter_blob_sizes(self) -> Iterator[tuple[str, float, int]]:
        with os.scandir(self.blobs_dir) as it:
            for entry in it:
                name = entry.name
                if name.startswith("sha256-") and len(name) == 71 and entry.is_file():
                    digest = "sha256:" + name[7:]
                    try:
                        parse_digest(digest)
                    except ValueError:
                        continue
                    try:
                        st = entry.stat()
                    except FileNotFoundError:  # deleted by another process since the listing
                        continue
                    yield digest, st.st_mtime, st.st_size

    def sweep_strays(self, older_than: float) -> list[str]:
        removed: list[str] = []
        with os.scandir(self.blobs_dir) as it:
            for entry in it:
                if entry.name.startswith("sha256-") and len(entry.name) == 71:
                    try:
                        parse_digest("sha256:" + entry.name[7:])
                        continue
                    except ValueError:
                        pass
                with contextlib.suppress(FileNotFoundError):
                    if entry.is_file() and entry.stat().st_mtime < older_than:
                        os.unlink(entry.path)
                        removed.append(entry.name)
        for lock in self.tmp_root.glob("*.lock"):
            proc = lock.stem
            if proc == self._proc_id:
                continue
            with open(lock, "ab") as f:
                try:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its process is alive
                shutil.rmtree(self.tmp_root / proc, ignore_errors=True)
                lock.unlink(missing_ok=True)
                removed.append(f"tmp/{proc}")
        for d in self.tmp_root.iterdir():
            if d.is_dir() and not (self.tmp_root / f"{d.name}.lock").exists() and d.name != self._proc_id:
                shutil.rmtree(d, ignore_errors=True)
                removed.append(f"tmp/{d.name}")
        return removed


def open_blob_store(settings: Settings, catalog: Catalog) -> BlobStore:
    """The blob store `HANGAR_BLOBS` names: local files under the data directory (or, with
    `file:/DIR`, under another directory laid out the same way: DIR/blobs, DIR/tmp), or a bucket."""
    if settings.blobs.startswith("file:"):
        root = Path(settings.blobs[5:].removeprefix("//"))
        return LocalBlobStore(root / "blobs", root / "tmp")
    if settings.blobs:
        from modelhangar.core.s3blobs import S3BlobStore

        return S3BlobStore(
            settings.blobs,
            part_size=settings.s3_part_size,
            path_style=settings.s3_path_style,
            lease=catalog.lease,
        )
    return LocalBlobStore(settings.blobs_dir, settings.tmp_dir)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    """`sha256:<hex>` of a file's content, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(COPY_CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest()
