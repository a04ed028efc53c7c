"""Adopting an Ollama models directory into the store, and writing models back in Ollama's layout.

Ollama keeps `manifests/<host>/<namespace>/<model>/<tag>` (JSON, exactly four levels) and
`blobs/sha256-<hex>` (see ollama.md §1). Paths are only ever built from names that validated:
manifest path parts through `is_valid_part` / `parse_name_from_filepath` / `parse_name`, blob
names through `parse_digest`. Nothing below the models directory is followed through a symlink,
so a crafted directory can make us neither read nor write outside it. Manifest bytes are kept
byte for byte both ways, so a model keeps its digest (its ID in `ollama list`).
"""

from __future__ import annotations

import hashlib
import os
import stat
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from modelhangar.core.blobstore import COPY_CHUNK, sha256_file
from modelhangar.core.digests import InvalidDigest, parse_digest, sha256_digest
from modelhangar.core.errors import (
    BlobUnknown,
    Conflict,
    DigestMismatch,
    InvalidManifest,
    NotFound,
    Refused,
)
from modelhangar.core.manifests import MAX_MANIFEST_BYTES, parse_manifest
from modelhangar.core.names import (
    InvalidName,
    ModelName,
    PartKind,
    is_valid_part,
    parse_name,
    parse_name_from_filepath,
)
from modelhangar.core.store import Actor, BlobCommit, Store

__all__ = ["ExportReport", "ImportReport", "Skip", "export_ollama", "import_ollama"]

MANIFESTS = "manifests"
BLOBS = "blobs"
_LEVELS: tuple[PartKind, ...] = ("host", "namespace", "model", "tag")
_KEPT = "kept"  # import_manifest's answer for a name left as it was
_ATTEMPTS = 2  # a GC may reclaim a blob between its import and the manifest commit: then retry once

Progress = Callable[[str, int, int], None]
"""`progress(model, bytes_done, bytes_total)`: called as each blob is handled and after each model;
the total is the size of every distinct blob the models name, known before the first byte moves."""
NameKey = tuple[str, str, str, str]


@dataclass(frozen=True)
class Skip:
    """Something left out, and why; `subject` is a path relative to the models directory or a name."""

    subject: str
    reason: str


@dataclass
class ImportReport:
    models: list[str] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    kept: list[Skip] = field(default_factory=list)
    """Models left as they were: the store holds the name with another manifest (see `overwrite`)."""
    blobs_linked: int = 0
    blobs_copied: int = 0
    blobs_present: int = 0
    bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ExportReport:
    models: list[str] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    blobs_linked: int = 0
    blobs_copied: int = 0
    blobs_existing: int = 0
    bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _show(*parts: str) -> str:
    """A relative path for reports, printable even if a name is not valid UTF-8."""
    return os.fsencode("/".join(parts)).decode("utf-8", "backslashreplace")


def _same_inode(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_nofollow(path: Path, limit: int) -> bytes:
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK), "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise OSError(f"{path}: not a regular file")
        return f.read(limit)


# ---------------------------------------------------------------------- import


@dataclass
class _Bytes:
    """Bytes done out of a total fixed up front, each blob counted once, for a Progress callback."""

    sizes: dict[str, int]
    progress: Progress | None
    model: str = ""
    done: int = 0
    counted: set[str] = field(default_factory=set)

    @property
    def total(self) -> int:
        return sum(self.sizes.values())

    def advance(self, *digests: str) -> None:
        fresh = [d for d in digests if d in self.sizes and d not in self.counted]
        self.counted.update(fresh)
        self.done += sum(self.sizes[d] for d in fresh)
        if self.progress is not None:
            self.progress(self.model, self.done, self.total)


def _sizes(manifests: Sequence[tuple[bytes, str | None] | None]) -> dict[str, int]:
    """{digest: size} of every blob the (readable, valid) manifests, with their media types, name."""
    out: dict[str, int] = {}
    for got in manifests:
        try:
            refs = parse_manifest(*got) if got is not None else None
        except InvalidManifest:
            continue
        for b in refs.blobs if refs is not None else ():
            out[b.digest] = max(b.size, 0)
    return out


