"""The OCI distribution spec's conformance workflows (pull, push, content discovery, content
management), written from the spec and the checks of its conformance suite: statuses, headers and
error codes. Each runs against Debian's docker-registry (the reference: its deviations from the
spec are marked for it alone, with the reason) and against modelhangar's `/v2` face, both with the
test settings (no GC grace, reuse fuse or trash) and with the shipped defaults.

One registry of each kind serves the whole module; every test works in repositories of its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from harness import DEFAULT_ENV, DockerRegistry, ServerProcess
from modelhangar.core.config import KNOBS

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
EMPTY_JSON = b"{}"
EMPTY_JSON_TYPE = "application/vnd.oci.empty.v1+json"
DUMMY_DIGEST = "sha256:b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"  # "hello world"
INVALID_TAG = ".INVALID_MANIFEST_NAME"  # the suite's nonexistent (and invalid) manifest reference
SPEC_CODES = {
    "BLOB_UNKNOWN",
    "BLOB_UPLOAD_INVALID",
    "BLOB_UPLOAD_UNKNOWN",
    "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID",
    "MANIFEST_UNKNOWN",
    "NAME_INVALID",
    "NAME_UNKNOWN",
    "SIZE_INVALID",
    "UNAUTHORIZED",
    "DENIED",
    "UNSUPPORTED",
    "TOOMANYREQUESTS",
}
DOCKER = "docker-registry"
NO_TAG_DELETE = "distribution 2.8 cannot delete a tag: it reads the reference as a digest (400)"
HANGAR = ("hangar", "hangar-defaults")


@dataclass(frozen=True)
class Registry:
    kind: str
    url: str


def shipped_defaults() -> dict[str, str]:
    """The defaults a user gets, for the settings the test harness shortens."""
    return {k.env: k.default for k in KNOBS if k.env in DEFAULT_ENV}


@pytest.fixture(scope="module", params=[DOCKER, *HANGAR])
def registry(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    kind: str = request.param
    root = tmp_path_factory.mktemp(kind)
    if kind == DOCKER:
        if not DockerRegistry.installed():
            pytest.skip("docker-registry is not installed (apt-get install docker-registry)")
        reference = DockerRegistry(root).start()
        try:
            yield Registry(kind, reference.url)
        finally:
            reference.stop()
        return
    env = shipped_defaults() if kind == "hangar-defaults" else {}
    with ServerProcess(root / "home", env=env, log_dir=root / "logs") as server:
        yield Registry(kind, server.url)


@pytest.fixture
def c(registry: Registry) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=registry.url, timeout=30.0) as client:
        yield client


@pytest.fixture
def ns() -> str:
    """A repository of this test's own."""
    return f"conformance/{uuid.uuid4().hex[:12]}"


def deviates(request: pytest.FixtureRequest, registry: Registry, reason: str, *kinds: str) -> None:
    """Mark this test as one `kinds` (default: docker-registry) fail for `reason`."""
    if registry.kind in (kinds or (DOCKER,)):
        request.applymarker(pytest.mark.xfail(reason=reason, strict=True))


# ---------------------------------------------------------------------------------------------- helpers


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def config_blob() -> bytes:
    """A unique image config, as the suite makes one per workflow (a random author)."""
    doc = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
    return json.dumps({**doc, "author": uuid.uuid4().hex}, indent="\t").encode()


def layer_blob() -> bytes:
    return os.urandom(100)


def descriptor(media_type: str, data: bytes) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest_of(data), "size": len(data)}


def image(config: bytes, layers: list[bytes], **extra: Any) -> bytes:
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(CONFIG_TYPE, config),
        "layers": [descriptor(LAYER_TYPE, b) for b in layers],
        **extra,
    }
    return json.dumps(doc, indent="\t").encode()


