"""The Replicate face (`/v1`) through the pinned `replicate` 1.0.7 client against a real `hangar serve`
with HANGAR_AUTH=required: alice, bob and carol, and the organisation acme (alice is a member).

Versions are pushed as `cog push` does, with oras signing in with a user's token. One server serves
the module; every test uses models of its own.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import replicate
from replicate.exceptions import ReplicateError
from replicate_site import Site

from harness import blob_file, blob_files, hangar


def error_of(fn: Any, *args: Any, **kw: Any) -> ReplicateError:
    with pytest.raises(ReplicateError) as info:
        fn(*args, **kw)
    return info.value


def tags_of(site: Site, user: str, model: str) -> list[str]:
    with site.http(user) as h:
        listed = h.get(f"/v2/{model}/tags/list")
        return list(listed.json().get("tags") or []) if listed.status_code == 200 else []


def api_tags(site: Site, user: str) -> set[str]:
    with site.http(user) as h:
        return {m["name"] for m in h.get("/api/tags").json()["models"]}


def make_private(site: Site, user: str, model: str) -> None:
    with site.http(user) as h:
        r = h.patch(f"/v1/models/{model}", json={"visibility": "private"})
        assert r.status_code == 200, r.text


# ---------------------------------------------------------------------------------------------- basics


def test_account_hardware_and_authentication(site: Site) -> None:
    alice = site.client("alice")
    me = alice.accounts.current()
    assert (me.type, me.username, me.name) == ("user", "alice", "Alice")
    assert "cpu" in {h.sku for h in alice.hardware.list()}
    with site.http(None) as h:
        r = h.get("/v1/models")
        assert r.status_code == 401
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["title"] == "Unauthenticated" and r.json()["status"] == 401
    bad = replicate.Client(api_token="hgr_aaaaaaaaaa_" + "A" * 40, base_url=site.server.url)
    assert error_of(bad.models.list).status == 401
    with site.http("alice") as h:  # older clients send `Token`
        token = site.tokens["alice"]
        assert h.get("/v1/account", headers={"Authorization": f"Token {token}"}).json()["username"] == "alice"
        assert h.get("/v1/nothing/here").json()["status"] == 404


def test_create_rules_and_problem_details(site: Site) -> None:
    alice, bob = site.client("alice"), site.client("bob")
    m = alice.models.create(
        "alice", "create-rules", visibility="private", hardware="cpu", description="d", paper_url="https://p"
    )
    assert (m.owner, m.name, m.visibility, m.description, m.paper_url) == (
        "alice",
        "create-rules",
        "private",
        "d",
        "https://p",
    )
    assert m.latest_version is None and m.run_count == 0
    org = alice.models.create("acme", "org-model", visibility="public", hardware="gpu-t4")
    assert org.owner == "acme"
    e = error_of(bob.models.create, "acme", "bobs", visibility="public", hardware="cpu")
    assert e.status == 403 and "acme" in (e.detail or "")
    e = error_of(bob.models.create, "alice", "bobs", visibility="public", hardware="cpu")
    assert e.status == 403
    e = error_of(alice.models.create, "alice", "create-rules", visibility="private", hardware="cpu")
    assert e.status == 409 and "already exists" in (e.detail or "")
    e = error_of(alice.models.create, "alice", "-bad-", visibility="private", hardware="cpu")
    assert e.status == 400 and e.title == "Validation failed"
    e = error_of(alice.models.create, "alice", "nohw", visibility="private", hardware="tpu")
    assert e.status == 400 and "hardware" in (e.detail or "")
    with site.http("alice") as h:
        r = h.post("/v1/models", content=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["title"] == "Validation failed"
        r = h.post("/v1/models", json=[1, 2])
        assert r.status_code == 400
        r = h.get("/v1/models?cursor=@@@")
        assert r.status_code == 400 and r.json()["status"] == 400


def test_list_paginate_search_and_get_only_what_one_may_see(site: Site) -> None:
    carol, bob = site.client("carol"), site.client("bob")
    public = [f"page-pub-{i:02d}" for i in range(27)]
    for name in public:
        carol.models.create("carol", name, visibility="public", hardware="cpu", description=f"about {name}")
    carol.models.create("carol", "page-secret", visibility="private", hardware="cpu", description="hidden")
    first = bob.models.list()
    assert len(first.results) == 25 and first.next is not None and first.next.startswith("http://")
    assert first.results[0].name == "page-secret" or first.results[0].name == public[-1]
    seen = [m.name for page in replicate.paginate(bob.models.list) for m in page]
    assert [n for n in seen if n.startswith("page-pub-")] == list(reversed(public))  # newest first
    assert "page-secret" not in seen
    mine = [m.name for page in replicate.paginate(carol.models.list) for m in page]
    assert "page-secret" in mine and mine.index("page-secret") < mine.index(public[-1])
    found = bob.models.search("page-pub-1")
    assert {m.name for m in found.results} == {f"page-pub-{i}" for i in range(10, 20)}
    assert carol.models.search("hidden").results[0].name == "page-secret"
    assert bob.models.search("hidden").results == []
    assert bob.models.get("carol/page-pub-03").description == "about page-pub-03"
    e = error_of(bob.models.get, "carol/page-secret")
    assert e.status == 404
    assert error_of(bob.models.get, "carol/never-made").status == 404


def test_versions_come_from_pushed_manifests_and_are_tags_everywhere(site: Site) -> None:
    alice = site.client("alice")
    alice.models.create("alice", "pushed", visibility="private", hardware="cpu")
    schema = {"openapi": "3.0.2", "components": {"schemas": {"Input": {"type": "object"}, "Output": {}}}}
    labels = {"org.cogmodel.cog_version": "0.13.7", "org.cogmodel.openapi_schema": json.dumps(schema)}
    v1 = site.push("alice", "alice/pushed", "one", labels=labels)
    v2 = site.push("alice", "alice/pushed", "two")  # `latest` moves; v1 stays a version
    model = alice.models.get("alice/pushed")
    assert model.latest_version is not None and model.latest_version.id == v2
    listed = model.versions.list()
    assert [v.id for v in listed.results] == [v2, v1]
    one = model.versions.get(v1)
    assert (one.cog_version, one.openapi_schema) == ("0.13.7", schema)
    two = model.versions.get(v2)
    assert two.cog_version == "0.9.0" and "Input" in two.openapi_schema["components"]["schemas"]
    assert {f"alice/pushed:{v1}", f"alice/pushed:{v2}", "alice/pushed:latest"} <= api_tags(site, "alice")
    assert set(tags_of(site, "alice", "alice/pushed")) == {v1, v2, "latest"}
    assert error_of(model.versions.get, "0" * 64).status == 404
    assert error_of(site.client("bob").models.get, "alice/pushed").status == 404


# ------------------------------------------------------------------------------------------- deletion rules


def test_model_deletion_rules(site: Site) -> None:
    alice, bob = site.client("alice"), site.client("bob")
    alice.models.create("alice", "del-private", visibility="private", hardware="cpu")
    alice.models.create("alice", "del-public", visibility="public", hardware="cpu")
    assert error_of(bob.models.delete, "alice/del-private").status == 404
    e = error_of(bob.models.delete, "alice/del-public")
    assert e.status == 403 and "bob does not own" in (e.detail or "")
    e = error_of(alice.models.delete, "alice/del-public")
    assert e.status == 409 and "public" in (e.detail or "")
    v1 = site.push("alice", "alice/del-private", "a")
    v2 = site.push("alice", "alice/del-private", "b")
    e = error_of(alice.models.delete, "alice/del-private")
    assert e.status == 409
    assert e.detail == f"Cannot delete model alice/del-private: 2 versions remain: {v2[:12]}…, {v1[:12]}…"
    model = alice.models.get("alice/del-private")
    assert model.versions.delete(v1) is True and model.versions.delete(v2) is True
    assert alice.models.delete("alice/del-private") is True
    assert error_of(alice.models.get, "alice/del-private").status == 404
    again = alice.models.create("alice", "del-private", visibility="private", hardware="cpu")
    assert again.latest_version is None  # the name is free again (Replicate keeps it: #323)
    # an organisation's model: its members may delete it, others do not even see it
    alice.models.create("acme", "org-empty", visibility="private", hardware="cpu")
    assert error_of(bob.models.delete, "acme/org-empty").status == 404
    assert alice.models.delete("acme/org-empty") is True


def test_version_deletion_rules(site: Site) -> None:
    alice, bob = site.client("alice"), site.client("bob")
    alice.models.create("alice", "vrules", visibility="public", hardware="cpu")
    alice.models.create("alice", "vrules-dest", visibility="private", hardware="cpu")
    others, own, base, deployed, later = (site.push("alice", "alice/vrules", s) for s in "abcde")
    model = alice.models.get("alice/vrules")
    # a public model's versions stay; bob may not delete them either
    e = error_of(model.versions.delete, own)
    assert e.status == 409 and "public" in (e.detail or "")
    bobs_view = bob.models.get("alice/vrules")
    assert error_of(bobs_view.versions.delete, own).status == 403
    # bob runs a prediction while the model is public; alice's own predictions do not count
    bobs = bob.predictions.create(version=others, input={"prompt": "hi"})
    assert (bobs.status, bobs.version) == ("starting", others)
    mine = alice.predictions.create(version=f"alice/vrules:{own}", input={})
    assert mine.status == "starting"
    training = alice.trainings.create(
        model="alice/vrules", version=base, input={"steps": 1}, destination="alice/vrules-dest"
    )
    assert training.status == "starting" and training.destination == "alice/vrules-dest"
    dep = alice.deployments.create(
        name="prod", model="alice/vrules", version=deployed, hardware="cpu", min_instances=0, max_instances=1
    )
    assert dep.current_release is not None and dep.current_release.version == deployed
    make_private(site, "alice", "alice/vrules")
    assert error_of(bob.models.get, "alice/vrules").status == 404
    assert error_of(site.client("bob").models.delete, "alice/vrules").status == 404
    model = alice.models.get("alice/vrules")
    e = error_of(model.versions.delete, others)
    assert e.status == 409 and "bob has run predictions" in (e.detail or ""), e.detail
    assert model.versions.delete(own) is True  # only the owner's predictions
    e = error_of(model.versions.delete, base)
    assert e.status == 409 and f"training {training.id}" in (e.detail or "")
    e = error_of(model.versions.delete, deployed)
    assert e.status == 409 and "used by deployment alice/prod" in (e.detail or "")
    # a model with versions left names every one of them
    e = error_of(alice.models.delete, "alice/vrules")
    assert e.status == 409 and "4 versions remain" in (e.detail or "")
    # each blocker gone, each delete goes
    with site.http("bob") as h:
        assert h.delete(f"/v1/predictions/{bobs.id}").status_code == 204
    assert model.versions.delete(others) is True
    alice.trainings.cancel(training.id)
    assert alice.trainings.get(training.id).status == "canceled"
    assert model.versions.delete(base) is True
    updated = alice.deployments.update("alice", "prod", version=later)
    assert updated.current_release is not None and updated.current_release.number == 2
    assert model.versions.delete(deployed) is True
    e = error_of(model.versions.delete, later)
    assert e.status == 409 and "release 2" in (e.detail or "")
    assert alice.deployments.delete("alice", "prod") is True
    assert model.versions.delete(later) is True
    assert alice.models.delete("alice/vrules") is True


def test_blockers_are_the_same_in_hangar_previews(site: Site, tmp_path: Any, start_server: Any) -> None:
    alice = site.client("alice")
    alice.models.create("alice", "previewed", visibility="private", hardware="cpu")
    v = site.push("alice", "alice/previewed", "p")
    alice.deployments.create(
        name="preview-dep",
        model="alice/previewed",
        version=v,
        hardware="cpu",
        min_instances=0,
        max_instances=1,
    )
    name = f"alice/previewed:{v}"
    with site.http("alice") as h:
        r = h.post("/api/hangar/delete", json={"models": [name], "dry_run": True})
        result = r.json()["results"][0]
        assert result["status"] == "refused" and "used by deployment alice/preview-dep" in result["error"]
        r = h.post("/api/hangar/delete", json={"models": ["alice/previewed:latest"], "dry_run": True})
        assert r.json()["results"][0]["status"] == "would_delete"  # only a tag: the version stays
    local = start_server(site.home, env={"HANGAR_TRASH_RETENTION": "1h"})  # the CLI signs in as admin
    proc = hangar("rm", "--dry-run", name, home=site.home, host=local.host)
    assert proc.returncode == 1 and "used by deployment alice/preview-dep" in proc.stdout + proc.stderr
    alice.deployments.delete("alice", "preview-dep")
    proc = hangar("rm", "--dry-run", name, home=site.home, host=local.host)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_deleted_version_leaves_every_face_and_comes_back_from_the_trash(site: Site) -> None:
    alice = site.client("alice")
    alice.models.create("alice", "trashed", visibility="private", hardware="cpu")
    keep = site.push("alice", "alice/trashed", "keep", shared=b"shared layer\n" * 100)
    gone = site.push("alice", "alice/trashed", "gone", shared=b"shared layer\n" * 100)
    with site.http("alice") as h:
        layers = [
            d["digest"]
            for d in h.get(
                f"/v2/alice/trashed/manifests/sha256:{gone}",
                headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
            ).json()["layers"]
        ]
    assert len(layers) == 2
    model = alice.models.get("alice/trashed")
    assert model.versions.delete(gone) is True
    assert [v.id for v in model.versions.list().results] == [keep]
    assert f"alice/trashed:{gone}" not in api_tags(site, "alice")
    assert gone not in tags_of(site, "alice", "alice/trashed")
    with site.http("alice") as h:
        entries = h.get("/api/hangar/trash").json()["entries"]
        kept = {e["tag"] for e in entries if e["manifest_digest"] == f"sha256:{gone}"}
        assert kept == {gone, "latest"}  # the version and the tag that pointed at it, as one delete
        entry = next(e for e in entries if e["tag"] == gone)
        assert entry["face"] == "replicate"
        r = h.post("/api/hangar/trash/restore", json={"model": str(entry["id"])})
        assert r.status_code == 200, r.text
    assert [v.id for v in alice.models.get("alice/trashed").versions.list().results] == [gone, keep]
    assert f"alice/trashed:{gone}" in api_tags(site, "alice")
    # gone again, and the trash emptied: its own layer is reclaimed, the shared one stays
    assert alice.models.get("alice/trashed").versions.delete(gone) is True
    with site.http("alice") as h:
        assert h.post("/api/hangar/trash/empty", json={}).status_code == 200
        audit = h.get("/api/hangar/audit?since=1h").json()["entries"]
    on_disk = blob_files(site.home)
    still_used = _layers_of(site, keep)
    own_layers = [d for d in layers if d not in still_used]
    assert len(own_layers) == 1 and blob_file(own_layers[0]) not in on_disk  # reclaimed
    assert all(blob_file(d) in on_disk for d in still_used)  # the shared layer stays
    assert any(a["face"] == "replicate" and a["action"] == "delete" and a["outcome"] == "ok" for a in audit)


def _layers_of(site: Site, version: str) -> list[str]:
    with site.http("alice") as h:
        doc = h.get(
            f"/v2/alice/trashed/manifests/sha256:{version}",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        ).json()
    return [d["digest"] for d in doc["layers"]]


# ---------------------------------------------------------------------------------------------- runs


def test_predictions_are_recorded_and_a_runner_reports_them(site: Site) -> None:
    alice, bob = site.client("alice"), site.client("bob")
    alice.models.create("alice", "runs", visibility="public", hardware="cpu")
    v = site.push("alice", "alice/runs", "r")
    p = bob.models.predictions.create("alice/runs", input={"x": 1})
    assert (p.status, p.version, p.model) == ("starting", v, "alice/runs")
    assert bob.predictions.get(p.id).input == {"x": 1}
    assert p.id in {x.id for x in bob.predictions.list().results}
    assert error_of(site.client("carol").predictions.get, p.id).status == 404
    e = error_of(bob.predictions.create, version="f" * 64, input={})
    assert e.status == 422 and e.title == "Invalid version or not permitted"
    assert alice.models.get("alice/runs").run_count == 1
    with site.http("runner") as h:
        pending = {r["id"] for r in h.get("/v1/runner/pending").json()["results"]}
        assert p.id in pending
        r = h.post(f"/v1/predictions/{p.id}/report", json={"status": "processing", "logs": "loading\n"})
        assert r.status_code == 200 and r.json()["started_at"] is not None
        r = h.post(
            f"/v1/predictions/{p.id}/report",
            json={"status": "succeeded", "output": ["out.png"], "metrics": {"predict_time": 1.5}},
        )
        assert r.json()["status"] == "succeeded"
        assert h.post(f"/v1/predictions/{p.id}/report", json={"status": "failed"}).status_code == 409
    with site.http("carol") as h:
        assert h.post(f"/v1/predictions/{p.id}/report", json={"status": "failed"}).status_code == 404
    with site.http("bob") as h:  # the creator sees the result but may not report
        assert h.post(f"/v1/predictions/{p.id}/report", json={"status": "failed"}).status_code == 403
    done = bob.predictions.get(p.id)
    assert (done.status, done.output, done.logs, done.metrics) == (
        "succeeded",
        ["out.png"],
        "loading\n",
        {"predict_time": 1.5},
    )
    q = bob.predictions.create(version=f"alice/runs:{v}", input={})
    assert bob.predictions.cancel(q.id).status == "canceled"


def test_trainings_give_lineage_and_deployments_take_predictions(site: Site) -> None:
    alice = site.client("alice")
    alice.models.create("alice", "base-m", visibility="private", hardware="cpu")
    alice.models.create("alice", "tuned", visibility="private", hardware="cpu")
    base = site.push("alice", "alice/base-m", "base")
    e = error_of(
        alice.trainings.create, model="alice/base-m", version=base, input={}, destination="alice/nowhere"
    )
    assert e.status == 404 and e.detail == "The specified training destination does not exist"
    e = error_of(
        site.client("bob").trainings.create,
        model="alice/base-m",
        version=base,
        input={},
        destination="bob/x",
    )
    assert e.status == 404
    tr = alice.trainings.create(
        model="alice/base-m", version=base, input={"lr": 1}, destination="alice/tuned"
    )
    assert tr.id in {x.id for x in alice.trainings.list().results}
    tuned = site.push("alice", "alice/tuned", "tuned")
    with site.http("alice") as h:
        version = h.get(f"/v1/models/alice/tuned/versions/{tuned}").json()
        assert version["base_version"] == f"alice/base-m:{base}" and version["training"] == tr.id
        r = h.post(f"/v1/trainings/{tr.id}/report", json={"status": "succeeded"})
        assert r.status_code == 200
    got = alice.trainings.get(tr.id)
    assert got.status == "succeeded" and got.output == {"version": f"alice/tuned:{tuned}", "weights": None}
    e = error_of(alice.models.get("alice/base-m").versions.delete, base)
    assert e.status == 409 and "training" in (e.detail or "")
    dep = alice.deployments.create(
        name="tuned-dep",
        model="alice/tuned",
        version=tuned,
        hardware="gpu-t4",
        min_instances=0,
        max_instances=2,
    )
    assert alice.deployments.get("alice/tuned-dep").current_release.configuration.hardware == "gpu-t4"
    assert "tuned-dep" in {d.name for d in alice.deployments.list().results}
    p = alice.deployments.predictions.create("alice/tuned-dep", input={"q": 1})
    assert p.version == tuned and p.status == "starting"
    assert error_of(site.client("bob").deployments.get, "alice/tuned-dep").status == 404
    assert dep.owner == "alice"
    assert alice.deployments.delete("alice", "tuned-dep") is True
