"""Small settings every server of a store shares, kept in the catalog (`store_settings`): the key that
signs registry tokens, OpenSearch's cluster settings (`plugins.ml_commons.safe_delete_model`, ...).
Values are JSON. Unlike `core/config.py` (one process's knobs), these change at run time, for all."""

from __future__ import annotations

import json
import secrets
import weakref
from typing import Any

import sqlalchemy as sa

from modelhangar.core.catalog import schema as t
from modelhangar.core.catalog.db import retrying
from modelhangar.core.store import Store


def read(conn: sa.Connection, key: str, default: Any = None) -> Any:
    row = conn.execute(sa.select(t.store_settings.c.value).where(t.store_settings.c.key == key)).first()
    return default if row is None else json.loads(row.value)


def write(conn: sa.Connection, key: str, value: Any) -> None:
    """Set (or, with None, clear) a shared setting inside the caller's transaction."""
    conn.execute(t.store_settings.delete().where(t.store_settings.c.key == key))
    if value is not None:
        conn.execute(t.store_settings.insert().values(key=key, value=json.dumps(value)))


def get(store: Store, key: str, default: Any = None) -> Any:
    with store.catalog.read() as conn:
        return read(conn, key, default)


def put(store: Store, key: str, value: Any) -> None:
    with store.catalog.write() as conn:
        write(conn, key, value)


def is_true(conn: sa.Connection, key: str) -> bool:
    value = read(conn, key, False)
    return value is True or (isinstance(value, str) and value.lower() == "true")


_keys: weakref.WeakKeyDictionary[Store, dict[str, bytes]] = weakref.WeakKeyDictionary()
"""Each open store's secret keys (one never changes once made)."""


@retrying
def secret_key(store: Store, key: str) -> bytes:
    """A random 32-byte key of the store under `key`, made on first use: every server of the store
    reads the same one (it signs registry tokens, the web UI's CSRF tokens)."""
    cached = _keys.get(store, {}).get(key)
    if cached is not None:
        return cached
    value = get(store, key)
    if not isinstance(value, str):
        with store.catalog.write() as conn:  # another server may make it first: then that one holds
            store._insert_ignore(
                conn, t.store_settings, {"key": key, "value": json.dumps(secrets.token_hex(32))}
            )
            value = read(conn, key)
    made = bytes.fromhex(value)
    _keys.setdefault(store, {})[key] = made
    return made