def codes(r: httpx.Response) -> list[str]:
    """The codes of the spec's error envelope (asserting the body is one)."""
    body = r.json()
    assert isinstance(body.get("errors"), list) and body["errors"], body
    for e in body["errors"]:
        assert isinstance(e.get("code"), str) and isinstance(e.get("message"), str), e
    return [e["code"] for e in body["errors"]]


def at(location: str, **params: str) -> httpx.URL:
    """An upload URL with query parameters added to those it has (docker-registry's carry its state)."""
    return httpx.URL(location).copy_merge_params(params)


def upload(c: httpx.Client, name: str, data: bytes) -> str:
    """POST a session, then PUT the whole blob with its digest (what every workflow's setup does)."""
    r = c.post(f"/v2/{name}/blobs/uploads/")
    assert r.status_code == 202, r.text
    d = digest_of(data)
    r = c.put(
        at(r.headers["location"], digest=d),
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 201, r.text
    return d


def put_manifest(
    c: httpx.Client, name: str, ref: str, body: bytes, media_type: str = OCI_MANIFEST
) -> httpx.Response:
    r = c.put(f"/v2/{name}/manifests/{ref}", content=body, headers={"Content-Type": media_type})
    assert r.status_code == 201, r.text
    assert r.headers.get("location"), r.headers
    return r


def push_image(c: httpx.Client, name: str, ref: str) -> tuple[bytes, bytes, bytes]:
    """(config, layer, manifest) of a fresh image pushed under `ref`."""
    config, layer = config_blob(), layer_blob()
    upload(c, name, config)
    upload(c, name, layer)
    body = image(config, [layer])
    put_manifest(c, name, ref, body)
    return config, layer, body


def tags(c: httpx.Client, name: str, **params: Any) -> list[str]:
    r = c.get(f"/v2/{name}/tags/list", params=params)
    assert r.status_code == 200, r.text
    assert r.json()["name"] == name
    return list(r.json()["tags"] or [])


def blob_status(c: httpx.Client, name: str, digest: str) -> int:
    return c.get(f"/v2/{name}/blobs/{digest}").status_code


# ---------------------------------------------------------------------------------------------- pull


def test_api_version_check(c: httpx.Client) -> None:
    assert c.get("/v2/").status_code == 200


def test_pull_blobs(c: httpx.Client, ns: str) -> None:
    config = config_blob()
    d = upload(c, ns, config)
    assert c.head(f"/v2/{ns}/blobs/{DUMMY_DIGEST}").status_code == 404
    head = c.head(f"/v2/{ns}/blobs/{d}")
    assert head.status_code == 200
    assert head.headers.get("docker-content-digest", d) == d
    assert int(head.headers["content-length"]) == len(config)
    missing = c.get(f"/v2/{ns}/blobs/{DUMMY_DIGEST}")
    assert missing.status_code == 404 and codes(missing) == ["BLOB_UNKNOWN"]
    got = c.get(f"/v2/{ns}/blobs/{d}")
    assert got.status_code == 200 and got.content == config


def test_pull_manifests_by_tag_and_digest(c: httpx.Client, ns: str) -> None:
    _, _, tagged = push_image(c, ns, "tagtest0")
    config, layer = config_blob(), layer_blob()
    upload(c, ns, config)
    upload(c, ns, layer)
    untagged = image(config, [layer])
    put_manifest(c, ns, digest_of(untagged), untagged)
    for method in ("HEAD", "GET"):
        for ref, body in (("tagtest0", tagged), (digest_of(tagged), tagged), (digest_of(untagged), untagged)):
            r = c.request(method, f"/v2/{ns}/manifests/{ref}", headers={"Accept": OCI_MANIFEST})
            assert r.status_code == 200, (method, ref, r.text)
            assert r.headers.get("docker-content-digest", digest_of(body)) == digest_of(body)
            assert r.headers["content-type"] == OCI_MANIFEST
            if method == "GET":
                assert r.content == body


def test_nonexistent_manifest_is_404_manifest_unknown(
    c: httpx.Client, ns: str, registry: Registry, request: pytest.FixtureRequest
) -> None:
    """A reference that is not a valid tag names no manifest: 404, never MANIFEST_INVALID (that is for
    a pushed manifest)."""
    deviates(request, registry, "its router answers a plain-text 404, not the error envelope")
    push_image(c, ns, "v1")
    assert c.head(f"/v2/{ns}/manifests/{INVALID_TAG}").status_code == 404
    for r in (c.get(f"/v2/{ns}/manifests/{INVALID_TAG}"), c.get(f"/v2/{ns}/manifests/absent")):
        assert r.status_code == 404 and codes(r) == ["MANIFEST_UNKNOWN"], r.text
    r = c.delete(f"/v2/{ns}/manifests/{INVALID_TAG}")
    assert r.status_code == 404 and codes(r) == ["MANIFEST_UNKNOWN"], r.text


def test_unknown_manifest_reference_is_404(c: httpx.Client, ns: str) -> None:
    push_image(c, ns, "v1")
    for method in ("HEAD", "GET", "DELETE"):
        assert c.request(method, f"/v2/{ns}/manifests/{INVALID_TAG}").status_code == 404, method
    r = c.get(f"/v2/{ns}/manifests/absent")
    assert r.status_code == 404 and codes(r) == ["MANIFEST_UNKNOWN"]
    r = c.get(f"/v2/{ns}/manifests/{DUMMY_DIGEST}")
    assert r.status_code == 404 and codes(r) == ["MANIFEST_UNKNOWN"]


def test_400_answers_carry_a_spec_error_code(
    c: httpx.Client, ns: str, registry: Registry, request: pytest.FixtureRequest
) -> None:
    deviates(request, registry, "answers 500 UNKNOWN for a malformed digest reference")
    r = c.request(
        "GET",
        f"/v2/{ns}/manifests/sha256:totallywrong",
        content=b"blablabla",
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert r.status_code in (400, 404), r.text
    if r.status_code == 400:
        assert codes(r)[0] in SPEC_CODES


# ---------------------------------------------------------------------------------------------- push


def test_streamed_upload(c: httpx.Client, ns: str) -> None:
    data = os.urandom(42)
    r = c.post(f"/v2/{ns}/blobs/uploads/")
    assert r.status_code == 202 and r.headers["location"]
    r = c.patch(r.headers["location"], content=data, headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 202, r.text
    r = c.put(
        at(r.headers["location"], digest=digest_of(data)),
        headers={"Content-Type": "application/octet-stream", "Content-Length": "0"},
    )
    assert r.status_code == 201 and r.headers["location"], r.text
    assert c.get(f"/v2/{ns}/blobs/{digest_of(data)}").content == data


def test_monolithic_uploads(c: httpx.Client, ns: str) -> None:
    data = config_blob()
    d = digest_of(data)
    assert blob_status(c, ns, d) == 404
    r = c.post(
        f"/v2/{ns}/blobs/uploads/",
        params={"digest": d},
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert r.status_code in (201, 202) and r.headers["location"], r.text
    assert blob_status(c, ns, d) == (200 if r.status_code == 201 else 404)
    session = c.post(f"/v2/{ns}/blobs/uploads/")
    assert session.status_code == 202
    r = c.put(
        at(session.headers["location"], digest=d),
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 201 and r.headers["location"], r.text
    assert blob_status(c, ns, d) == 200


def _chunks(data: bytes) -> tuple[tuple[bytes, str], tuple[bytes, str]]:
    half = len(data) // 2
    return (data[:half], f"0-{half - 1}"), (data[half:], f"{half}-{len(data) - 1}")


def _patch(c: httpx.Client, location: str, chunk: bytes, span: str) -> httpx.Response:
    return c.patch(
        location,
        content=chunk,
        headers={"Content-Type": "application/octet-stream", "Content-Range": span},
    )


def test_chunked_upload(c: httpx.Client, ns: str) -> None:
    data = os.urandom(42)
    (first, first_span), (second, second_span) = _chunks(data)
    r = c.post(f"/v2/{ns}/blobs/uploads/", headers={"Content-Length": "0"})
    assert r.status_code == 202 and r.headers["location"]
    r = _patch(c, r.headers["location"], first, first_span)
    assert r.status_code == 202 and r.headers["range"] == first_span
    r = _patch(c, r.headers["location"], second, second_span)
    assert r.status_code == 202 and r.headers["location"]
    r = c.put(at(r.headers["location"], digest=digest_of(data)), headers={"Content-Length": "0"})
    assert r.status_code == 201 and r.headers["location"], r.text
    assert c.get(f"/v2/{ns}/blobs/{digest_of(data)}").content == data


def test_out_of_order_chunk_is_416(
    c: httpx.Client, ns: str, registry: Registry, request: pytest.FixtureRequest
) -> None:
    deviates(request, registry, "accepts (202) a chunk that does not start where the session stands")
    _, (second, second_span) = _chunks(os.urandom(42))
    r = c.post(f"/v2/{ns}/blobs/uploads/", headers={"Content-Length": "0"})
    assert _patch(c, r.headers["location"], second, second_span).status_code == 416


def test_retried_chunk_is_416_and_the_session_url_stays_valid(
    c: httpx.Client, ns: str, registry: Registry, request: pytest.FixtureRequest
) -> None:
    deviates(request, registry, "an upload URL goes stale (404) once a chunk moved the session on")
    data = os.urandom(42)
    (first, first_span), (second, second_span) = _chunks(data)
    location = c.post(f"/v2/{ns}/blobs/uploads/", headers={"Content-Length": "0"}).headers["location"]
    assert _patch(c, location, first, first_span).status_code == 202
    assert _patch(c, location, first, first_span).status_code == 416
    status = c.get(location)
    assert status.status_code == 204 and status.headers["location"]
    assert status.headers["range"] == first_span
    r = _patch(c, status.headers["location"], second, second_span)
    assert r.status_code == 202
    r = c.put(at(r.headers["location"], digest=digest_of(data)), headers={"Content-Length": "0"})
    assert r.status_code == 201


def test_cross_repository_mount(c: httpx.Client, ns: str) -> None:
    cross = f"{ns}-other"
    r = c.post(f"/v2/{cross}/blobs/uploads/", params={"mount": DUMMY_DIGEST})
    assert r.status_code == 202 and r.headers["location"]
    d = upload(c, ns, os.urandom(42))
    r = c.post(f"/v2/{cross}/blobs/uploads/", params={"mount": d, "from": ns})
    assert r.status_code in (201, 202), r.text
    path = httpx.URL(r.headers["location"]).path
    if r.status_code == 201:
        assert path == f"/v2/{cross}/blobs/{d}"
        assert c.get(r.headers["location"]).status_code == 200
    else:
        assert path.startswith(f"/v2/{cross}/blobs/uploads/")


def test_a_mount_needs_the_blob_in_the_from_repository(c: httpx.Client, ns: str) -> None:
    d = upload(c, f"{ns}-a", os.urandom(42))
    upload(c, f"{ns}-b", os.urandom(42))
    r = c.post(f"/v2/{ns}-c/blobs/uploads/", params={"mount": d, "from": f"{ns}-b"})
    assert r.status_code == 202 and httpx.URL(r.headers["location"]).path.startswith(
        f"/v2/{ns}-c/blobs/uploads/"
    )
    assert blob_status(c, f"{ns}-c", d) == 404


def test_blobs_belong_to_the_repositories_they_were_pushed_to(c: httpx.Client, ns: str) -> None:
    loose = upload(c, f"{ns}-a", os.urandom(42))
    config, layer, _ = push_image(c, f"{ns}-a", "v1")
    upload(c, f"{ns}-b", os.urandom(42))  # the other repository exists
    for d in (loose, digest_of(config), digest_of(layer)):
        assert c.head(f"/v2/{ns}-b/blobs/{d}").status_code == 404
        r = c.get(f"/v2/{ns}-b/blobs/{d}")
        assert r.status_code == 404 and codes(r) == ["BLOB_UNKNOWN"]
        assert blob_status(c, f"{ns}-a", d) == 200


def test_manifest_upload(c: httpx.Client, ns: str) -> None:
    assert c.get(f"/v2/{ns}/manifests/{INVALID_TAG}").status_code == 404
    config, layer = config_blob(), layer_blob()
    upload(c, ns, config)
    upload(c, ns, layer)
    body = image(config, [layer])
    for i in range(4):
        put_manifest(c, ns, f"test{i}", body)
    no_layers = json.dumps(
        {"schemaVersion": 2, "config": descriptor(CONFIG_TYPE, config), "layers": []}
    ).encode()
    put_manifest(c, ns, "emptylayer", no_layers)
    r = c.get(f"/v2/{ns}/manifests/{digest_of(body)}", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 200 and r.content == body
    assert sorted(tags(c, ns)) == ["emptylayer", "test0", "test1", "test2", "test3"]


def test_manifest_naming_unknown_blobs_is_refused(c: httpx.Client, ns: str) -> None:
    config = config_blob()
    upload(c, ns, config)
    r = c.put(
        f"/v2/{ns}/manifests/v1",
        content=image(config, [layer_blob()]),
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert r.status_code == 400 and set(codes(r)) == {"MANIFEST_BLOB_UNKNOWN"}, r.text
    assert c.get(f"/v2/{ns}/manifests/v1").status_code == 404


# ------------------------------------------------------------------------------------- content discovery


def test_tags_list(c: httpx.Client, ns: str) -> None:
    _, _, body = push_image(c, ns, "test0")
    for i in range(1, 4):
        put_manifest(c, ns, f"test{i}", body)
    assert sorted(tags(c, ns)) == ["test0", "test1", "test2", "test3"]


def test_tags_list_pagination(
    c: httpx.Client, ns: str, registry: Registry, request: pytest.FixtureRequest
) -> None:
    deviates(request, registry, "distribution 2.8 lists tags unsorted and ignores `n` and `last`")
    _, _, body = push_image(c, ns, "test0")
    for i in range(1, 4):
        put_manifest(c, ns, f"test{i}", body)
    everything = tags(c, ns)
    assert everything == sorted(everything)
    first = tags(c, ns, n=2)
    assert first == everything[:2]
    assert tags(c, ns, n=2, last=first[-1]) == everything[2:]


@dataclass
class Referrers:
    subject: bytes
    expected: dict[str, str]
    """digest -> annotation of every referrer of `subject`."""
    type_a: list[str]
    orphan: str
    orphan_subject: str


ANNOTATION = "org.opencontainers.conformance.test"
TYPE_A = "application/vnd.nhl.peanut.butter.bagel"
TYPE_B = "application/vnd.nba.strawberry.jam.croissant"


def push_referrers(c: httpx.Client, ns: str) -> Referrers:
    """The suite's references setup: artifacts with a subject (by config type and by artifactType),
    an index artifact, some pushed before their subject exists, and one to a subject never pushed."""
    blob_a, blob_b = b"NHL Peanut Butter on my NHL bagel", b"NBA Strawberry Jam on my NBA croissant"
    config, layer = config_blob(), layer_blob()
    subject = image(config, [layer])
    never_pushed = image(config_blob(), [layer])
    about = {"mediaType": OCI_MANIFEST, "digest": digest_of(subject), "size": len(subject)}
    empty = descriptor(EMPTY_JSON_TYPE, EMPTY_JSON)

    def by_config(blob: bytes, media: str, note: str) -> bytes:
        doc = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor(media, blob),
            "subject": about,
            "layers": [empty],
            "annotations": {ANNOTATION: note},
        }
        return json.dumps(doc, indent="\t").encode()

    def by_type(blob: bytes, media: str, note: str | None, target: dict[str, Any] = about) -> bytes:
        doc: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": media,
            "config": empty,
            "subject": target,
            "layers": [descriptor(media, blob)],
        }
        if note is not None:
            doc["annotations"] = {ANNOTATION: note}
        return json.dumps(doc, indent="\t").encode()

    config_a, layer_a = by_config(blob_a, TYPE_A, "test config a"), by_type(blob_a, TYPE_A, "test layer a")
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "artifactType": "application/vnd.food.stand",
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": digest_of(m), "size": len(m)}
                for m in (config_a, layer_a)
            ],
            "subject": about,
            "annotations": {ANNOTATION: "test index"},
        },
        indent="\t",
    ).encode()
    config_b, layer_b = by_config(blob_b, TYPE_B, "test config b"), by_type(blob_b, TYPE_B, "test layer b")
    orphan_about = {"mediaType": OCI_MANIFEST, "digest": digest_of(never_pushed), "size": len(never_pushed)}
    orphan = by_type(blob_b, TYPE_B, None, orphan_about)

    def push(body: bytes, media_type: str = OCI_MANIFEST) -> None:
        r = put_manifest(c, ns, digest_of(body), body, media_type)
        assert r.headers.get("oci-subject") == json.loads(body)["subject"]["digest"], r.headers

    upload(c, ns, EMPTY_JSON)
    upload(c, ns, blob_a)
    push(config_a)  # before the subject exists
    push(layer_a)
    push(index, OCI_INDEX)
    upload(c, ns, config)
    upload(c, ns, layer)
    put_manifest(c, ns, "tagtest0", subject)
    upload(c, ns, blob_b)
    push(config_b)
    push(layer_b)
    push(orphan)
    notes = {
        config_a: "test config a",
        layer_a: "test layer a",
        index: "test index",
        config_b: "test config b",
        layer_b: "test layer b",
    }
    return Referrers(
        subject=subject,
        expected={digest_of(m): note for m, note in notes.items()},
        type_a=sorted(digest_of(m) for m in (config_a, layer_a)),
        orphan=digest_of(orphan),
        orphan_subject=digest_of(never_pushed),
    )


def referrers_index(c: httpx.Client, ns: str, digest: str, **params: Any) -> tuple[httpx.Response, list[Any]]:
    r = c.get(f"/v2/{ns}/referrers/{digest}", params=params)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == OCI_INDEX
    body = r.json()
    assert body["schemaVersion"] == 2 and body["mediaType"] == OCI_INDEX
    return r, body["manifests"]


def test_referrers(c: httpx.Client, ns: str, registry: Registry, request: pytest.FixtureRequest) -> None:
    deviates(request, registry, "distribution 2.8 has no referrers API (no OCI-Subject, 404)")
    refs = push_referrers(c, ns)
    assert referrers_index(c, ns, DUMMY_DIGEST)[1] == []
    _, listed = referrers_index(c, ns, digest_of(refs.subject))
    assert {m["digest"]: m["annotations"][ANNOTATION] for m in listed} == refs.expected
    assert all(len(m["annotations"]) == 1 for m in listed)
    r, filtered = referrers_index(c, ns, digest_of(refs.subject), artifactType=TYPE_A)
    if r.headers.get("oci-filters-applied"):
        assert r.headers["oci-filters-applied"] == "artifactType"
        assert sorted(m["digest"] for m in filtered) == refs.type_a
    else:
        assert len(filtered) == len(refs.expected)
    _, orphans = referrers_index(c, ns, refs.orphan_subject)
    assert [m["digest"] for m in orphans] == [refs.orphan]


# ------------------------------------------------------------------------------------ content management


def test_delete_manifest_by_digest(c: httpx.Client, ns: str) -> None:
    """The manifest and every tag naming it go; other tags stay."""
    _, _, body = push_image(c, ns, "gone")
    push_image(c, ns, "kept")
    before = tags(c, ns)
    r = c.delete(f"/v2/{ns}/manifests/{digest_of(body)}")
    assert r.status_code == 202, r.text
    assert c.get(f"/v2/{ns}/manifests/{digest_of(body)}").status_code == 404
    assert c.get(f"/v2/{ns}/manifests/gone").status_code == 404
    assert tags(c, ns) == ["kept"] and len(before) == 2
    assert c.delete(f"/v2/{ns}/manifests/{digest_of(body)}").status_code == 404


def test_delete_manifest_by_tag(
    c: httpx.Client, ns: str, registry: Registry, request: pytest.FixtureRequest
) -> None:
    deviates(
        request, registry, "distribution 2.8 cannot delete a tag: it reads the reference as a digest (400)"
    )
    _, _, body = push_image(c, ns, "tagtest0")
    push_image(c, ns, "kept")
    r = c.delete(f"/v2/{ns}/manifests/tagtest0")
    assert r.status_code == 202, r.text
    assert c.get(f"/v2/{ns}/manifests/tagtest0").status_code == 404
    assert c.delete(f"/v2/{ns}/manifests/{digest_of(body)}").status_code in (202, 404)
    assert c.get(f"/v2/{ns}/manifests/{digest_of(body)}").status_code == 404
    assert tags(c, ns) == ["kept"]


def test_deleting_a_tag_keeps_its_manifest_pullable_by_digest(
    c: httpx.Client, ns: str, registry: Registry, request: pytest.FixtureRequest
) -> None:
    """As in distribution 3 and zot: a tag DELETE removes the tag only."""
    deviates(
        request, registry, "distribution 2.8 cannot delete a tag: it reads the reference as a digest (400)"
    )
    _, _, body = push_image(c, ns, "v1")
    assert c.delete(f"/v2/{ns}/manifests/v1").status_code == 202
    assert c.get(f"/v2/{ns}/manifests/v1").status_code == 404
    r = c.get(f"/v2/{ns}/manifests/{digest_of(body)}")
    assert r.status_code == 200 and r.content == body


@pytest.mark.parametrize("order", ["manifest-first", "blobs-first"])
def test_delete_blobs(c: httpx.Client, ns: str, order: str) -> None:
    """The suite's teardown, in either order (OCI_DELETE_MANIFEST_BEFORE_BLOBS): a blob DELETE answers
    202, 404 or 405 (deletion not allowed), never anything else; a deleted blob then answers 404."""
    config, layer, body = push_image(c, ns, "v1")
    blobs = [digest_of(config), digest_of(layer)]
    if order == "manifest-first":
        assert c.delete(f"/v2/{ns}/manifests/{digest_of(body)}").status_code == 202
    answers = {d: c.delete(f"/v2/{ns}/blobs/{d}").status_code for d in blobs}
    assert set(answers.values()) <= {202, 404, 405}, answers
    if order == "blobs-first":
        assert c.delete(f"/v2/{ns}/manifests/{digest_of(body)}").status_code == 202
    for d, status in answers.items():
        if status == 202:
            assert blob_status(c, ns, d) == 404


def test_delete_an_unused_blob(c: httpx.Client, ns: str) -> None:
    d = upload(c, ns, os.urandom(42))
    assert c.delete(f"/v2/{ns}/blobs/{d}").status_code == 202
    assert blob_status(c, ns, d) == 404 and c.head(f"/v2/{ns}/blobs/{d}").status_code == 404
    r = c.delete(f"/v2/{ns}/blobs/{d}")
    assert r.status_code == 404 and codes(r) == ["BLOB_UNKNOWN"]


def test_blob_delete_is_per_repository(c: httpx.Client, ns: str) -> None:
    data = os.urandom(42)
    d = upload(c, f"{ns}-a", data)
    assert upload(c, f"{ns}-b", data) == d
    assert c.delete(f"/v2/{ns}-a/blobs/{d}").status_code == 202
    assert blob_status(c, f"{ns}-a", d) == 404
    assert c.get(f"/v2/{ns}-b/blobs/{d}").content == data
