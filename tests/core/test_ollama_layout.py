"""Adopting Ollama models directories and writing them back: round trips, refusals, traversal."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from modelhangar.core.catalog import schema as t
from modelhangar.core.config import load_settings
from modelhangar.core.errors import DigestMismatch
from modelhangar.core.gc import collect, fsck
from modelhangar.core.ollama_layout import ImportReport, export_ollama, import_ollama
from modelhangar.core.store import Store

CONFIG_MT = "application/vnd.docker.container.image.v1+json"
MANIFEST_MT = "application/vnd.docker.distribution.manifest.v2+json"
MODEL_MT = "application/vnd.ollama.image.model"
TEMPLATE_MT = "application/vnd.ollama.image.template"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def put_blob(
    models: Path, data: bytes, media_type: str = MODEL_MT, *, content: bytes | None = None
) -> dict[str, Any]:
    """Write `content` (default: `data`) under the name of `data`'s digest; return a descriptor."""
    blobs = models / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    d = digest_of(data)
    (blobs / d.replace(":", "-")).write_bytes(data if content is None else content)
    return {"mediaType": media_type, "digest": d, "size": len(data)}


def config_blob(models: Path, family: str) -> dict[str, Any]:
    doc = {"model_format": "gguf", "model_family": family, "model_type": "1B", "file_type": "Q4_0"}
    return put_blob(models, json.dumps(doc).encode(), CONFIG_MT)


def put_manifest(models: Path, path: str, config: dict[str, Any], layers: list[dict[str, Any]]) -> bytes:
    """Write a manifest as Ollama's WriteManifest does (compact JSON and a newline)."""
    doc = {"schemaVersion": 2, "mediaType": MANIFEST_MT, "config": config, "layers": layers}
    raw = (json.dumps(doc, separators=(",", ":")) + "\n").encode()
    target = models / "manifests" / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(raw)
    return raw


def tree(root: Path) -> dict[str, bytes]:
    """Every regular file under root (symlinks not followed), by relative path."""
    out: dict[str, bytes] = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = Path(dirpath, f)
            if not p.is_symlink():
                out[p.relative_to(root).as_posix()] = p.read_bytes()
    return out


def store_blob_files(store: Store) -> set[str]:
    return {p.name for p in store.settings.blobs_dir.iterdir()}


def hardlinks_work(tmp: Path) -> bool:
    (tmp / "probe").write_bytes(b"x")
    try:
        os.link(tmp / "probe", tmp / "probe2")
    except OSError:
        return False
    return True


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    env = {
        "HANGAR_HOME": str(tmp_path / "hangar"),
        "HANGAR_GC_GRACE": "0",
        "HANGAR_REUSE_FUSE": "0",
        "HANGAR_TRASH_RETENTION": "0",
    }
    s = Store(load_settings(env))
    yield s
    s.close()


@pytest.fixture
def ollama(tmp_path: Path) -> Path:
    """Three models: two share their weights layer; one lives on a host with a port."""
    models = tmp_path / "ollama"
    weights = put_blob(models, b"GGUF shared weights" * 100)
    template = put_blob(models, b"{{ .Prompt }}", TEMPLATE_MT)
    llama = config_blob(models, "llama")
    put_manifest(models, "registry.ollama.ai/library/llama3.2/latest", llama, [weights, template])
    put_manifest(models, "registry.ollama.ai/user/tiny/q4", config_blob(models, "tiny"), [weights])
    other = put_blob(models, b"GGUF other weights")
    put_manifest(models, "localhost:5000/ns/m/tag", config_blob(models, "m"), [other])
    return models


def expected_tags(models: Path) -> dict[tuple[str, str], str]:
    out = {}
    for rel, data in tree(models / "manifests").items():
        host, ns, model, tag = rel.split("/")
        out[(f"{host}/{ns}/{model}", tag)] = digest_of(data)
    return out


def test_import_then_export_is_byte_identical(store: Store, ollama: Path, tmp_path: Path) -> None:
    report = import_ollama(store, ollama)

    assert report.skipped == []
    assert sorted(report.models) == ["llama3.2:latest", "localhost:5000/ns/m:tag", "user/tiny:q4"]
    assert report.blobs_linked + report.blobs_copied == 6  # 3 configs, shared weights, template, other
    assert report.bytes == sum(len(b) for b in tree(ollama / "blobs").values())
    tags = {(r.repository, r.tag): r.manifest_digest for r in store.list_tags()}
    assert tags == expected_tags(ollama)
    assert fsck(store, verify=True) == []

    out = tmp_path / "exported"
    exported = export_ollama(store, out)

    assert exported.skipped == []
    assert sorted(exported.models) == sorted(report.models)
    assert tree(out) == tree(ollama)
    assert expected_tags(out) == tags


