"""Where a store keeps its blobs, as its catalog records it, and the check of HANGAR_BLOBS against it.

HANGAR_BLOBS is one process's setting (`core/config.py`); the catalog is shared by every process of
the store. So the catalog records the location (`store_settings` key `blobs.location`): a new store
records what its first process was given, `hangar migrate-blobs` records where it moved the blobs,
and a process whose HANGAR_BLOBS names another place refuses to open the store, saying which
HANGAR_BLOBS to set, instead of serving an empty bucket or directory (README, "Moving blobs to
another place"). A store from before the record (one that already holds blobs) records nothing
until its first migration, and is not checked.

Every open store holds the gate `blob-location` shared for its whole life; `hangar migrate-blobs`
takes it alone, so no server or store command runs on the store while its blobs move.

The module imports SQLAlchemy only where it uses a catalog: `hangar serve` checks the embedded
default SQLite store with `sqlite3` and the gate's file before it listens, without the catalog
(README, "Start-up").
"""

from __future__ import annotations

import json
import os
import sqlite3
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING

from modelhangar.core.catalog import lease_files
from modelhangar.core.config import DEFAULT_CATALOG_FILE, default_database_url
from modelhangar.core.errors import HangarError

if TYPE_CHECKING:
    import sqlalchemy as sa

    from modelhangar.core.catalog.db import Catalog

LOCATION_KEY = "blobs.location"
GATE = "blob-location"


class BlobLocationMismatch(HangarError):
    """HANGAR_BLOBS names another place than the one the catalog records for the store's blobs."""


class StoreBusy(HangarError):
    """The blob-location gate is held the other way: a migration runs, or (for the migration) some
    server or store command has the store open."""


def normalize(text: str, home: Path) -> str:
    """The canonical form of a blob location: `` for the data directory's own files, `file:/DIR`
    for another directory (a relative one is taken from the current directory), `s3://BUCKET[/PREFIX]`.
    `local` is the data directory's own files too."""
    s = text.strip()
    if s in ("", "local"):
        return ""
    if s.startswith("s3://"):
        from modelhangar.core.s3blobs import parse_s3_url

        bucket, prefix = parse_s3_url(s)
        return f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
    if s.startswith("file:"):
        s = s[5:]
        if s.startswith("//"):
            s = s[2:]
        if not s:
            return ""
    path = Path(os.path.normpath(Path(s).expanduser().absolute()))
    if path == Path(os.path.normpath(home.absolute())):
        return ""
    return f"file:{path}"


def describe(location: str, home: Path) -> str:
    """A location in words, for messages."""
    if not location:
        return f"the files under {home / 'blobs'}"
    if location.startswith("file:"):
        return f"the files under {Path(location[5:]) / 'blobs'}"
    return location


def setting(location: str) -> str:
    """The HANGAR_BLOBS a process needs to use `location`."""
    return f"HANGAR_BLOBS={location}" if location else "HANGAR_BLOBS empty (or unset)"


def recorded(conn: sa.Connection) -> str | None:
    import sqlalchemy as sa

    from modelhangar.core.catalog import schema as t

    row = conn.execute(
        sa.select(t.store_settings.c.value).where(t.store_settings.c.key == LOCATION_KEY)
    ).first()
    return None if row is None else str(json.loads(row.value))


def record(conn: sa.Connection, location: str) -> None:
    """Record `location` in the caller's write transaction."""
    from modelhangar.core.catalog import schema as t

    conn.execute(t.store_settings.delete().where(t.store_settings.c.key == LOCATION_KEY))
    conn.execute(t.store_settings.insert().values(key=LOCATION_KEY, value=json.dumps(location)))


def mismatch(recorded_at: str, configured: str, home: Path) -> BlobLocationMismatch:
    return BlobLocationMismatch(
        f"this store's blobs are in {describe(recorded_at, home)} (its catalog records it), but "
        f"{'HANGAR_BLOBS=' + configured if configured else 'HANGAR_BLOBS is empty'} "
        f"({describe(configured, home)}): set {setting(recorded_at)}, or move the blobs with "
        "`hangar migrate-blobs --to ...`"
    )


def check(catalog: Catalog, blobs: str, home: Path) -> None:
    """Raise BlobLocationMismatch unless the HANGAR_BLOBS `blobs` names the recorded location; a new
    store (no blob rows yet) records it."""
    import sqlalchemy as sa

    from modelhangar.core.catalog import schema as t

    configured = normalize(blobs, home)
    with catalog.read() as conn:
        at = recorded(conn)
        fresh = at is None and conn.execute(sa.select(t.blobs.c.digest).limit(1)).first() is None
    if at is None and fresh:
        try:
            with catalog.write() as conn:
                if recorded(conn) is None:
                    conn.execute(
                        t.store_settings.insert().values(key=LOCATION_KEY, value=json.dumps(configured))
                    )
        except sa.exc.IntegrityError:  # another process recorded it first: compare with that one
            pass
        with catalog.read() as conn:
            at = recorded(conn)
    if at is not None and at != configured:
        raise mismatch(at, configured, home)


def migration_running(home: Path) -> StoreBusy:
    return StoreBusy(
        f"`hangar migrate-blobs` is moving the blobs of the store at {home} right now: start servers "
        "and store commands on it again once it has finished"
    )


def preflight(database_url: str, blobs: str, home: Path) -> None:
    """What `hangar serve` checks before it starts listening, so that it fails in one line: no
    migration runs, and HANGAR_BLOBS names the recorded location (a store not made yet passes)."""
    if not home.is_dir():
        return
    if database_url == default_database_url(home):
        # The embedded default: the same gate and the same row as Catalog.gate and `recorded`,
        # without SQLAlchemy.
        with lease_files.flocked(home / lease_files.file(GATE), shared=True) as free:
            if not free:
                raise migration_running(home)
        at = _recorded_in_file(home / DEFAULT_CATALOG_FILE)
    else:
        at = _gate_and_record(database_url, home)
    configured = normalize(blobs, home)
    if at is not None and at != configured:
        raise mismatch(at, configured, home)


def _recorded_in_file(db_file: Path) -> str | None:
    """`recorded` read straight from a SQLite catalog file; None when there is no catalog yet."""
    uri = f"file:{urllib.parse.quote(str(db_file))}?mode=rw"  # never creates the file
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=60)
    except sqlite3.Error:
        return None
    try:
        row = conn.execute("SELECT value FROM store_settings WHERE key = ?", (LOCATION_KEY,)).fetchone()
    except sqlite3.Error:  # no catalog yet: the store makes it
        return None
    finally:
        conn.close()
    return None if row is None else str(json.loads(row[0]))


def _gate_and_record(database_url: str, home: Path) -> str | None:
    """Through the catalog (PostgreSQL, any other SQLite URL): StoreBusy while a migration
    runs, else the recorded location (None when there is no catalog yet)."""
    import sqlalchemy as sa

    from modelhangar.core.catalog.db import Catalog

    catalog = Catalog(database_url, lock_dir=home)
    try:
        with catalog.gate(GATE, shared=True) as free:
            if not free:
                raise migration_running(home)
        try:
            with catalog.read() as conn:
                return recorded(conn)
        except sa.exc.DBAPIError:  # no catalog yet: the store makes it
            return None
    finally:
        catalog.dispose()
