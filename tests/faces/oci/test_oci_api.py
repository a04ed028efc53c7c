"""The registry face (`/v2/`) through httpx against a real `hangar serve`: the spec's flows and errors.

One server serves the whole module: every test works in repositories of its own (and blob contents
of its own where it looks at the files on disk).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness import (
    ServerProcess,
    assert_store_consistent,
    blob_file,
    blob_files,
    image_manifest,
    temp_objects,
    upload_sessions,
)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def error_codes(r: httpx.Response) -> list[str]:
    """The codes of a spec error envelope (asserting it is one)."""
    body = r.json()
    assert isinstance(body, dict) and isinstance(body.get("errors"), list) and body["errors"], body
    for e in body["errors"]:
        assert set(e) == {"code", "message", "detail"}, e
        assert isinstance(e["message"], str) and e["message"]
    return [e["code"] for e in body["errors"]]


def assert_error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["docker-distribution-api-version"] == "registry/2.0"
    if r.request.method != "HEAD":  # a HEAD answer has no body
        assert set(error_codes(r)) == {code}, r.text


def uploads_left(home: Path) -> list[str]:
    return upload_sessions(home)


def tmp_files(home: Path) -> list[Any]:
    root = home / "tmp"
    files = [p for p in root.rglob("*") if p.is_file() and not p.name.endswith((".lock", ".locking"))]
    return [*files, *temp_objects(home)]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The module's one server (GC grace, reuse fuse and trash retention 0)."""
    root = tmp_path_factory.mktemp("oci-api")
    with ServerProcess(root / "home", log_dir=root) as srv:
        yield srv


@pytest.fixture(scope="module")
def home(server: ServerProcess) -> Path:
    return server.home


@pytest.fixture(scope="module")
def oci(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30.0) as c:
        yield c


def push_blob(c: httpx.Client, name: str, data: bytes, *, chunk: int | None = None) -> str:
    """POST a session, PATCH it in `chunk`-byte pieces (Ollama-style `start-end`), PUT the digest."""
    d = digest_of(data)
    if chunk is None:
        r = c.post(f"/v2/{name}/blobs/uploads/", params={"digest": d}, content=data)
        assert r.status_code == 201, r.text
        return d
    r = c.post(f"/v2/{name}/blobs/uploads/")
    assert r.status_code == 202, r.text
    location = r.headers["location"]
    for start in range(0, len(data), chunk):
        piece = data[start : start + chunk]
        r = c.patch(location, content=piece, headers={"Content-Range": f"{start}-{start + len(piece) - 1}"})
        assert r.status_code == 202, r.text
        assert r.headers["range"] == f"0-{start + len(piece) - 1}"
        location = r.headers["location"]
    r = c.put(location, params={"digest": d, "etag": "ignored-3"})
    assert r.status_code == 201, r.text
    assert r.headers["docker-content-digest"] == d
    return d