@dataclass
class _Importer:
    store: Store
    report: ImportReport
    overwrite: bool = False
    actor: Actor = field(default_factory=Actor)
    blobs: dict[str, Path] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    handled: set[str] = field(default_factory=set)
    bytes: _Bytes = field(default_factory=lambda: _Bytes({}, None))

    def skip(self, subject: str, reason: str) -> None:
        self.report.skipped.append(Skip(subject, reason))

    def scan_blobs(self, root: Path) -> None:
        """Index `blobs/sha256-<hex>` regular files; everything else is reported and never opened."""
        top = root / BLOBS
        if top.is_symlink() or not top.is_dir():
            self.skip(BLOBS, "not a directory (symlinks are not followed)")
            return
        with os.scandir(top) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            rel = _show(BLOBS, e.name)
            try:
                digest = parse_digest(e.name)
            except InvalidDigest:
                digest = None
            if digest is None or digest.filename != e.name:  # also legacy `sha256:<hex>` names
                self.skip(rel, "not a blob file name (sha256-<64 lowercase hex>)")
                continue
            if e.is_symlink():
                self.skip(rel, "symlink (not followed)")
            elif not e.is_file(follow_symlinks=False):
                self.skip(rel, "not a regular file")
            else:
                self.blobs[str(digest)] = top / digest.filename

    def scan_manifests(self, root: Path) -> list[tuple[ModelName, Path, str]]:
        """Every `manifests/<host>/<namespace>/<model>/<tag>` regular file with a valid name."""
        top = root / MANIFESTS
        if top.is_symlink() or not top.is_dir():
            self.skip(MANIFESTS, "not a directory (symlinks are not followed)")
            return []
        found: list[tuple[ModelName, Path, str]] = []
        self._walk(top, (), found)
        return found

    def _walk(self, d: Path, parts: tuple[str, ...], found: list[tuple[ModelName, Path, str]]) -> None:
        with os.scandir(d) as it:
            entries = sorted(it, key=lambda e: e.name)
        kind = _LEVELS[len(parts)]
        for e in entries:
            here = (*parts, e.name)
            rel = _show(MANIFESTS, *here)
            if e.is_symlink():
                self.skip(rel, "symlink (not followed)")
            elif not is_valid_part(kind, e.name):
                self.skip(rel, f"invalid {kind} in a model name")
            elif kind != "tag":
                if e.is_dir(follow_symlinks=False):
                    self._walk(d / e.name, here, found)
                else:
                    self.skip(rel, "not a manifest: Ollama keeps manifests exactly four levels deep")
            elif not e.is_file(follow_symlinks=False):
                self.skip(rel, "not a regular file")
            else:
                try:
                    name = parse_name_from_filepath(here)
                except InvalidName as exc:
                    self.skip(rel, f"invalid model name ({exc.reason})")
                    continue
                found.append((name, d / e.name, rel))

    def import_blob(self, digest: str) -> str | None:
        """Make `digest` present in the store; a reason if it cannot be."""
        try:
            return self._import_blob(digest)
        finally:
            self.bytes.advance(digest)

    def _import_blob(self, digest: str) -> str | None:
        if digest in self.failed:
            return self.failed[digest]
        if self.store.reuse_blob(digest) is not None:
            if digest not in self.handled:
                self.handled.add(digest)
                self.report.blobs_present += 1
            return None
        src = self.blobs.get(digest)
        if src is None:
            return f"missing blob {digest}"
        try:
            commit = self.store.import_blob_file(src, digest)
        except DigestMismatch as exc:
            self.failed[digest] = f"corrupt blob {digest}: its content hashes to {exc.actual}"
            return self.failed[digest]
        except OSError as exc:
            self.failed[digest] = f"unreadable blob {digest}: {exc.strerror or exc}"
            return self.failed[digest]
        self._count(commit, src)
        return None

    def _count(self, commit: BlobCommit, src: Path) -> None:
        self.handled.add(commit.digest)
        if not commit.created:
            self.report.blobs_present += 1
            return
        self.report.bytes += commit.size
        dst = self.store.blobs.local_path(commit.digest)
        try:
            linked = dst is not None and _same_inode(os.lstat(src), os.stat(dst))
        except OSError:
            linked = False
        if linked:
            self.report.blobs_linked += 1
        else:
            self.report.blobs_copied += 1

    def import_manifest(self, name: ModelName, path: Path) -> str | None:
        """Import one model (blobs first, then the manifest); a reason if it was skipped."""
        try:
            raw = _read_nofollow(path, MAX_MANIFEST_BYTES + 1)
            refs = parse_manifest(raw)
        except OSError as exc:
            return f"unreadable manifest: {exc.strerror or exc}"
        except InvalidManifest as exc:
            return f"invalid manifest: {exc}"
        if refs.children:
            return "a manifest list (index) has no place in an Ollama store"
        held = self.store.get_tag(name.repository, name.tag)
        if held is not None and held.manifest_digest != str(sha256_digest(raw)) and not self.overwrite:
            self.report.kept.append(
                Skip(
                    name.display_shortest(),
                    "the store holds this name with another manifest; --overwrite replaces it "
                    "(the old one goes to the trash)",
                )
            )
            return _KEPT
        digests = sorted({b.digest for b in refs.blobs})
        missing = [d for d in digests if d not in self.blobs and self.store.blob_size(d) is None]
        if missing:
            return "missing blob " + ", ".join(missing)
        vanished: list[str] = []
        for _ in range(_ATTEMPTS):
            for d in digests:
                if (reason := self.import_blob(d)) is not None:
                    return reason
            try:
                self.store.put_manifest(name.repository, name.tag, raw, actor=self.actor)
                return None
            except BlobUnknown as exc:
                vanished = exc.digests
            except Refused as exc:
                return str(exc)
        return "blobs vanished from the store meanwhile: " + ", ".join(vanished)


