"""Does the OpenSearch face's safe delete stay cheap as the store grows? (issue 13)

Two stores, of 100 and of 10,000 ML Commons models (one group each), both with 10,000 ingest
pipelines, search pipelines and agents spread over the models (and a few on the model under test);
a real `hangar serve` on each, with `plugins.ml_commons.safe_delete_model` on. Timed, median of 7:

* the safe-delete check: `DELETE /_plugins/_ml/models/<id>` of a model pipelines and agents use
  (409 naming them; the model stays, so every round checks the same thing);
* `POST /_plugins/_ml/models/_search` with `{"query": {"match_all": {}}, "size": 10}`.

Prints the medians and the ratio large/small; the target is at most 2 (the dependents are indexed:
no delete walks every pipeline, as ML Commons' does).

The model under test and its users go through the core (`core/ml_models.py`), as the face stores
them; the filler models, pipelines and agents are inserted in bulk as the same rows.

    python bench/opensearch_scaling.py [--sizes 100,10000] [--users 10000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from modelhangar.core import ml_models as ml
from modelhangar.core.actors import Actor
from modelhangar.core.catalog import schema as t
from modelhangar.core.config import load_settings
from modelhangar.core.manifests import OCI_MANIFEST
from modelhangar.core.store import PRESENT, Store
from peers import start_hangar, stop

TARGET_RATIO = 2.0
ROUNDS = 7


def populate(home: Path, n: int, users: int) -> str:
    """A store of n models and `users` pipelines and agents of each kind; returns the model under test."""
    store = Store(load_settings({"HANGAR_HOME": str(home)}))
    admin = Actor(face="opensearch")
    try:
        ml.put_cluster_settings(store, {"persistent": {ml.SAFE_DELETE: True}})
        meta = ml.register_meta(
            store,
            admin,
            {
                "name": "under-test",
                "version": "1",
                "model_format": "TORCH_SCRIPT",
                "total_chunks": 1,
                "model_config": {"model_type": "bert", "embedding_dimension": 8, "framework_type": "x"},
            },
        )
        target = str(meta["model_id"])
        ml.upload_chunk(store, admin, target, "0", b"the model under test")
        for i in range(3):
            ml.put_pipeline(
                store,
                admin,
                "ingest",
                f"uses-{i}",
                {"processors": [{"text_embedding": {"model_id": target}}]},
            )
            ml.put_pipeline(
                store,
                admin,
                "search",
                f"uses-{i}",
                {"request_processors": [{"neural_query_enricher": {"default_model_id": target}}]},
            )
            ml.register_agent(
                store,
                admin,
                {
                    "name": f"uses-{i}",
                    "type": "flow",
                    "tools": [{"type": "MLModelTool", "parameters": {"model_id": target}}],
                },
            )
        cfg = store.put_blob_bytes(b'{"filler":true}')
        ts = time.time()
        ms = int(ts * 1000)
        blobs, repos, manifests, mblobs, members, tags, objects, deps = [], [], [], [], [], [], [], []
        for i in range(n - 1):
            own = f"filler model {i}".encode()
            digest = "sha256:" + hashlib.sha256(own).hexdigest()
            (home / "blobs" / digest.replace(":", "-")).write_bytes(own)
            blobs.append(
                {
                    "digest": digest,
                    "size": len(own),
                    "state": PRESENT,
                    "created_at": ts,
                    "touched_at": ts - 7200,
                }
            )
            manifest = {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": ml.CONFIG_MEDIA, "digest": cfg.digest, "size": cfg.size},
                "layers": [{"mediaType": ml.CONTENT_MEDIA, "digest": digest, "size": len(own)}],
            }
            content = json.dumps(manifest, separators=(",", ":")).encode()
            mdigest = "sha256:" + hashlib.sha256(content).hexdigest()
            repo = f"registry.ollama.ai/opensearch/filler{i}"
            rid = 1000 + i
            repos.append(
                {
                    "id": rid,
                    "name": repo,
                    "name_key": repo,
                    "owner": None,
                    "created_at": ts,
                    "visibility": "public",
                    "kind": ml.REPO_KIND,
                }
            )
            manifests.append(
                {
                    "digest": mdigest,
                    "media_type": OCI_MANIFEST,
                    "content": content,
                    "size": len(content),
                    "total_size": cfg.size + len(own),
                    "created_at": ts,
                }
            )
            mblobs += [{"manifest_digest": mdigest, "blob_digest": d} for d in (cfg.digest, digest)]
            members.append({"repository_id": rid, "manifest_digest": mdigest, "created_at": ts})
            tags.append(
                {
                    "repository_id": rid,
                    "name_key": "1",
                    "name": "1",
                    "manifest_digest": mdigest,
                    "created_at": ts,
                    "modified_at": ts,
                    "last_used_at": ts,
                }
            )
            gdoc = {
                "name": f"filler{i}",
                "latest_version": 1,
                "access": "public",
                "created_time": ms,
                "last_updated_time": ms,
                ml.HIDDEN: {"repository": repo},
            }
            mdoc = {
                "name": f"filler{i}",
                "model_group_id": f"g{i}",
                "algorithm": "TEXT_EMBEDDING",
                "model_version": "1",
                "model_format": "TORCH_SCRIPT",
                "model_state": "REGISTERED",
                "created_time": ms,
                "last_updated_time": ms,
                ml.HIDDEN: {"repository": repo, "tag": "1", "owner": None, "access": "public"},
            }
            objects.append(
                {
                    "kind": "group",
                    "id": f"g{i}",
                    "name_key": f"filler{i}",
                    "parent": None,
                    "owner": None,
                    "doc": json.dumps(gdoc),
                    "seq": 1,
                    "created_at": ts,
                }
            )
            objects.append(
                {
                    "kind": "model",
                    "id": f"m{i}",
                    "name_key": f"{repo}:1",
                    "parent": f"g{i}",
                    "owner": None,
                    "doc": json.dumps(mdoc),
                    "seq": 1,
                    "created_at": ts,
                }
            )
        for j in range(users):
            i = j % max(n - 1, 1)
            repo = f"registry.ollama.ai/opensearch/filler{i}"
            for kind, label, body in (
                ("ingest", "ingest pipeline", {"processors": [{"text_embedding": {"model_id": f"m{i}"}}]}),
                (
                    "search",
                    "search pipeline",
                    {"request_processors": [{"ml_inference": {"model_id": f"m{i}"}}]},
                ),
                (
                    "agent",
                    "agent",
                    {
                        "name": f"a{j}",
                        "type": "flow",
                        "tools": [{"type": "MLModelTool", "parameters": {"model_id": f"m{i}"}}],
                    },
                ),
            ):
                objects.append(
                    {
                        "kind": kind,
                        "id": f"filler-{j}",
                        "name_key": None,
                        "parent": None,
                        "owner": None,
                        "doc": json.dumps(body),
                        "seq": 1,
                        "created_at": ts,
                    }
                )
                if n > 1:
                    deps.append(
                        {
                            "kind": label,
                            "id": f"filler-{j}",
                            "target_kind": "tag",
                            "target": f"{repo}:1",
                            "target_key": f"{repo}:1",
                            "owner": None,
                            "reason": f"{label} filler-{j} uses model m{i}",
                            "policy": f"setting:{ml.SAFE_DELETE}",
                            "created_at": ts,
                        }
                    )
        with store.catalog.write() as conn:
            for table, rows in (
                (t.blobs, blobs),
                (t.repositories, repos),
                (t.manifests, manifests),
                (t.manifest_blobs, mblobs),
                (t.repo_manifests, members),
                (t.tags, tags),
                (t.ml_objects, objects),
                (t.dependents, deps),
            ):
                for k in range(0, len(rows), 5000):
                    if rows[k : k + 5000]:
                        conn.execute(table.insert(), rows[k : k + 5000])
        return target
    finally:
        store.close()


def median_of(client: httpx.Client, method: str, path: str, body: Any, status: int) -> float:
    times = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        r = client.request(method, path, json=body)
        times.append(time.perf_counter() - start)
        assert r.status_code == status, r.text[:300]
    return statistics.median(times)


def measure(n: int, users: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix="hangar-os-") as tmp:
        home = Path(tmp) / "home"
        target = populate(home, n, users)
        url, proc = start_hangar(home)
        try:
            with httpx.Client(base_url=url, timeout=120, headers={"User-Agent": "opensearch-py/3.2.0"}) as c:
                first = c.delete(f"/_plugins/_ml/models/{target}")
                reason = first.json()["error"]["reason"]
                assert first.status_code == 409 and "3 ingest pipelines" in reason and "3 agents" in reason, (
                    reason
                )
                found = c.post(
                    "/_plugins/_ml/models/_search", json={"query": {"match_all": {}}, "size": 10}
                ).json()
                assert found["hits"]["total"]["value"] == n and len(found["hits"]["hits"]) == min(10, n)
                check = median_of(c, "DELETE", f"/_plugins/_ml/models/{target}", None, 409)
                search = median_of(
                    c, "POST", "/_plugins/_ml/models/_search", {"query": {"match_all": {}}, "size": 10}, 200
                )
        finally:
            stop(proc)
        return check, search


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100,10000")
    parser.add_argument("--users", type=int, default=10_000, help="pipelines of each kind, and agents")
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    results = {}
    for n in sizes:
        check, search = measure(n, args.users)
        results[n] = (check, search)
        print(
            f"{n:>7} models, {args.users} pipelines of each kind and agents: "
            f"safe-delete check {check * 1000:8.1f} ms   _search match_all size 10 {search * 1000:8.1f} ms"
        )
    small, large = results[sizes[0]], results[sizes[-1]]
    ratios = (large[0] / small[0], large[1] / small[1])
    ok = all(r <= TARGET_RATIO for r in ratios)
    print(
        f"ratio {sizes[-1]}/{sizes[0]}: safe-delete check {ratios[0]:.2f}, _search {ratios[1]:.2f} "
        f"(target: at most {TARGET_RATIO:g}) -> {'met' if ok else 'NOT met'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