def push_image(c: httpx.Client, name: str, tag: str, config: bytes, layers: list[bytes]) -> str:
    for blob in [config, *layers]:
        push_blob(c, name, blob)
    body = image_manifest(config, layers)
    r = c.put(f"/v2/{name}/manifests/{tag}", content=body, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201, r.text
    assert r.headers["docker-content-digest"] == digest_of(body)
    assert r.headers["location"].startswith("http://")
    return digest_of(body)


# ---------------------------------------------------------------------------------------------- basics


def test_version_check(oci: httpx.Client) -> None:
    r = oci.get("/v2/")
    assert r.status_code == 200 and r.json() == {}
    assert r.headers["docker-distribution-api-version"] == "registry/2.0"


def test_push_pull_roundtrip_byte_exact(oci: httpx.Client, home: Path) -> None:
    config, layer = b'{"architecture":"amd64"}', b"layer bytes\n" * 1000
    digest = push_image(oci, "lib/hello", "v1", config, [layer])
    for method in ("GET", "HEAD"):
        r = oci.request(method, "/v2/lib/hello/manifests/v1", headers={"Accept": "application/json"})
        assert r.status_code == 200
        assert r.headers["docker-content-digest"] == digest
        assert r.headers["content-type"] == OCI_MANIFEST
        assert int(r.headers["content-length"]) == len(image_manifest(config, [layer]))
    body = oci.get("/v2/lib/hello/manifests/v1").content  # no Accept header at all is fine too
    assert body == image_manifest(config, [layer])
    assert oci.get(f"/v2/lib/hello/manifests/{digest}").content == body
    got = oci.get(f"/v2/lib/hello/blobs/{digest_of(layer)}")
    assert got.status_code == 200 and got.content == layer
    assert got.headers["docker-content-digest"] == digest_of(layer)
    assert {blob_file(digest_of(config)), blob_file(digest_of(layer))} <= blob_files(home)
    assert oci.get("/v2/lib/hello/tags/list").json() == {"name": "lib/hello", "tags": ["v1"]}
    assert "lib/hello" in oci.get("/v2/_catalog").json()["repositories"]
    assert_store_consistent(home)


def test_docker_media_type_is_kept(oci: httpx.Client) -> None:
    config, layer = b"{}", b"x"
    push_blob(oci, "lib/dock", config)
    push_blob(oci, "lib/dock", layer)
    body = image_manifest(config, [layer], DOCKER_MANIFEST)
    r = oci.put("/v2/lib/dock/manifests/1.0", content=body, headers={"Content-Type": DOCKER_MANIFEST})
    assert r.status_code == 201
    r = oci.head("/v2/lib/dock/manifests/1.0", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 200 and r.headers["content-type"] == DOCKER_MANIFEST


def test_put_manifest_by_digest(oci: httpx.Client) -> None:
    config = b"{}"
    push_blob(oci, "lib/bydigest", config)
    body = image_manifest(config, [])
    r = oci.put(
        f"/v2/lib/bydigest/manifests/{digest_of(body)}", content=body, headers={"Content-Type": OCI_MANIFEST}
    )
    assert r.status_code == 201 and r.headers["docker-content-digest"] == digest_of(body)
    assert oci.get(f"/v2/lib/bydigest/manifests/{digest_of(body)}").content == body
    assert oci.get("/v2/lib/bydigest/tags/list").json() == {"name": "lib/bydigest", "tags": []}
    wrong = digest_of(b"something else")
    r = oci.put(f"/v2/lib/bydigest/manifests/{wrong}", content=body, headers={"Content-Type": OCI_MANIFEST})
    assert_error(r, 400, "DIGEST_INVALID")
    assert_error(oci.get(f"/v2/lib/bydigest/manifests/{wrong}"), 404, "MANIFEST_UNKNOWN")


# ---------------------------------------------------------------------------------------------- uploads


def test_chunked_upload_as_ollama_sends_it(oci: httpx.Client, home: Path) -> None:
    data = bytes(range(256)) * 400
    sessions = uploads_left(home)
    d = push_blob(oci, "ns/model", data, chunk=10_000)
    assert oci.get(f"/v2/ns/model/blobs/{d}").content == data
    assert uploads_left(home) == sessions and tmp_files(home) == []


def test_chunk_with_bytes_prefix_and_streamed_chunks(oci: httpx.Client, home: Path) -> None:
    data = b"0123456789" * 100
    r = oci.post("/v2/lib/s/blobs/uploads/")
    location = r.headers["location"]
    assert r.headers["docker-upload-uuid"] in location and r.headers["range"] == "0-0"
    r = oci.patch(location, content=data[:300], headers={"Content-Range": "bytes=0-299"})
    assert r.status_code == 202 and r.headers["range"] == "0-299"

    def stream() -> Iterator[bytes]:  # chunked transfer, no Content-Range, no Content-Length
        yield data[300:500]
        yield data[500:700]

    r = oci.patch(r.headers["location"], content=stream())
    assert r.status_code == 202 and r.headers["range"] == "0-699"
    status = oci.get(location)
    assert status.status_code == 204 and status.headers["range"] == "0-699"
    assert status.headers["location"] == location
    r = oci.put(location, params={"digest": digest_of(data)}, content=data[700:])  # final chunk in the PUT
    assert r.status_code == 201, r.text
    assert r.headers["location"].endswith(f"/v2/lib/s/blobs/{digest_of(data)}")
    assert oci.get(f"/v2/lib/s/blobs/{digest_of(data)}").content == data
    assert_error(oci.get(location), 404, "BLOB_UPLOAD_UNKNOWN")
    assert location.rsplit("/", 1)[1] not in uploads_left(home)


def test_cancel_upload(oci: httpx.Client, home: Path) -> None:
    before = uploads_left(home)
    location = oci.post("/v2/lib/c/blobs/uploads/").headers["location"]
    oci.patch(location, content=b"abc", headers={"Content-Range": "0-2"})
    assert len(uploads_left(home)) == len(before) + 1
    assert oci.delete(location).status_code == 204
    assert uploads_left(home) == before
    assert_error(oci.get(location), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(oci.delete(location), 404, "BLOB_UPLOAD_UNKNOWN")


def test_wrong_digest_keeps_nothing(oci: httpx.Client, home: Path) -> None:
    before, sessions = blob_files(home), uploads_left(home)
    data, wrong = b"payload", digest_of(b"other")
    r = oci.post("/v2/lib/w/blobs/uploads/", params={"digest": wrong}, content=data)
    assert_error(r, 400, "DIGEST_INVALID")
    location = oci.post("/v2/lib/w/blobs/uploads/").headers["location"]
    oci.patch(location, content=data, headers={"Content-Range": f"0-{len(data) - 1}"})
    assert_error(oci.put(location, params={"digest": wrong}), 400, "DIGEST_INVALID")
    assert_error(oci.get(location), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(oci.head(f"/v2/lib/w/blobs/{digest_of(data)}"), 404, "BLOB_UNKNOWN")
    assert blob_files(home) == before
    assert uploads_left(home) == sessions and tmp_files(home) == []


def test_finish_needs_a_valid_digest_and_keeps_the_session(oci: httpx.Client) -> None:
    location = oci.post("/v2/lib/d/blobs/uploads/").headers["location"]
    oci.patch(location, content=b"abc", headers={"Content-Range": "0-2"})
    assert_error(oci.put(location), 400, "DIGEST_INVALID")
    assert_error(oci.put(location, params={"digest": "sha256:nothex"}), 400, "DIGEST_INVALID")
    assert_error(oci.put(location, params={"digest": "sha512:" + "a" * 128}), 400, "DIGEST_INVALID")
    assert oci.get(location).headers["range"] == "0-2"
    assert oci.put(location, params={"digest": digest_of(b"abc")}).status_code == 201


def test_unknown_upload_sessions(oci: httpx.Client, home: Path) -> None:
    sessions = uploads_left(home)
    for upload_id in (uuid.uuid4().hex, "not-a-uuid", "%2E%2E", "%2e%2e%2f%2e%2e%2fcatalog.db", "A" * 32):
        base = f"/v2/lib/u/blobs/uploads/{upload_id}"
        assert_error(oci.get(base), 404, "BLOB_UPLOAD_UNKNOWN")
        assert_error(
            oci.patch(base, content=b"x", headers={"Content-Range": "0-0"}), 404, "BLOB_UPLOAD_UNKNOWN"
        )
        assert_error(
            oci.put(base, params={"digest": digest_of(b"x")}, content=b"x"), 404, "BLOB_UPLOAD_UNKNOWN"
        )
        assert_error(oci.delete(base), 404, "BLOB_UPLOAD_UNKNOWN")
    assert uploads_left(home) == sessions
    assert (home / "catalog.db").exists()


def test_session_belongs_to_its_repository(oci: httpx.Client) -> None:
    location = oci.post("/v2/lib/one/blobs/uploads/").headers["location"]
    other = location.replace("/lib/one/", "/lib/two/")
    assert_error(oci.patch(other, content=b"x", headers={"Content-Range": "0-0"}), 404, "BLOB_UPLOAD_UNKNOWN")
    assert oci.get(location).status_code == 204


def test_bad_content_range(oci: httpx.Client, home: Path) -> None:
    location = oci.post("/v2/lib/r/blobs/uploads/").headers["location"]
    assert oci.patch(location, content=b"abcd", headers={"Content-Range": "0-3"}).status_code == 202
    r = oci.patch(location, content=b"efgh", headers={"Content-Range": "0-3"})  # out of order
    assert_error(r, 416, "RANGE_INVALID")
    assert r.headers["range"] == "0-3" and r.headers["location"] == location
    r = oci.patch(location, content=b"efgh", headers={"Content-Range": "8-11"})  # a gap
    assert_error(r, 416, "RANGE_INVALID")
    for bad in ("abc", "4-", "7-4", "-4", "bytes=x-y"):
        assert_error(
            oci.patch(location, content=b"efgh", headers={"Content-Range": bad}), 416, "RANGE_INVALID"
        )
    r = oci.patch(location, content=b"efgh", headers={"Content-Range": "4-9"})  # 6 announced, 4 sent
    assert_error(r, 400, "SIZE_INVALID")
    assert oci.get(location).headers["range"] == "0-3"  # what the failed chunks sent is not kept
    assert oci.patch(location, content=b"efgh", headers={"Content-Range": "4-7"}).status_code == 202
    assert oci.put(location, params={"digest": digest_of(b"abcdefgh")}).status_code == 201


def test_busy_session_is_refused_not_corrupted(oci: httpx.Client, server: ServerProcess) -> None:
    location = oci.post("/v2/lib/busy/blobs/uploads/").headers["location"]
    started, release = threading.Event(), threading.Event()
    result: dict[str, Any] = {}

    def slow_body() -> Iterator[bytes]:
        yield b"a" * 1000
        started.set()
        release.wait(30)
        yield b"b" * 1000

    def first() -> None:
        with httpx.Client(timeout=60) as c:
            result["r"] = c.patch(location, content=slow_body())

    t = threading.Thread(target=first)
    t.start()
    try:
        assert started.wait(30)
        # A chunk that could never fit: refused as out of range until the first request holds the
        # session, then refused as busy; either way the session is untouched.
        busy = None
        for _ in range(600):
            got = oci.patch(location, content=b"c" * 10, headers={"Content-Range": "5000-5009"})
            assert_error(got, 416, "RANGE_INVALID")
            if "busy" in got.json()["errors"][0]["message"]:
                busy = got
                break
            threading.Event().wait(0.05)
        assert busy is not None
    finally:
        release.set()
        t.join(60)
    assert result["r"].status_code == 202 and result["r"].headers["range"] == "0-1999"
    data = b"a" * 1000 + b"b" * 1000
    assert oci.put(location, params={"digest": digest_of(data)}).status_code == 201


def test_mount_and_monolithic(oci: httpx.Client) -> None:
    d = push_blob(oci, "lib/src", b"shared layer")
    assert_error(oci.get(f"/v2/lib/dst/blobs/{d}"), 404, "BLOB_UNKNOWN")
    r = oci.post("/v2/lib/dst/blobs/uploads/", params={"mount": d, "from": "lib/src"})
    assert r.status_code == 201 and r.headers["docker-content-digest"] == d
    assert r.headers["location"].endswith(f"/v2/lib/dst/blobs/{d}")
    assert oci.get(f"/v2/lib/dst/blobs/{d}").content == b"shared layer"
    # Not in `from` (absent, or only in another repository), no `from`, or a bad one: an upload instead.
    for params in (
        {"mount": digest_of(b"absent"), "from": "lib/src"},
        {"mount": d, "from": "lib/elsewhere"},
        {"mount": d},
        {"mount": d, "from": "../lib/src"},
    ):
        r = oci.post("/v2/lib/dst2/blobs/uploads/", params=params)
        assert r.status_code == 202 and "/v2/lib/dst2/blobs/uploads/" in r.headers["location"], params
    assert_error(oci.get(f"/v2/lib/dst2/blobs/{d}"), 404, "BLOB_UNKNOWN")
    r = oci.post("/v2/lib/dst/blobs/uploads/", params={"digest": digest_of(b"")}, content=b"")
    assert r.status_code == 201


def test_expired_sessions_are_collected(start_server: Any, tmp_path: Path) -> None:
    home = tmp_path / "home"
    server = start_server(home, env={"HANGAR_UPLOAD_EXPIRY": "0"})
    with httpx.Client(base_url=server.url) as c:
        location = c.post("/v2/lib/old/blobs/uploads/").headers["location"]
        c.patch(location, content=b"abc", headers={"Content-Range": "0-2"})
        assert len(uploads_left(home)) == 1
        report = c.post("/api/hangar/gc", json={"dry_run": False}).json()
        assert any(s.startswith("uploads/") for s in report["strays"])
        assert uploads_left(home) == []
        assert_error(c.get(location), 404, "BLOB_UPLOAD_UNKNOWN")


# ---------------------------------------------------------------------------------------------- blobs


def test_blob_head_get_and_ranges(oci: httpx.Client, server: ServerProcess) -> None:
    data = bytes(range(256)) * 8
    d = push_blob(oci, "lib/b", data)
    own_url = f"{server.url}/v2/lib/b/blobs/{d}"
    head = oci.head(f"/v2/lib/b/blobs/{d}")
    assert head.status_code == 200 and int(head.headers["content-length"]) == len(data)
    assert head.headers["docker-content-digest"] == d and head.headers["accept-ranges"] == "bytes"
    assert head.headers["location"] == own_url
    r = oci.get(f"/v2/lib/b/blobs/{d}")
    assert r.content == data and r.headers["location"] == own_url
    for header, want in (("bytes=10-19", data[10:20]), ("bytes=2040-", data[2040:]), ("bytes=-5", data[-5:])):
        r = oci.get(f"/v2/lib/b/blobs/{d}", headers={"Range": header})
        assert r.status_code == 206 and r.content == want, header
        assert r.headers["location"] == own_url
    r = oci.get(f"/v2/lib/b/blobs/{d}", headers={"Range": "bytes=0-99999"})
    assert r.status_code == 206 and r.content == data
    assert r.headers["content-range"] == f"bytes 0-{len(data) - 1}/{len(data)}"
    for bad in ("bytes=5000-", "bytes=9-3", "bytes=0-1,4-5", "items=0-1", "bytes=-0"):
        r = oci.get(f"/v2/lib/b/blobs/{d}", headers={"Range": bad})
        assert_error(r, 416, "RANGE_INVALID")
    assert r.headers["content-range"] == f"bytes */{len(data)}"


def test_a_blob_is_served_only_by_the_repositories_that_have_it(oci: httpx.Client) -> None:
    loose = push_blob(oci, "lib/first", b"uploaded here")
    push_image(oci, "lib/first", "v1", b'{"n":"first"}', [b"named here"])
    push_blob(oci, "lib/second", b"something")
    for d in (loose, digest_of(b"named here")):
        for method in ("GET", "HEAD"):
            assert_error(oci.request(method, f"/v2/lib/second/blobs/{d}"), 404, "BLOB_UNKNOWN")
            assert oci.request(method, f"/v2/lib/first/blobs/{d}").status_code == 200


def test_delete_blob(oci: httpx.Client, home: Path) -> None:
    loose = push_blob(oci, "lib/del", b"never referenced")
    assert oci.delete(f"/v2/lib/del/blobs/{loose}").status_code == 202
    assert blob_file(loose) not in blob_files(home)
    assert_error(oci.delete(f"/v2/lib/del/blobs/{loose}"), 404, "BLOB_UNKNOWN")
    manifest = push_image(oci, "lib/del", "v1", b'{"n":"del"}', [b"used"])
    r = oci.delete(f"/v2/lib/del/blobs/{digest_of(b'used')}")
    assert_error(r, 405, "UNSUPPORTED")
    assert r.json()["errors"][0]["detail"] == {"digest": digest_of(b"used"), "manifests": [manifest]}
    assert manifest in r.json()["errors"][0]["message"]
    assert blob_file(digest_of(b"used")) in blob_files(home)
    assert oci.get(f"/v2/lib/del/blobs/{digest_of(b'used')}").content == b"used"
    # Deleting it from a repository that only has it too leaves lib/del's copy alone.
    assert oci.post("/v2/lib/del2/blobs/uploads/", params={"mount": digest_of(b"used"), "from": "lib/del"})
    assert oci.delete(f"/v2/lib/del2/blobs/{digest_of(b'used')}").status_code == 202
    assert_error(oci.get(f"/v2/lib/del2/blobs/{digest_of(b'used')}"), 404, "BLOB_UNKNOWN")
    assert oci.get(f"/v2/lib/del/blobs/{digest_of(b'used')}").content == b"used"
    assert_store_consistent(home)


def test_delete_blob_a_trashed_manifest_holds(start_server: Any, tmp_path: Path) -> None:
    """Gone from the repository at once; the trash keeps its copy, and restoring the entry brings it back."""
    home = tmp_path / "home"
    server = start_server(home, env={"HANGAR_TRASH_RETENTION": "1d", "HANGAR_REUSE_FUSE": "30s"})
    with httpx.Client(base_url=server.url) as c:
        manifest = push_image(c, "lib/t", "v1", b'{"n":"trashed"}', [b"trashed layer"])
        layer = digest_of(b"trashed layer")
        assert c.delete(f"/v2/lib/t/manifests/{manifest}").status_code == 202
        assert c.get(f"/v2/lib/t/blobs/{layer}").status_code == 200  # still uploaded into lib/t
        assert c.delete(f"/v2/lib/t/blobs/{layer}").status_code == 202
        assert_error(c.get(f"/v2/lib/t/blobs/{layer}"), 404, "BLOB_UNKNOWN")
        assert_error(c.head(f"/v2/lib/t/blobs/{layer}"), 404, "BLOB_UNKNOWN")
        assert blob_file(layer) in blob_files(home)
        [entry] = c.get("/api/hangar/trash").json()["entries"]
        assert c.post("/api/hangar/trash/restore", json={"model": str(entry["id"])}).status_code == 200
        assert c.get(f"/v2/lib/t/blobs/{layer}").content == b"trashed layer"
        assert c.get("/v2/lib/t/manifests/v1").status_code == 200


# ---------------------------------------------------------------------------------------------- manifests


def test_manifest_naming_missing_blobs(oci: httpx.Client, home: Path) -> None:
    config = b'{"n":"missing blobs"}'
    push_blob(oci, "lib/m", config)
    missing = [b"absent layer 1", b"absent layer 2"]
    body = image_manifest(config, missing)
    r = oci.put("/v2/lib/m/manifests/v1", content=body, headers={"Content-Type": OCI_MANIFEST})
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")
    assert sorted(e["detail"]["digest"] for e in r.json()["errors"]) == sorted(map(digest_of, missing))
    assert_error(oci.get("/v2/lib/m/manifests/v1"), 404, "MANIFEST_UNKNOWN")  # lib/m has a blob
    assert oci.get("/v2/lib/m/tags/list").json() == {"name": "lib/m", "tags": []}
    assert "lib/m" not in oci.get("/v2/_catalog").json()["repositories"]
    assert_store_consistent(home)  # GC takes the blob nothing names (grace 0), and lib/m with it
    assert_error(oci.get("/v2/lib/m/tags/list"), 404, "NAME_UNKNOWN")


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"schemaVersion": 1}',
        b'{"schemaVersion": 2, "config": {"digest": "sha256:../../x"}}',
    ],
)
def test_invalid_manifest(oci: httpx.Client, body: bytes) -> None:
    r = oci.put("/v2/lib/bad/manifests/v1", content=body, headers={"Content-Type": OCI_MANIFEST})
    assert_error(r, 400, "MANIFEST_INVALID")


def test_oversized_manifest(oci: httpx.Client) -> None:
    r = oci.put(
        "/v2/lib/big/manifests/v1", content=b" " * (4 << 20) + b"{}", headers={"Content-Type": OCI_MANIFEST}
    )
    assert r.status_code == 413 and error_codes(r) == ["SIZE_INVALID"]


def test_delete_manifest_by_tag_and_by_digest(oci: httpx.Client, home: Path) -> None:
    """By tag only the tag goes (the manifest stays pullable by digest); by digest the manifest goes."""
    d1 = push_image(oci, "lib/x", "v1", b'{"n":1}', [b"layer one", b"shared"])
    d2 = push_image(oci, "lib/x", "v2", b'{"n":2}', [b"layer two", b"shared"])
    ours = {blob_file(digest_of(b)) for b in (b'{"n":1}', b'{"n":2}', b"layer one", b"layer two", b"shared")}
    plan = oci.delete("/v2/lib/x/manifests/v1", params={"dry_run": "true"})
    assert plan.status_code == 200 and plan.json()["executed"] is False
    assert plan.json()["blobs"] == [] and plan.json()["untagged"] == [d1]
    assert oci.get("/v2/lib/x/manifests/v1").status_code == 200
    assert oci.delete("/v2/lib/x/manifests/v1").status_code == 202
    assert_error(oci.get("/v2/lib/x/manifests/v1"), 404, "MANIFEST_UNKNOWN")
    assert_error(oci.delete("/v2/lib/x/manifests/v1"), 404, "MANIFEST_UNKNOWN")
    assert oci.get(f"/v2/lib/x/manifests/{d1}").status_code == 200  # untagged, pullable by digest
    plan = oci.delete(f"/v2/lib/x/manifests/{d1}", params={"dry_run": "true"})
    assert sorted(plan.json()["blobs"]) == sorted([digest_of(b'{"n":1}'), digest_of(b"layer one")])
    assert oci.delete(f"/v2/lib/x/manifests/{d1}").status_code == 202
    assert_error(oci.get(f"/v2/lib/x/manifests/{d1}"), 404, "MANIFEST_UNKNOWN")
    on_disk = blob_files(home)
    assert blob_file(digest_of(b"layer one")) not in on_disk
    assert blob_file(digest_of(b"shared")) in on_disk
    assert oci.delete(f"/v2/lib/x/manifests/{d2}").status_code == 202
    assert_error(oci.get("/v2/lib/x/manifests/v2"), 404, "NAME_UNKNOWN")
    assert not ours & blob_files(home)
    assert_store_consistent(home)


def test_tags_and_catalog_pagination(oci: httpx.Client) -> None:
    push_blob(oci, "lib/p", b"{}")
    body = image_manifest(b"{}", [])
    for tag in ("v3", "v1", "latest", "v2", "V10"):
        assert oci.put(
            f"/v2/lib/p/manifests/{tag}", content=body, headers={"Content-Type": OCI_MANIFEST}
        ).is_success
    everything = oci.get("/v2/lib/p/tags/list").json()["tags"]
    assert everything == sorted(everything) and len(everything) == 5
    seen, url = [], "/v2/lib/p/tags/list?n=2"
    while url:
        r = oci.get(url)
        assert len(r.json()["tags"]) <= 2
        seen += r.json()["tags"]
        url = r.links.get("next", {}).get("url", "")
    assert seen == everything
    assert oci.get("/v2/lib/p/tags/list", params={"n": "0"}).json()["tags"] == []
    assert oci.get("/v2/lib/p/tags/list", params={"last": everything[2]}).json()["tags"] == everything[3:]
    assert_error(oci.get("/v2/lib/p/tags/list", params={"n": "-1"}), 400, "UNSUPPORTED")
    for repo in ("lib/q", "a", "z/y/x"):
        push_blob(oci, repo, b"{}")
        assert oci.put(
            f"/v2/{repo}/manifests/t", content=body, headers={"Content-Type": OCI_MANIFEST}
        ).is_success
    everything = oci.get("/v2/_catalog").json()["repositories"]  # other tests' repositories too
    assert everything == sorted(everything) and {"a", "lib/p", "lib/q", "z/y/x"} <= set(everything)
    r = oci.get("/v2/_catalog", params={"n": "2"})
    assert r.json()["repositories"] == everything[:2] and 'rel="next"' in r.headers["link"]
    seen, url = [], "/v2/_catalog?n=2"
    while url:
        r = oci.get(url)
        assert len(r.json()["repositories"]) <= 2
        seen += r.json()["repositories"]
        url = r.links.get("next", {}).get("url", "")
    assert seen == everything


@pytest.mark.parametrize("path", ["/v2/_catalog", "/v2/lib/p/tags/list"])
def test_pages_past_any_size_or_from_any_position_answer_a_page_or_400(oci: httpx.Client, path: str) -> None:
    """An `n` beyond what any database integer holds gets a page (at most PAGE_MAX names); a `last` no
    name could follow, or an `n` of digits that are not ASCII, is a 400 in the registry's format."""
    push_blob(oci, "lib/p", b"{}")
    body = image_manifest(b"{}", [])
    assert oci.put(
        "/v2/lib/p/manifests/latest", content=body, headers={"Content-Type": OCI_MANIFEST}
    ).is_success
    key = "repositories" if path == "/v2/_catalog" else "tags"
    everything = oci.get(path).json()[key]
    for n in ("2147483647", "99999999999999999999999"):
        r = oci.get(path, params={"n": n})
        assert r.status_code == 200 and r.json()[key] == everything, (n, r.text)
    for params in ({"last": "a\x00b"}, {"n": "\u00b2"}, {"n": "\u0661"}):
        assert_error(oci.get(path, params=params), 400, "UNSUPPORTED")


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/v2/Lib/x/manifests/v1", 400, "NAME_INVALID"),
        ("/v2/lib/..%2F..%2Fetc/manifests/v1", 400, "NAME_INVALID"),
        ("/v2/lib/%2E%2E/manifests/v1", 400, "NAME_INVALID"),
        ("/v2/lib//x/tags/list", 400, "NAME_INVALID"),
        ("/v2/-lib/x/blobs/uploads/", 400, "NAME_INVALID"),
        ("/v2/" + "a" * 256 + "/tags/list", 400, "NAME_INVALID"),
        ("/v2/never/pushed/manifests/%2E%2E", 404, "NAME_UNKNOWN"),
        ("/v2/lib/x/manifests/sha256:..%2F..%2Fetc", 400, "DIGEST_INVALID"),
        ("/v2/lib/x/blobs/sha256:abc", 400, "DIGEST_INVALID"),
        ("/v2/lib/x/blobs/sha256:" + "A" * 64, 400, "DIGEST_INVALID"),
        ("/v2/lib/x/blobs/sha256-" + "a" * 64, 400, "DIGEST_INVALID"),
        ("/v2/lib/x/blobs/md5:abc", 400, "DIGEST_INVALID"),
        ("/v2/lib/x/blobs/sha256:" + "a" * 64, 404, "BLOB_UNKNOWN"),
        ("/v2/never/pushed/manifests/v1", 404, "NAME_UNKNOWN"),
        ("/v2/never/pushed/tags/list", 404, "NAME_UNKNOWN"),
        ("/v2/lib/x/nothing", 404, "UNSUPPORTED"),
    ],
)
def test_invalid_requests_get_the_envelope(
    oci: httpx.Client, home: Path, path: str, status: int, code: str
) -> None:
    before, sessions = blob_files(home), uploads_left(home)
    r = oci.get(path)
    assert_error(r, status, code)
    assert blob_files(home) == before and uploads_left(home) == sessions