def test_import_hard_links_blobs_on_one_filesystem(store: Store, ollama: Path, tmp_path: Path) -> None:
    if not hardlinks_work(tmp_path):
        pytest.skip("no hard links on this filesystem")
    report = import_ollama(store, ollama)
    assert (report.blobs_linked, report.blobs_copied) == (6, 0)
    for src in (ollama / "blobs").iterdir():
        assert (store.settings.blobs_dir / src.name).stat().st_ino == src.stat().st_ino


def test_import_twice_reuses_blobs_and_keeps_digests(store: Store, ollama: Path) -> None:
    import_ollama(store, ollama)
    before = {(r.repository, r.tag): r.manifest_digest for r in store.list_tags()}

    again = import_ollama(store, ollama)

    assert (again.blobs_linked, again.blobs_copied, again.blobs_present, again.bytes) == (0, 0, 6, 0)
    assert len(again.models) == 3
    assert {(r.repository, r.tag): r.manifest_digest for r in store.list_tags()} == before


@pytest.fixture
def other_fs(tmp_path: Path) -> Iterator[Path]:
    """A directory on another filesystem than tmp_path (where hard links cannot reach), if any."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev or not os.access(shm, os.W_OK):
        pytest.skip("no second writable filesystem")
    d = Path(tempfile.mkdtemp(dir=shm, prefix="hangar-test-"))
    yield d
    shutil.rmtree(d)


def test_round_trip_across_filesystems_copies(store: Store, tmp_path: Path, other_fs: Path) -> None:
    source = other_fs / "ollama"
    layer = put_blob(source, b"weights on tmpfs")
    put_manifest(source, "registry.ollama.ai/library/far/latest", config_blob(source, "far"), [layer])

    report = import_ollama(store, source)

    assert (report.models, report.blobs_linked, report.blobs_copied) == (["far:latest"], 0, 2)
    assert fsck(store, verify=True) == []
    exported = export_ollama(store, other_fs / "out")
    assert (exported.blobs_linked, exported.blobs_copied) == (0, 2)
    assert tree(other_fs / "out") == tree(source)


def test_progress_counts_bytes_of_every_distinct_blob(store: Store, ollama: Path, tmp_path: Path) -> None:
    total = sum(p.stat().st_size for p in (ollama / "blobs").iterdir())  # each blob once, shared or not
    for run in (
        lambda progress: import_ollama(store, ollama, progress=progress),
        lambda progress: export_ollama(store, tmp_path / "out", progress=progress),
    ):
        calls: list[tuple[str, int, int]] = []
        run(lambda *call, calls=calls: calls.append(call))
        assert {t for _, _, t in calls} == {total}
        done = [d for _, d, _ in calls]
        assert done == sorted(done) and done[-1] == total
        assert {n for n, _, _ in calls} == {"llama3.2:latest", "localhost:5000/ns/m:tag", "user/tiny:q4"}


def test_corrupt_blob_is_refused_and_nothing_partial_stays(store: Store, ollama: Path) -> None:
    bad = put_blob(ollama, b"the real weights", content=b"something else entirely")
    config = config_blob(ollama, "bad")
    put_manifest(ollama, "registry.ollama.ai/library/bad/latest", config, [bad])

    report = import_ollama(store, ollama)

    assert len(report.models) == 3
    [skip] = report.skipped
    assert skip.subject == "manifests/registry.ollama.ai/library/bad/latest"
    assert "corrupt blob " + bad["digest"] in skip.reason
    assert store.get_tag("registry.ollama.ai/library/bad", "latest") is None
    assert store.blob_size(bad["digest"]) is None
    assert bad["digest"].replace(":", "-") not in store_blob_files(store)
    collect(store)
    assert fsck(store, verify=True) == []
    # The config blob imported before the layer failed was reclaimed.
    assert config["digest"].replace(":", "-") not in store_blob_files(store)


def test_manifest_with_missing_blob_is_skipped(store: Store, ollama: Path) -> None:
    config = config_blob(ollama, "ghost")
    missing: dict[str, Any] = {"mediaType": MODEL_MT, "digest": digest_of(b"misnamed"), "size": 8}
    put_manifest(ollama, "registry.ollama.ai/library/ghost/latest", config, [missing])
    (ollama / "blobs" / missing["digest"]).write_bytes(b"misnamed")  # `sha256:<hex>`: not Ollama's name

    report = import_ollama(store, ollama)

    assert [(s.subject, s.reason) for s in report.skipped] == [
        ("blobs/" + missing["digest"], "not a blob file name (sha256-<64 lowercase hex>)"),
        ("manifests/registry.ollama.ai/library/ghost/latest", "missing blob " + missing["digest"]),
    ]
    assert store.get_tag("registry.ollama.ai/library/ghost", "latest") is None
    collect(store)
    assert fsck(store) == []
    assert config["digest"].replace(":", "-") not in store_blob_files(store)


def test_names_matching_case_insensitively_import_once(store: Store, tmp_path: Path) -> None:
    models = tmp_path / "ollama"
    layer = put_blob(models, b"weights")
    put_manifest(models, "registry.ollama.ai/library/Foo/latest", config_blob(models, "foo"), [layer])
    put_manifest(models, "registry.ollama.ai/library/foo/latest", config_blob(models, "foo2"), [layer])

    report = import_ollama(store, models)

    assert report.models == ["Foo:latest"]
    [skip] = report.skipped
    assert skip.subject == "manifests/registry.ollama.ai/library/foo/latest"
    assert "case-insensitively" in skip.reason


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {rel: (data, (root / rel).stat().st_mtime_ns) for rel, data in tree(root).items()}


def test_import_traversal_attempts_touch_nothing_outside(store: Store, tmp_path: Path) -> None:
    models = tmp_path / "ollama"
    outside = tmp_path / "outside"
    # A model that exists only outside the models directory, reachable through symlinks.
    outside_layer = put_blob(outside, b"outside weights")
    put_manifest(outside, "h/ns/m/tag", config_blob(outside, "outside"), [outside_layer])
    before = snapshot(outside)
    (models / "manifests").mkdir(parents=True)
    (models / "blobs").mkdir()
    os.symlink(outside / "manifests" / "h", models / "manifests" / "evil")  # a host dir pointing out
    tag_dir = models / "manifests" / "registry.ollama.ai" / "library" / "m"
    tag_dir.mkdir(parents=True)
    os.symlink(outside / "manifests/h/ns/m/tag", tag_dir / "linked")  # a manifest pointing out
    for name in ("...", "..x"):  # dot names as parts (`..` itself cannot be a directory entry)
        put_manifest(models, f"registry.ollama.ai/{name}/m/latest", config_blob(models, name), [])
    # A blob named after /etc/passwd's digest, symlinked to it, and a manifest naming it.
    passwd = Path("/etc/passwd")
    passwd_digest = digest_of(passwd.read_bytes() if passwd.is_file() else b"root:x:0:0::/root:/bin/sh\n")
    os.symlink(passwd, models / "blobs" / passwd_digest.replace(":", "-"))
    config = config_blob(models, "p")
    put_manifest(
        models,
        "registry.ollama.ai/library/passwd/latest",
        config,
        [{"mediaType": MODEL_MT, "digest": passwd_digest, "size": 1}],
    )
    # A manifest whose digest is a path.
    put_manifest(
        models,
        "registry.ollama.ai/library/dots/latest",
        config,
        [{"mediaType": MODEL_MT, "digest": "../../etc/passwd", "size": 1}],
    )

    report = import_ollama(store, models)

    reasons = {s.subject: s.reason for s in report.skipped}
    assert report.models == []
    assert reasons["manifests/evil"] == "symlink (not followed)"
    assert reasons["manifests/registry.ollama.ai/library/m/linked"] == "symlink (not followed)"
    assert reasons["manifests/registry.ollama.ai/..."].startswith("invalid namespace")
    assert reasons["manifests/registry.ollama.ai/..x"].startswith("invalid namespace")
    assert reasons["blobs/" + passwd_digest.replace(":", "-")] == "symlink (not followed)"
    assert reasons["manifests/registry.ollama.ai/library/passwd/latest"] == "missing blob " + passwd_digest
    assert reasons["manifests/registry.ollama.ai/library/dots/latest"].startswith("invalid manifest")
    assert store.list_tags() == []
    assert store.blob_size(passwd_digest) is None
    assert store.blob_size(outside_layer["digest"]) is None
    assert snapshot(outside) == before
    collect(store)
    assert fsck(store) == []


def test_import_blob_file_refuses_mismatch_and_symlinks(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "file"
    src.write_bytes(b"content")
    with pytest.raises(DigestMismatch):
        store.import_blob_file(src, digest_of(b"other"))
    assert store.blob_size(digest_of(b"other")) is None
    assert store_blob_files(store) == set()
    assert list(store.blobs.tmp_dir.iterdir()) == []
    link = tmp_path / "link"
    os.symlink(src, link)
    with pytest.raises(OSError):
        store.import_blob_file(link, digest_of(b"content"))
    assert store_blob_files(store) == set()

    commit = store.import_blob_file(src, digest_of(b"content"))

    assert (commit.digest, commit.size, commit.created) == (digest_of(b"content"), 7, True)
    assert store.read_blob(commit.digest) == b"content"
    assert store.import_blob_file(src, commit.digest).created is False
    assert src.read_bytes() == b"content"


def test_export_selected_models(store: Store, ollama: Path, tmp_path: Path) -> None:
    import_ollama(store, ollama)
    out = tmp_path / "exported"

    report = export_ollama(store, out, models=["user/tiny:Q4", "nope", "bad name!"])

    assert report.models == ["user/tiny:q4"]
    assert sorted((s.subject, s.reason.split(" (")[0]) for s in report.skipped) == [
        ("bad name!", "invalid model name"),
        ("nope", "not found"),
    ]
    assert set(tree(out / "manifests")) == {"registry.ollama.ai/user/tiny/q4"}
    assert len(tree(out / "blobs")) == 2


def test_export_again_skips_identical_blobs_and_repairs_damaged_ones(
    store: Store, ollama: Path, tmp_path: Path
) -> None:
    import_ollama(store, ollama)
    out = tmp_path / "exported"
    export_ollama(store, out)
    victim = next((out / "blobs").iterdir())
    victim.unlink()
    victim.write_bytes(b"damaged")

    again = export_ollama(store, out)

    assert (again.blobs_existing, again.blobs_linked + again.blobs_copied) == (5, 1)
    assert tree(out) == tree(ollama)


def test_export_refuses_non_ollama_names_and_symlinked_dirs(store: Store, tmp_path: Path) -> None:
    config = store.put_blob_bytes(json.dumps({"model_family": "x"}).encode())
    layer = store.put_blob_bytes(b"weights")
    doc = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MT,
        "config": {"mediaType": CONFIG_MT, "digest": config.digest, "size": config.size},
        "layers": [{"mediaType": MODEL_MT, "digest": layer.digest, "size": layer.size}],
    }
    raw = json.dumps(doc).encode()
    store.put_manifest("registry.ollama.ai/../../evil", "latest", raw)
    store.put_manifest("registry.ollama.ai/library/ok", "latest", raw)
    store.put_manifest("localhost:5000/ns/m", "tag", raw)
    out = tmp_path / "exported"
    outside = tmp_path / "outside"
    outside.mkdir()
    (out / "manifests").mkdir(parents=True)
    os.symlink(outside, out / "manifests" / "registry.ollama.ai")

    report = export_ollama(store, out)

    assert report.models == ["localhost:5000/ns/m:tag"]
    reasons = {s.subject: s.reason for s in report.skipped}
    assert reasons["registry.ollama.ai/../../evil:latest"].startswith("not an Ollama model name")
    assert "symlinks are not followed" in reasons["registry.ollama.ai/library/ok:latest"]
    assert list(outside.iterdir()) == []
    assert set(tree(out / "manifests")) == {"localhost:5000/ns/m/tag"}
    assert not [d for d, _, _ in os.walk(tmp_path) if Path(d).name == "evil"]


def test_import_reports_serialise(store: Store, ollama: Path) -> None:
    report = import_ollama(store, ollama)
    assert isinstance(report, ImportReport)
    assert json.loads(json.dumps(report.to_dict()))["models"] == report.models


def test_import_onto_a_name_held_with_another_manifest_keeps_it_unless_overwrite(
    store: Store, ollama: Path, tmp_path: Path
) -> None:
    import_ollama(store, ollama)
    before = {(r.repository, r.tag): r.manifest_digest for r in store.list_tags()}
    # The Ollama directory now holds another llama3.2:latest.
    changed = put_blob(ollama, b"GGUF retrained weights")
    put_manifest(
        ollama, "registry.ollama.ai/library/llama3.2/latest", config_blob(ollama, "llama"), [changed]
    )
    kept = import_ollama(store, ollama)
    assert [(k.subject, "--overwrite" in k.reason) for k in kept.kept] == [("llama3.2:latest", True)]
    assert "llama3.2:latest" not in kept.models and not kept.skipped
    assert {(r.repository, r.tag): r.manifest_digest for r in store.list_tags()} == before
    replaced = import_ollama(store, ollama, overwrite=True)
    assert "llama3.2:latest" in replaced.models and replaced.kept == []
    now_tags = {(r.repository, r.tag): r.manifest_digest for r in store.list_tags()}
    assert (
        now_tags[("registry.ollama.ai/library/llama3.2", "latest")]
        == expected_tags(ollama)[("registry.ollama.ai/library/llama3.2", "latest")]
    )
    with store.catalog.read() as conn:
        [row] = [r for r in conn.execute(sa.select(t.audit)) if r.action == "overwrite"]
    assert row.outcome == "ok"
