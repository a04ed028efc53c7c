"""Do `GET /v1/models` (first page) and a version's `DELETE` cost the same in a store of 100 and of
10,000 Replicate models, with 10 versions each and 100,000 recorded predictions?

For each size: build the store (catalog rows bulk-inserted in one transaction; the versions share a few
layer files written through the store), start a real `hangar serve` with HANGAR_AUTH=required, then time
the first page of `GET /v1/models` and single `DELETE /v1/models/{o}/{n}/versions/{id}` with the owner's
token. Predictions are another user's, on versions that are not deleted (each is a dependent of its
version, as `core/replicate_models.py` records them). Prints medians and the ratio large/small
(target: at most 2 for both; a page must not read the whole store).

    python bench/replicate_scaling.py [--sizes 100,10000] [--versions 10] [--predictions 100000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from modelhangar.core import accounts
from modelhangar.core import replicate_models as rm
from modelhangar.core.catalog import schema as t
from modelhangar.core.config import load_settings
from modelhangar.core.store import Store
from peers import start_hangar, stop

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
LAYERS = 50


def populate(home: Path, n: int, versions: int, predictions: int) -> tuple[str, list[tuple[str, str]]]:
    """The owner's token and the (model, version) pairs free to delete (no one else's predictions)."""
    store = Store(load_settings({"HANGAR_HOME": str(home)}))
    try:
        token = accounts.add_user(store, "alice").token
        accounts.add_user(store, "bob")
        config = store.put_blob_bytes(json.dumps({"config": {"Labels": {}}}).encode())
        layers = [store.put_blob_bytes(f"layer {i}\n".encode() * 256) for i in range(LAYERS)]
        ts = time.time() - 3600
        repos, manifests, mblobs, members, tags, vrows = [], [], [], [], [], []
        deletable: list[tuple[str, str]] = []
        used: list[tuple[str, str]] = []
        for i in range(n):
            name = f"model-{i:05d}"
            repo = rm.repository_name("alice", name)
            repos.append(
                {
                    "id": i + 1,
                    "name": repo,
                    "name_key": repo,
                    "owner": "alice",
                    "created_at": ts + i * 0.001,
                    "visibility": "private",
                    "kind": rm.KIND,
                    "meta": json.dumps({"hardware": "cpu"}),
                }
            )
            for j in range(versions):
                layer = layers[(i + j) % LAYERS]
                content = json.dumps(
                    {
                        "schemaVersion": 2,
                        "mediaType": OCI_MANIFEST,
                        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **_d(config)},
                        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **_d(layer)}],
                        "annotations": {"model": name, "version": str(j)},
                    }
                ).encode()
                digest = "sha256:" + hashlib.sha256(content).hexdigest()
                vid = digest.removeprefix("sha256:")
                vts = ts + i * 0.001 + j * 0.00001
                manifests.append(
                    {
                        "digest": digest,
                        "media_type": OCI_MANIFEST,
                        "content": content,
                        "size": len(content),
                        "total_size": config.size + layer.size,
                        "created_at": vts,
                    }
                )
                mblobs += [
                    {"manifest_digest": digest, "blob_digest": config.digest},
                    {"manifest_digest": digest, "blob_digest": layer.digest},
                ]
                members.append({"repository_id": i + 1, "manifest_digest": digest, "created_at": vts})
                tags.append(
                    {
                        "repository_id": i + 1,
                        "name_key": vid,
                        "name": vid,
                        "manifest_digest": digest,
                        "created_at": vts,
                        "modified_at": vts,
                        "last_used_at": vts,
                    }
                )
                vrows.append(
                    {
                        "repository_key": repo,
                        "version_id": vid,
                        "manifest_digest": digest,
                        "cog_version": rm.DEFAULT_COG_VERSION,
                        "openapi_schema": json.dumps(rm.MINIMAL_SCHEMA),
                        "created_at": vts,
                    }
                )
                (deletable if j >= versions // 2 else used).append((f"alice/{name}", vid))
        rng = random.Random(n)
        runs, deps, seen = [], [], set()
        for k in range(predictions):
            model, vid = used[rng.randrange(len(used))]
            runs.append(
                {
                    "id": f"p{k:025d}",
                    "kind": "prediction",
                    "model": model,
                    "version_id": vid,
                    "creator": "bob",
                    "status": "starting",
                    "input": "{}",
                    "logs": "",
                    "created_at": ts + k * 0.0001,
                }
            )
            target = rm.version_tag(model, vid)
            if target not in seen:
                seen.add(target)
                deps.append(
                    {
                        "kind": "predictions",
                        "id": "bob",
                        "target_kind": "tag",
                        "target": target,
                        "target_key": target.lower(),
                        "owner": "bob",
                        "reason": "bob has run predictions with it",
                        "created_at": ts,
                        "policy": "block",
                    }
                )
        with store.catalog.write() as conn:
            for table, rows in (
                (t.repositories, repos),
                (t.manifests, manifests),
                (t.manifest_blobs, mblobs),
                (t.repo_manifests, members),
                (t.tags, tags),
                (t.replicate_versions, vrows),
                (t.replicate_runs, runs),
                (t.dependents, deps),
            ):
                for start in range(0, len(rows), 5000):
                    conn.execute(table.insert(), rows[start : start + 5000])
        return token, deletable
    finally:
        store.close()


def _d(blob: object) -> dict[str, object]:
    return {"digest": blob.digest, "size": blob.size}  # type: ignore[attr-defined]


def measure(n: int, versions: int, predictions: int, repeats: int, workdir: Path) -> dict[str, float]:
    home = workdir / f"store-{n}"
    t0 = time.perf_counter()
    token, deletable = populate(home, n, versions, predictions)
    setup = time.perf_counter() - t0
    env = {"HANGAR_AUTH": "required", "HANGAR_TRASH_RETENTION": "0", "HANGAR_REUSE_FUSE": "0"}
    url, proc = start_hangar(home, env)
    try:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, headers=headers, timeout=300) as client:
            for _ in range(3):  # warm-up
                client.get("/v1/models").raise_for_status()
            lists = []
            for _ in range(repeats):
                t1 = time.perf_counter()
                page = client.get("/v1/models")
                lists.append(time.perf_counter() - t1)
                assert len(page.json()["results"]) == 25 and page.json()["next"]
            rng = random.Random(7)
            picks = rng.sample(deletable, min(len(deletable), repeats + 3))
            deletes = []
            for k, (model, vid) in enumerate(picks):
                t2 = time.perf_counter()
                r = client.delete(f"/v1/models/{model}/versions/{vid}")
                if k >= 3:
                    deletes.append(time.perf_counter() - t2)
                assert r.status_code == 204, r.text
    finally:
        stop(proc)
    return {
        "models": n,
        "setup_s": setup,
        "list_ms": statistics.median(lists) * 1000,
        "delete_ms": statistics.median(deletes) * 1000,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100,10000")
    ap.add_argument("--versions", type=int, default=10)
    ap.add_argument("--predictions", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=50)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="hangar-bench-") as tmp:
        rows = [measure(n, args.versions, args.predictions, args.repeats, Path(tmp)) for n in sizes]
    print(f"{'models':>8} {'versions':>9} {'setup s':>8} {'list ms':>9} {'delete ms':>10}")
    for r in rows:
        print(
            f"{r['models']:>8} {r['models'] * args.versions:>9} {r['setup_s']:>8.1f}"
            f" {r['list_ms']:>9.2f} {r['delete_ms']:>10.2f}"
        )
    small, large = rows[0], rows[-1]
    for what in ("list", "delete"):
        ratio = large[f"{what}_ms"] / small[f"{what}_ms"]
        print(
            f"{what}: median ratio {large['models']}/{small['models']} models {ratio:.2f};"
            f" target at most 2 -> {'MET' if ratio <= 2 else 'NOT MET'}"
        )


if __name__ == "__main__":
    main()
