"""Upload sessions: chunks in order, the running hash across requests, aborts, and a second store."""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import os
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event

from modelhangar.core import uploads
from modelhangar.core.errors import DigestMismatch

if TYPE_CHECKING:
    from conftest import Kit, MakeKit

REPO = "registry.ollama.ai/lib/up"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def send(kit: Kit, upload_id: str, chunk: bytes, *, fail: bool = False) -> None:
    handle = uploads.acquire(kit.store, upload_id, REPO)
    handle.write(chunk)
    if fail:  # the request died after writing: nothing of it counts
        handle.abort()
    else:
        handle.save()


def finish(kit: Kit, upload_id: str, digest: str, last: bytes = b"") -> str:
    handle = uploads.acquire(kit.store, upload_id, REPO)
    if last:
        handle.write(last)
    return handle.complete(digest).digest


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.binary(min_size=0, max_size=3000),
    cuts=st.lists(st.integers(0, 3000), max_size=5),
    failing=st.sets(st.integers(0, 5)),
)
def test_chunks_make_the_blob_whatever_fails_between_them(
    make_kit: MakeKit, data: bytes, cuts: list[int], failing: set[int]
) -> None:
    kit = make_kit()
    up = uploads.start(kit.store, REPO)
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    for i, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        if i in failing:
            send(kit, up.id, b"junk" + data[lo:hi], fail=True)
        send(kit, up.id, data[lo:hi])
    assert finish(kit, up.id, digest_of(data)) == digest_of(data)
    assert kit.store.read_blob(digest_of(data)) == data


SEND_FROM_ANOTHER_PROCESS = """
import os, sys
from modelhangar.core import uploads
from modelhangar.core.config import load_settings
from modelhangar.core.store import Store
handle = uploads.acquire(Store(load_settings(dict(os.environ))), sys.argv[1], sys.argv[2])
handle.write(sys.argv[3].encode())
handle.save()
"""


def test_a_session_continued_by_another_process_is_hashed_at_the_end(make_kit: MakeKit) -> None:
    kit = make_kit()
    settings = kit.store.settings
    env = {**os.environ, "HANGAR_HOME": str(settings.home), "HANGAR_DATABASE_URL": settings.database_url}
    up = uploads.start(kit.store, REPO)
    send(kit, up.id, b"one ")
    other = [sys.executable, "-c", SEND_FROM_ANOTHER_PROCESS, up.id, REPO, "two "]
    subprocess.run(other, env=env, check=True, timeout=120)
    send(kit, up.id, b"three")  # this process's hash state stops at "one ": it must not be used
    assert finish(kit, up.id, digest_of(b"one two three")) == digest_of(b"one two three")
    assert kit.store.read_blob(digest_of(b"one two three")) == b"one two three"


@pytest.mark.parametrize("claimed", [b"one two", b"something else"])
def test_a_wrong_digest_keeps_nothing(make_kit: MakeKit, claimed: bytes) -> None:
    kit = make_kit()
    up = uploads.start(kit.store, REPO)
    send(kit, up.id, b"one ")
    with pytest.raises(DigestMismatch):
        finish(kit, up.id, digest_of(claimed), b"two three")
    assert digest_of(b"one two three") not in kit.blob_files()
    assert kit.store.blob_size(digest_of(b"one two three")) is None


def test_a_stray_chunk_never_makes_the_right_one_busy(make_kit: MakeKit) -> None:
    kit = make_kit()
    up = uploads.start(kit.store, REPO)
    send(kit, up.id, b"abc")
    right: list[uploads.UploadHandle] = []
    tried: list[bool] = []

    def on_execute(*args: object) -> None:
        # Pinned: the stray chunk is reading the session's row; the right chunk arrives now.
        if not tried and "uploads" in str(args[2]):
            tried.append(True)
            right.append(uploads.acquire(kit.store, up.id, REPO, start_at=3))

    event.listen(kit.store.catalog.read_engine, "before_cursor_execute", on_execute)
    try:
        with pytest.raises((uploads.RangeInvalid, uploads.UploadBusy)):  # refused either way
            uploads.acquire(kit.store, up.id, REPO, start_at=5000)
    finally:
        event.remove(kit.store.catalog.read_engine, "before_cursor_execute", on_execute)
    assert right, "the right chunk was never tried"
    # While the right chunk holds the session, the stray one is told it is busy.
    with pytest.raises(uploads.UploadBusy):
        uploads.acquire(kit.store, up.id, REPO, start_at=5000)
    right[0].write(b"def")
    right[0].save()
    assert finish(kit, up.id, digest_of(b"abcdef")) == digest_of(b"abcdef")


def test_a_session_an_older_process_flocks_is_busy(make_kit: MakeKit) -> None:
    # Versions before open-file-description locks only flock the session file; while one of them
    # (a server not upgraded yet) holds a session, this one is refused too, and so is the GC.
    kit = make_kit()
    up = uploads.start(kit.store, REPO)
    send(kit, up.id, b"abc")
    path = kit.store.settings.home / "uploads" / up.id
    with open(path, "rb") as old:
        fcntl.flock(old.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(uploads.UploadBusy):
            uploads.acquire(kit.store, up.id, REPO, start_at=3)
        assert uploads.expire(kit.store, older_than=-1) == []
    assert finish(kit, up.id, digest_of(b"abcdef"), b"def") == digest_of(b"abcdef")


def test_a_session_a_user_opened_serves_that_user_alone(kit: Kit) -> None:
    """To anyone but its opener a user's session does not exist (README, "Accounts"); a session opened
    without an account (a client address: the local admin) serves any request on its repository."""
    mine = uploads.start(kit.store, REPO, "user:alice")
    for stranger in ("user:bob", "127.0.0.1", None):
        with pytest.raises(uploads.UploadUnknown):
            uploads.get(kit.store, mine.id, REPO, stranger)
        with pytest.raises(uploads.UploadUnknown):
            uploads.acquire(kit.store, mine.id, REPO, client=stranger, start_at=0)
        with pytest.raises(uploads.UploadUnknown):
            uploads.cancel(kit.store, mine.id, REPO, stranger)
    handle = uploads.acquire(kit.store, mine.id, REPO.upper(), client="user:alice")
    # While alice's chunk holds it, a stranger learns nothing (not "busy") and holds nothing.
    for start_at in (None, 0, 3):
        with pytest.raises(uploads.UploadUnknown):
            uploads.acquire(kit.store, mine.id, REPO, client="user:bob", start_at=start_at)
    handle.write(b"abc")
    assert handle.save().client == "user:alice"
    assert uploads.get(kit.store, mine.id, REPO, "user:alice").size == 3
    anyone = uploads.start(kit.store, REPO, "127.0.0.1")
    for client in ("user:bob", "::1", None):
        assert uploads.get(kit.store, anyone.id, REPO, client).id == anyone.id