def test_invalid_names_on_writes_create_nothing(oci: httpx.Client, home: Path) -> None:
    before, sessions = blob_files(home), uploads_left(home)
    body = image_manifest(b"{}", [])
    for name in ("..%2F..%2Fetc", "UPPER/case", "trailing/"):
        assert_error(oci.post(f"/v2/{name}/blobs/uploads/"), 400, "NAME_INVALID")
        r = oci.put(f"/v2/{name}/manifests/v1", content=body, headers={"Content-Type": OCI_MANIFEST})
        assert_error(r, 400, "NAME_INVALID")
    r = oci.post("/v2/lib/x/blobs/uploads/", params={"digest": "sha256:../../etc/passwd"}, content=b"x")
    assert_error(r, 400, "DIGEST_INVALID")
    assert blob_files(home) == before and uploads_left(home) == sessions and tmp_files(home) == []


def test_unsupported_method(oci: httpx.Client) -> None:
    r = oci.post("/v2/lib/x/manifests/v1")
    assert_error(r, 405, "UNSUPPORTED")
    assert "PUT" in r.headers["allow"]


# ---------------------------------------------------------------------------------------------- other faces


def test_ollama_model_is_pullable_through_v2(
    client: Any, tmp_path: Path, make_gguf: Any, server: ServerProcess
) -> None:
    """What Ollama's own puller does: manifest by tag, HEAD each blob, GET it for Location, ranged GETs."""
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(make_gguf(seed=7))
    digest = client.create_blob(gguf)
    client.create(model="tiny", files={"tiny.gguf": digest}, system="You are tiny.")
    with httpx.Client(base_url=server.url) as c:
        r = c.get("/v2/library/tiny/manifests/latest", headers={"Accept": DOCKER_MANIFEST})
        assert r.status_code == 200, r.text
        assert r.headers["docker-content-digest"] == digest_of(r.content)
        listed = {m["name"]: m for m in c.get("/api/tags").json()["models"]}
        assert listed["tiny:latest"]["digest"] == digest_of(r.content).removeprefix("sha256:")
        manifest = r.json()
        descriptors = [manifest["config"], *manifest["layers"]]
        assert digest in {d["digest"] for d in descriptors}
        for desc in descriptors:
            url = f"/v2/library/tiny/blobs/{desc['digest']}"
            head = c.head(url)
            assert head.status_code == 200 and int(head.headers["content-length"]) == desc["size"]
            got = c.get(url)
            assert got.headers["location"] == f"{server.url}{url}"
            assert digest_of(got.content) == desc["digest"]
            half = desc["size"] // 2
            part = httpx.get(got.headers["location"], headers={"Range": f"bytes={half}-{desc['size'] - 1}"})
            assert part.status_code == 206 and part.content == got.content[half:]
        assert "library/tiny" in c.get("/v2/_catalog").json()["repositories"]
        assert c.get("/v2/library/tiny/tags/list").json() == {"name": "library/tiny", "tags": ["latest"]}


