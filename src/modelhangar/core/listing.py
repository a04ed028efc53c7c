"""Each tag's entry in the model listing, rendered once when the tag is written (README, "Listings").

`GET /api/tags` at 100,000 models must answer in a fraction of a second with flat memory, which
leaves no time for a three-table join, a name parse or a time format per model. So every write of a
tag (`Store._point_tag`, a trash restore) renders that model's listing entry, the JSON object
Ollama's `/api/tags` holds for it, into the tag's own row (`tags.listing`) in the same
transaction, and a listing is one indexed scan of that column, newest first, joined with commas.

* The entry lives in the tag's row, so it goes with the tag: after a delete the model is gone from
  every listing at once (safety rule 2), and an overwrite or a restore renders it again.
* `tags.listing_at` is the `modified_at` the entry was rendered for. A row whose `modified_at`
  differs (changed outside the store) or that has no entry yet (a catalog from before 0014, rows
  bulk-inserted) is rendered by the reader from the catalog's own columns, so a listing always
  equals the catalog; `backfill` then writes those entries in the background after start-up.
* An empty entry marks a tag that has no Ollama name (other faces' repositories): never listed.
* Times are rendered as Go prints them, in the local zone of the process that wrote the tag (the same
  instant whatever the zone; the same bytes as long as writer and server share one).
"""

from __future__ import annotations

import json
import time
from collections.abc import Generator, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from modelhangar.core import permissions
from modelhangar.core.catalog import schema as t
from modelhangar.core.catalog.quick_reads import reusable
from modelhangar.core.names import display_stored

if TYPE_CHECKING:
    from modelhangar.core.catalog.db import Catalog
    from modelhangar.core.store import Actor

EMPTY_DETAILS = {
    "parent_model": "",
    "format": "",
    "family": "",
    "families": None,
    "parameter_size": "",
    "quantization_level": "",
}
_EMPTY_DETAILS_JSON = json.dumps(EMPTY_DETAILS)
BATCH = 5000

_ZONES: dict[int, timezone | None] = {}
"""The local zone's offset in each quarter hour (by Unix quarter), None where it changes within it."""


def _zone(offset: int) -> timezone:
    return timezone(timedelta(seconds=offset))