def import_ollama(
    store: Store,
    models_dir: Path,
    *,
    progress: Progress | None = None,
    overwrite: bool = False,
    actor: Actor | None = None,
) -> ImportReport:
    """Adopt every valid model of an Ollama models directory (blobs by hard link where possible).

    A model the store already holds under the same name with another manifest is left as it is
    (listed in `kept`), unless `overwrite`: then the old version goes through the planner (to the
    trash, refused if something depends on it). `progress(model, bytes_done, bytes_total)` is called after
    each blob and each manifest.
    """
    root = Path(models_dir)
    if not root.is_dir():
        raise NotFound(f"{models_dir}: not a directory")
    imp = _Importer(store, ImportReport(), overwrite=overwrite, actor=actor or Actor())
    imp.scan_blobs(root)
    found = imp.scan_manifests(root)
    raws = [_read_or_none(path) for _, path, _ in found]
    imp.bytes = _Bytes(_sizes([(r, None) if r is not None else None for r in raws]), progress)
    seen: dict[NameKey, str] = {}
    for (name, path, rel), raw in zip(found, raws, strict=True):
        display = name.display_shortest()
        imp.bytes.model = display
        if name.key() in seen:
            reason: str | None = f"same model as {seen[name.key()]} (names match case-insensitively)"
        else:
            reason = imp.import_manifest(name, path)
        if reason == _KEPT:
            pass
        elif reason is None:
            seen[name.key()] = rel
            imp.report.models.append(display)
        else:
            imp.skip(rel, reason)
        imp.bytes.advance(*_sizes([(raw, None) if raw is not None else None]))  # skipped ones too
    return imp.report


def _read_or_none(path: Path) -> bytes | None:
    try:
        return _read_nofollow(path, MAX_MANIFEST_BYTES + 1)
    except OSError:
        return None


# ---------------------------------------------------------------------- export


def _real_dir(parent: Path, part: str) -> Path:
    """`parent/part` as a directory we created or found, never through a symlink."""
    path = parent / part
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        path.mkdir(mode=0o755, exist_ok=True)
        st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise Conflict(f"{path} is not a directory (symlinks are not followed)")
    return path