def test_manifest_pushed_through_v2_is_an_ollama_model(oci: httpx.Client, client: Any, home: Path) -> None:
    config, layer = b'{"architecture":"amd64","n":"via-v2"}', b"via-v2 layer"
    push_image(oci, "lib/via-v2", "v1", config, [layer])
    assert "lib/via-v2:v1" in {m.model for m in client.list().models}
    client.delete("lib/via-v2:v1")
    assert_error(oci.get("/v2/lib/via-v2/manifests/v1"), 404, "NAME_UNKNOWN")
    assert not {blob_file(digest_of(config)), blob_file(digest_of(layer))} & blob_files(home)


# ---------------------------------------------------------------------------------------------- referrers

EMPTY_CONFIG = b"{}"
EMPTY_CONFIG_TYPE = "application/vnd.oci.empty.v1+json"


def artifact_for(c: httpx.Client, name: str, subject: str, artifact_type: str, note: str) -> str:
    """Push an OCI 1.1 artifact manifest whose subject is `subject`, by digest; returns its digest."""
    push_blob(c, name, EMPTY_CONFIG)
    layer = note.encode()
    push_blob(c, name, layer)
    size = len(c.get(f"/v2/{name}/manifests/{subject}").content)
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": {"mediaType": EMPTY_CONFIG_TYPE, "digest": digest_of(EMPTY_CONFIG), "size": 2},
            "layers": [{"mediaType": "text/plain", "digest": digest_of(layer), "size": len(layer)}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": size},
            "annotations": {"note": note},
        }
    ).encode()
    r = c.put(f"/v2/{name}/manifests/{digest_of(body)}", content=body, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201, r.text
    assert r.headers["oci-subject"] == subject  # the registry keeps the referrers list: no fallback tag
    return digest_of(body)


def test_referrers_list_filter_and_forget_deleted_ones(oci: httpx.Client, home: Path) -> None:
    image = push_image(oci, "lib/signed", "v1", b'{"architecture":"amd64"}', [b"image layer"])
    sbom = artifact_for(oci, "lib/signed", image, "application/spdx+json", "sbom")
    signature = artifact_for(oci, "lib/signed", image, "application/vnd.dev.cosign+json", "signature")

    r = oci.get(f"/v2/lib/signed/referrers/{image}")
    assert r.status_code == 200 and r.headers["content-type"] == "application/vnd.oci.image.index.v1+json"
    index = r.json()
    assert index["schemaVersion"] == 2 and index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert [(m["digest"], m["artifactType"], m["annotations"]) for m in index["manifests"]] == [
        (sbom, "application/spdx+json", {"note": "sbom"}),
        (signature, "application/vnd.dev.cosign+json", {"note": "signature"}),
    ]
    assert all(m["mediaType"] == OCI_MANIFEST and m["size"] > 0 for m in index["manifests"])

    r = oci.get(f"/v2/lib/signed/referrers/{image}", params={"artifactType": "application/spdx+json"})
    assert r.headers["oci-filters-applied"] == "artifactType"
    assert [m["digest"] for m in r.json()["manifests"]] == [sbom]

    # Other repositories, unknown subjects and unknown repositories have none; never a 404.
    for path in (f"lib/other/referrers/{image}", f"lib/signed/referrers/{digest_of(b'nothing')}"):
        r = oci.get(f"/v2/{path}")
        assert r.status_code == 200 and r.json()["manifests"] == []
    assert_error(oci.get("/v2/lib/signed/referrers/sha256:nothex"), 400, "DIGEST_INVALID")

    # A deleted referrer leaves the list; the subject itself is unaffected by its referrers.
    assert oci.delete(f"/v2/lib/signed/manifests/{sbom}").status_code == 202
    assert [m["digest"] for m in oci.get(f"/v2/lib/signed/referrers/{image}").json()["manifests"]] == [
        signature
    ]
    assert oci.get("/v2/lib/signed/manifests/v1").status_code == 200
    assert_store_consistent(home)


def test_a_referrer_may_name_a_subject_the_registry_lacks(oci: httpx.Client) -> None:
    missing = digest_of(b"an image pushed later")
    push_blob(oci, "lib/early", EMPTY_CONFIG)
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": EMPTY_CONFIG_TYPE, "digest": digest_of(EMPTY_CONFIG), "size": 2},
            "layers": [],
            "subject": {"mediaType": OCI_MANIFEST, "digest": missing, "size": 10},
        }
    ).encode()
    r = oci.put(
        f"/v2/lib/early/manifests/{digest_of(body)}", content=body, headers={"Content-Type": OCI_MANIFEST}
    )
    assert r.status_code == 201 and r.headers["oci-subject"] == missing
    [listed] = oci.get(f"/v2/lib/early/referrers/{missing}").json()["manifests"]
    assert listed["digest"] == digest_of(body)
    assert listed["artifactType"] == EMPTY_CONFIG_TYPE  # no artifactType: the config's media type