def timestamp(ts: float) -> str:
    """RFC 3339 with the local offset, as Go prints times (the offset of that moment, DST included)."""
    quarter = int(ts // 900)
    if quarter in _ZONES:
        zone = _ZONES[quarter]
    else:
        if len(_ZONES) > 100_000:
            _ZONES.clear()
        first, last = time.localtime(quarter * 900).tm_gmtoff, time.localtime(quarter * 900 + 899).tm_gmtoff
        zone = _ZONES[quarter] = _zone(first) if first == last else None
    if zone is None:
        zone = _zone(time.localtime(ts).tm_gmtoff)
    return datetime.fromtimestamp(ts, tz=zone).isoformat()


def render(repository: str, tag: str, digest: str, size: int, details: str | None, modified: float) -> str:
    """The listing entry of one tag, as JSON text; "" if it has no Ollama name (never listed).

    Built by hand: names need no escaping, `display_stored` only returns names of the ASCII letters,
    digits and `._-:/` valid names are made of; the stored details are spliced in as the JSON text
    they are stored as."""
    name = display_stored(repository, tag)
    if name is None:
        return ""
    if details in (None, "", "{}", "null"):
        details = _EMPTY_DETAILS_JSON
    return (
        f'{{"name":"{name}","model":"{name}","modified_at":"{timestamp(modified)}",'
        f'"size":{size},"digest":"{digest[7:]}","details":{details}}}'
    )


_SOURCE = (  # what an entry is rendered from
    sa.select(
        t.tags.c.repository_id,
        t.tags.c.name_key,
        t.repositories.c.name,
        t.tags.c.name,
        t.tags.c.manifest_digest,
        t.manifests.c.total_size,
        t.manifests.c.details,
        t.tags.c.modified_at,
    )
    .select_from(t.tags)
    .join(t.repositories, t.repositories.c.id == t.tags.c.repository_id)
    .join(t.manifests, t.manifests.c.digest == t.tags.c.manifest_digest)
)
_FRESH = t.tags.c.listing_at == t.tags.c.modified_at
_CURRENT = (  # the entry when it is current, else the tag's key to render it by (None costs nothing)
    sa.case((_FRESH, t.tags.c.listing), else_=None),
    sa.case((_FRESH, None), else_=t.tags.c.repository_id),
    sa.case((_FRESH, None), else_=t.tags.c.name_key),
)
_SET = (
    t.tags.update()
    .where(t.tags.c.repository_id == sa.bindparam("rid"), t.tags.c.name_key == sa.bindparam("key"))
    .values(listing=sa.bindparam("entry"), listing_at=sa.bindparam("at"))
)
_SET_IF_SAME = _SET.where(t.tags.c.modified_at == sa.bindparam("at"))


def _entries(rows: Sequence[Any]) -> dict[tuple[int, str], tuple[str, float]]:
    """(entry, modified_at) of each source row, by (repository id, tag key)."""
    return {(r[0], r[1]): (render(*r[2:]), r[7]) for r in rows}


def refresh(conn: sa.Connection, repository_id: int, tag_key: str) -> None:
    """Render the entry of one tag again, inside the transaction that just wrote the tag."""
    rows = conn.execute(
        _SOURCE.where(t.tags.c.repository_id == repository_id, t.tags.c.name_key == tag_key)
    ).all()
    for (rid, key), (entry, at) in _entries(rows).items():
        conn.execute(_SET, {"rid": rid, "key": key, "entry": entry, "at": at})


_NEWEST_FIRST = sa.select(*_CURRENT).order_by(t.tags.c.modified_at.desc())
_LISTED = permissions.visible_variants(  # permissions stay in SQL: others' private models stay there
    _NEWEST_FIRST.select_from(t.tags.join(t.repositories, t.repositories.c.id == t.tags.c.repository_id))
)
_EVERY = reusable(_NEWEST_FIRST)  # for those who may read everything: no join


def stream(
    catalog: Catalog, conn: sa.Connection, actor: Actor | None, batch: int = BATCH
) -> Generator[list[str], None, None]:
    """Every listed tag `actor` may read (None: all), newest first, as batches of entries read from
    one statement on `conn` (entries not rendered yet or out of date are rendered from the catalog's
    columns, in one query per batch, in the same snapshot)."""
    q, params = (_EVERY, {}) if actor is None or actor.admin else permissions.for_reader(_LISTED, actor)
    for rows in catalog.stream(conn, q, params, batch):
        entries = [r[0] for r in rows]
        if None in entries:
            missing = [(r[1], r[2]) for r in rows if r[0] is None]
            ids = sorted({rid for rid, _ in missing})
            found = _entries(conn.execute(_SOURCE.where(t.tags.c.repository_id.in_(ids))).all())
            for i, r in enumerate(rows):
                if r[0] is None:
                    entries[i] = found.get((r[1], r[2]), ("", 0.0))[0]  # "": deleted meanwhile
        yield [e for e in entries if e]


def backfill(write: Any, batch: int = 2000, pause: float = 0.0) -> int:
    """Write the entries that are missing or out of date, one range of repositories per transaction
    (`write()`: a write transaction), `pause` seconds apart; returns how many were written. Each write
    is conditional on the tag's `modified_at` still being the one it was rendered for, so a tag written
    meanwhile (which renders its own entry) is left alone."""
    done = 0
    stale = sa.or_(t.tags.c.listing_at.is_(None), t.tags.c.listing_at != t.tags.c.modified_at)
    with write() as conn:
        top = conn.execute(sa.select(sa.func.max(t.tags.c.repository_id))).scalar() or 0
    for low in range(0, top + 1, batch):
        in_range = t.tags.c.repository_id.between(low, low + batch - 1)
        with write() as conn:
            rows = conn.execute(_SOURCE.where(in_range, stale)).all()
            writes = [
                {"rid": k[0], "key": k[1], "entry": e, "at": at} for k, (e, at) in _entries(rows).items()
            ]
            if writes:
                conn.execute(_SET_IF_SAME, writes)
        done += len(rows)
        if pause:
            time.sleep(pause)
    return done