def _write_atomic(dest: Path, fill: Callable[[Path], None]) -> None:
    """Create `dest` from a temp name in the same directory, then rename over any old file."""
    tmp = dest.with_name(f".{dest.name}.hangar-{uuid.uuid4().hex}.tmp")
    try:
        fill(tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(dest.parent)


def _write_bytes(data: bytes) -> Callable[[Path], None]:
    def fill(tmp: Path) -> None:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    return fill


def _copy_verified(src: Path, digest: str) -> Callable[[Path], None]:
    def fill(tmp: Path) -> None:
        h = hashlib.sha256()
        with open(src, "rb") as fin, open(tmp, "xb") as fout:
            while chunk := fin.read(COPY_CHUNK):
                h.update(chunk)
                fout.write(chunk)
            fout.flush()
            os.fsync(fout.fileno())
        if "sha256:" + h.hexdigest() != digest:
            raise DigestMismatch(digest, "sha256:" + h.hexdigest())

    return fill


def _identical_file(dest: Path, digest: str, src: Path) -> bool:
    """Is `dest` a regular file holding exactly the blob (same inode, or same size and hash)?"""
    try:
        have, want = os.lstat(dest), os.stat(src)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(have.st_mode):
        return False
    if _same_inode(have, want):
        return True
    return have.st_size == want.st_size and sha256_file(dest) == digest


@dataclass
class _Exporter:
    store: Store
    root: Path
    report: ExportReport
    done: set[str] = field(default_factory=set)
    bytes: _Bytes = field(default_factory=lambda: _Bytes({}, None))

    def export_blob(self, blobs_dir: Path, digest: str) -> None:
        try:
            self._export_blob(blobs_dir, digest)
        finally:
            self.bytes.advance(digest)

    def _export_blob(self, blobs_dir: Path, digest: str) -> None:
        if digest in self.done:
            return
        src = self.store.blobs.local_path(digest)
        if src is None:
            raise NotFound(f"blob {digest} has no local file")
        dest = blobs_dir / parse_digest(digest).filename
        if _identical_file(dest, digest, src):
            self.done.add(digest)
            self.report.blobs_existing += 1
            return
        linked = False

        def fill(tmp: Path) -> None:
            nonlocal linked
            try:
                os.link(src, tmp)
                linked = True
            except OSError:
                _copy_verified(src, digest)(tmp)

        _write_atomic(dest, fill)
        self.done.add(digest)
        self.report.bytes += os.lstat(dest).st_size
        if linked:
            self.report.blobs_linked += 1
        else:
            self.report.blobs_copied += 1

    def export_model(self, name: ModelName, digest: str, modified_at: float) -> str | None:
        """Write one model (blobs first, then the manifest); a reason if it was skipped."""
        got = self.store.get_manifest(digest)
        if got is None:
            return "its manifest vanished meanwhile"
        raw, media_type = got
        try:
            refs = parse_manifest(raw, media_type)
        except InvalidManifest as exc:
            return f"invalid manifest: {exc}"
        if refs.children:
            return "a manifest list (index) cannot be written in Ollama's layout"
        try:
            blobs_dir = _real_dir(self.root, BLOBS)
            for d in sorted({b.digest for b in refs.blobs}):
                self.export_blob(blobs_dir, d)
            mdir = _real_dir(self.root, MANIFESTS)
            for part in (name.host, name.namespace, name.model):
                mdir = _real_dir(mdir, part)
            dest = mdir / name.tag
            try:
                same = _read_nofollow(dest, len(raw) + 1) == raw
            except OSError:
                same = False
            if not same:
                _write_atomic(dest, _write_bytes(raw))
                os.utime(dest, (modified_at, modified_at), follow_symlinks=False)  # Ollama's modified_at
        except (Conflict, NotFound, DigestMismatch) as exc:
            return str(exc)
        except OSError as exc:
            return f"cannot write: {exc}"
        return None


def export_ollama(
    store: Store, models_dir: Path, *, models: list[str] | None = None, progress: Progress | None = None
) -> ExportReport:
    """Write models (all, or those named) into an Ollama models directory, blobs by hard link where
    possible; only repositories whose names are valid Ollama names are written.

    `progress(model, bytes_done, bytes_total)` is called after each blob and each model."""
    report = ExportReport()
    root = Path(models_dir)
    root.mkdir(parents=True, exist_ok=True)
    wanted: dict[NameKey, str] | None = None
    if models is not None:
        wanted = {}
        for m in models:
            try:
                wanted[parse_name(m).key()] = m
            except InvalidName as exc:
                report.skipped.append(Skip(m, f"invalid model name ({exc.reason})"))
    exporter = _Exporter(store, root, report)
    seen: dict[NameKey, str] = {}
    todo: list[tuple[ModelName, str, float, str]] = []
    for rec in sorted(store.list_tags(), key=lambda r: (r.repository, r.tag)):
        label = f"{rec.repository}:{rec.tag}"
        try:
            name = parse_name(label)
        except InvalidName as exc:
            if wanted is None:
                report.skipped.append(Skip(label, f"not an Ollama model name ({exc.reason})"))
            continue
        key = name.key()
        if wanted is not None and key not in wanted:
            continue
        if name.scheme is not None:
            report.skipped.append(Skip(label, "not an Ollama model name (it has a scheme)"))
        elif key in seen:
            report.skipped.append(Skip(label, f"same model as {seen[key]} (names match case-insensitively)"))
        else:
            todo.append((name, rec.manifest_digest, rec.modified_at, label))
        seen[key] = label
    manifests = [store.get_manifest(digest) for _, digest, _, _ in todo]
    exporter.bytes = _Bytes(_sizes(manifests), progress)
    for (name, digest, modified_at, label), got in zip(todo, manifests, strict=True):
        exporter.bytes.model = name.display_shortest()
        if (reason := exporter.export_model(name, digest, modified_at)) is not None:
            report.skipped.append(Skip(label, reason))
        else:
            report.models.append(name.display_shortest())
        exporter.bytes.advance(*_sizes([got]))
    if wanted is not None:
        report.skipped.extend(Skip(m, "not found") for k, m in wanted.items() if k not in seen)
    return report