def test_tags_differing_only_in_case_are_refused_not_merged(oci: httpx.Client, home: Path) -> None:
    """OCI tags are case-sensitive, the store's (Ollama's) are not: `V1` must not silently replace `v1`."""
    first = push_image(oci, "lib/cased", "v1", b'{"n":1}', [b"first"])
    config, layer = b'{"n":2}', b"second"
    push_blob(oci, "lib/cased", config)
    push_blob(oci, "lib/cased", layer)
    body = image_manifest(config, [layer])
    r = oci.put("/v2/lib/cased/manifests/V1", content=body, headers={"Content-Type": OCI_MANIFEST})
    assert_error(r, 403, "DENIED")
    assert "differ only in case" in r.json()["errors"][0]["message"]
    assert oci.get("/v2/lib/cased/tags/list").json()["tags"] == ["v1"]
    assert oci.head("/v2/lib/cased/manifests/v1").headers["docker-content-digest"] == first
    # The same manifest under either spelling is no change, so it is accepted.
    r = oci.put(
        "/v2/lib/cased/manifests/V1",
        content=image_manifest(b'{"n":1}', [b"first"]),
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert r.status_code == 201
    assert_store_consistent(home)


def test_blob_bytes_go_out_whole_in_ranges_and_a_client_that_leaves_harms_nothing(
    oci: httpx.Client, server: ServerProcess
) -> None:
    """Blob bodies go from the file to the socket (`modelhangar/zerocopy.py`): whole, by range, and
    cut short by a client that goes away mid-transfer, after which the server serves on."""
    data = os.urandom(24 << 20)
    d = push_blob(oci, "lib/big", data)
    r = oci.get(f"/v2/lib/big/blobs/{d}")
    assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == d.removeprefix("sha256:")
    r = oci.get(f"/v2/lib/big/blobs/{d}", headers={"Range": "bytes=1000-3000999"})
    assert r.status_code == 206 and r.content == data[1000:3001000]
    for _ in range(5):  # leave in the middle, five times over
        with (
            httpx.Client(base_url=server.url, timeout=30) as quitter,
            quitter.stream("GET", f"/v2/lib/big/blobs/{d}") as partial,
        ):
            assert next(partial.iter_bytes(1 << 16))
    assert oci.get("/v2/").status_code == 200
    r = oci.get(f"/v2/lib/big/blobs/{d}", headers={"Range": f"bytes={len(data) - 10}-"})
    assert r.status_code == 206 and r.content == data[-10:]
    assert "Traceback" not in server.log()


# --------------------------------------------------------------------- large bodies (directbody.py)

BIG_BODY = 12 << 20
"""Past faces/bodies.BODY_DIRECT_MIN: the server reads these bodies from the socket itself."""


def raw_request(server: ServerProcess, head: str, body: bytes, *, expect_continue: bool = False) -> bytes:
    """One request on a raw connection; with `expect_continue`, the body only after `100 Continue`.
    Returns everything the server sent until it closed the connection."""
    import socket

    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(head.encode())
        got = b""
        if expect_continue:
            while b"\r\n\r\n" not in got:
                got += s.recv(4096)
            assert got.startswith(b"HTTP/1.1 100"), got
        s.sendall(body)
        while chunk := s.recv(1 << 16):
            got += chunk
        return got


def test_large_bodies_go_from_the_socket_to_the_store(
    oci: httpx.Client, server: ServerProcess, home: Path
) -> None:
    """Monolithic, chunked and last-chunk-in-the-PUT uploads past the direct-read size arrive byte
    exact; such an answer closes its connection (the next request opens another)."""
    data = os.urandom(3 * BIG_BODY + 12345)
    d = digest_of(data[:BIG_BODY])
    r = oci.post("/v2/lib/direct/blobs/uploads/", params={"digest": d}, content=data[:BIG_BODY])
    assert r.status_code == 201, r.text
    assert r.headers["connection"] == "close"
    assert oci.get(f"/v2/lib/direct/blobs/{d}").content == data[:BIG_BODY]
    location = oci.post("/v2/lib/direct/blobs/uploads/").headers["location"]
    for start, end in [(0, BIG_BODY), (BIG_BODY, 2 * BIG_BODY + 7)]:
        r = oci.patch(location, content=data[start:end], headers={"Content-Range": f"{start}-{end - 1}"})
        assert r.status_code == 202 and r.headers["range"] == f"0-{end - 1}", r.text
        location = r.headers["location"]
    r = oci.put(location, params={"digest": digest_of(data)}, content=data[2 * BIG_BODY + 7 :])
    assert r.status_code == 201, r.text
    got = oci.get(f"/v2/lib/direct/blobs/{digest_of(data)}")
    assert got.content == data
    assert (
        oci.get(f"/v2/lib/direct/blobs/{digest_of(data)}", headers={"Range": "bytes=5-9"}).content
        == data[5:10]
    )
    answer = raw_request(  # a client that waits for `100 Continue` before the body gets it
        server,
        f"POST /v2/lib/direct/blobs/uploads/?digest={digest_of(data[1 : BIG_BODY + 1])} HTTP/1.1\r\n"
        f"Host: {server.host}\r\nContent-Length: {BIG_BODY}\r\nExpect: 100-continue\r\n\r\n",
        data[1 : BIG_BODY + 1],
        expect_continue=True,
    )
    assert b"HTTP/1.1 201" in answer, answer[:500]
    assert oci.head(f"/v2/lib/direct/blobs/{digest_of(data[1 : BIG_BODY + 1])}").status_code == 200
    assert tmp_files(home) == []
    assert "Traceback" not in server.log()


def test_large_body_with_a_wrong_digest_or_cut_short_keeps_nothing(
    oci: httpx.Client, server: ServerProcess, home: Path
) -> None:
    """A wrong digest keeps no blob; a client that leaves mid-body leaves the session where it was (it
    continues from there) and no temporary file; the server serves on."""
    import socket
    import time

    before = blob_files(home)
    data = os.urandom(BIG_BODY)
    r = oci.post("/v2/lib/direct-bad/blobs/uploads/", params={"digest": digest_of(b"x")}, content=data)
    assert_error(r, 400, "DIGEST_INVALID")
    assert_error(oci.head(f"/v2/lib/direct-bad/blobs/{digest_of(data)}"), 404, "BLOB_UNKNOWN")
    assert blob_files(home) == before
    location = oci.post("/v2/lib/direct-bad/blobs/uploads/").headers["location"]
    assert oci.patch(location, content=data[:1000], headers={"Content-Range": "0-999"}).status_code == 202
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as s:  # half the chunk, then gone
        s.sendall(
            f"PATCH {location.removeprefix(server.url)} HTTP/1.1\r\nHost: {server.host}\r\n"
            f"Content-Range: 1000-{BIG_BODY - 1}\r\nContent-Length: {BIG_BODY - 1000}\r\n\r\n".encode()
        )
        s.sendall(data[1000 : BIG_BODY // 2])
    for _ in range(400):  # the cut request holds the session until it has undone its bytes
        r = oci.patch(location, content=data[1000:], headers={"Content-Range": f"1000-{BIG_BODY - 1}"})
        if r.status_code != 416:
            break
        assert error_codes(r) == ["RANGE_INVALID"] and "busy" in r.text, r.text
        time.sleep(0.05)
    assert r.status_code == 202 and r.headers["range"] == f"0-{BIG_BODY - 1}", r.text
    r = oci.put(r.headers["location"], params={"digest": digest_of(data)})
    assert r.status_code == 201, r.text
    assert oci.get(f"/v2/lib/direct-bad/blobs/{digest_of(data)}").content == data
    assert tmp_files(home) == []
    assert "Traceback" not in server.log()
