"""`hangar migrate-blobs`: a local store into a bucket (moto's server on loopback) and back, served from
each place, a migration killed mid-copy then resumed, a wrong object in the destination copied again,
and a process started against the wrong blob location refused (README, "Moving blobs to another place")."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest

from harness import (
    CLI,
    S3_BUCKET,
    MakeGguf,
    S3Server,
    ServerProcess,
    StartServer,
    hangar,
    hangar_env,
    hangar_tty,
    image_manifest,
)

LOCAL = {"HANGAR_BLOBS": ""}


def in_bucket(s3: S3Server, prefix: str, **extra: str) -> dict[str, str]:
    return {**s3.env, "HANGAR_BLOBS": f"s3://{S3_BUCKET}/{prefix}", "HANGAR_S3_PART_SIZE": "5MiB", **extra}


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_image(url: str, repo: str, tag: str, layers: list[bytes]) -> None:
    config = json.dumps({"architecture": "amd64", "os": "linux", "tag": tag}).encode()
    for blob in [config, *layers]:
        r = httpx.post(f"{url}/v2/{repo}/blobs/uploads/?digest={digest_of(blob)}", content=blob, timeout=60)
        assert r.status_code == 201, r.text
    r = httpx.put(
        f"{url}/v2/{repo}/manifests/{tag}",
        content=image_manifest(config, layers),
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert r.status_code == 201, r.text


def migrate(home: Path, env: dict[str, str], *args: str, database_url: str | None = None) -> dict[str, Any]:
    out = hangar("migrate-blobs", *args, "--json", home=home, env=env, database_url=database_url)
    try:
        report: dict[str, Any] = json.loads(out.stdout)
    except ValueError:
        raise AssertionError(f"exit {out.returncode}: {out.stdout}{out.stderr}") from None
    return report


def fsck_clean(home: Path, env: dict[str, str], database_url: str | None = None) -> None:
    gc = hangar("gc", home=home, env=env, database_url=database_url)
    assert gc.returncode == 0, gc.stderr
    out = hangar("fsck", "--verify", "--json", home=home, env=env, database_url=database_url)
    assert out.returncode == 0 and json.loads(out.stdout)["ok"], out.stdout + out.stderr


def bucket_blobs(s3: S3Server, prefix: str) -> list[str]:
    return s3.keys(S3_BUCKET, f"{prefix}/blobs/sha256/")


def local_blobs(home: Path) -> list[str]:
    return sorted(p.name for p in (home / "blobs").glob("sha256-*"))


def read_everything(url: str, layers: list[bytes]) -> None:
    """The Ollama face shows the model and serves its blobs; `/v2` serves the image's layers."""
    shown = ollama.Client(host=url).show("tiny")
    assert shown.modelinfo and shown.modelinfo.get("general.architecture") == "llama"
    manifest = httpx.get(f"{url}/v2/library/tiny/manifests/latest").json()
    for layer in manifest["layers"]:
        assert httpx.head(f"{url}/api/blobs/{layer['digest']}").status_code == 200
        r = httpx.get(f"{url}/v2/library/tiny/blobs/{layer['digest']}", follow_redirects=True, timeout=60)
        assert r.status_code == 200 and digest_of(r.content) == layer["digest"]
    for data in layers:
        r = httpx.get(f"{url}/v2/team/img/blobs/{digest_of(data)}", timeout=60)
        assert r.status_code == 200 and r.content == data
    r = httpx.get(f"{url}/v2/team/img/blobs/{digest_of(layers[0])}", headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == layers[0][10:20]


@pytest.mark.parametrize("catalog", ["sqlite", "postgresql"])
def test_into_a_bucket_and_back_served_from_each(
    tmp_path: Path,
    s3_server: S3Server,
    start_server: StartServer,
    make_gguf: MakeGguf,
    catalog: str,
    request: pytest.FixtureRequest,
) -> None:
    db = request.getfixturevalue("pg_url") if catalog == "postgresql" else None
    home, prefix = tmp_path / "a", f"there-{catalog}"
    s3 = in_bucket(s3_server, prefix)
    srv = start_server(home, env=LOCAL, database_url=db)
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(make_gguf(seed=3))
    client = ollama.Client(host=srv.url)
    client.create(model="tiny", files={"tiny.gguf": client.create_blob(gguf)}, system="Be brief.")
    layers = [os.urandom(6 << 20), os.urandom(1000)]  # one of two multipart parts
    push_image(srv.url, "team/img", "v1", layers)
    session = httpx.post(f"{srv.url}/v2/team/img/blobs/uploads/")
    assert session.status_code == 202
    upload = httpx.URL(session.headers["location"]).raw_path.decode()  # answered by any later server
    assert httpx.patch(f"{srv.url}{upload}", content=b"half").status_code == 202
    held = hangar(
        "migrate-blobs",
        "--to",
        s3["HANGAR_BLOBS"],
        home=home,
        env={**LOCAL, **s3_server.env},
        database_url=db,
    )
    assert held.returncode == 1 and "in use: stop every `hangar serve`" in held.stderr, held.stderr
    srv.stop()

    report = migrate(home, {**s3, **LOCAL}, "--to", s3["HANGAR_BLOBS"], "--delete-source", database_url=db)
    assert report["ok"] and report["switched"] and report["setting"] == f"HANGAR_BLOBS={s3['HANGAR_BLOBS']}"
    assert len(report["copied"]) == report["blobs"] == len(report["source_deleted"]) >= 6
    assert sorted(k.rsplit("/", 1)[1] for k in bucket_blobs(s3_server, prefix)) == sorted(
        d[7:] for d in report["copied"]
    )
    assert local_blobs(home) == []  # served from the bucket from now on
    assert len(report["uploads_cancelled"]) == 1 and not any((home / "uploads").iterdir())

    # The old HANGAR_BLOBS is refused at start-up, in one line that says what to set.
    with pytest.raises(RuntimeError, match=rf"set HANGAR_BLOBS=s3://{S3_BUCKET}/{prefix}"):
        ServerProcess(home, env=LOCAL, database_url=db).start()
    wrong = hangar("fsck", home=home, env={**s3, "HANGAR_BLOBS": f"s3://{S3_BUCKET}/other"}, database_url=db)
    assert wrong.returncode == 1 and f"set HANGAR_BLOBS=s3://{S3_BUCKET}/{prefix}" in wrong.stderr

    srv = start_server(home, env=s3, database_url=db)
    read_everything(srv.url, layers)
    assert httpx.get(f"{srv.url}{upload}").status_code == 404  # the client starts again
    srv.stop()
    fsck_clean(home, s3, db)

    back = migrate(home, s3, "--to", "local", "--delete-source", database_url=db)
    assert back["ok"] and back["switched"] and back["setting"].startswith("HANGAR_BLOBS empty")
    assert len(back["copied"]) == back["blobs"] and bucket_blobs(s3_server, prefix) == []
    assert len(local_blobs(home)) == back["blobs"]
    srv = start_server(home, env=LOCAL, database_url=db)
    read_everything(srv.url, layers)
    srv.stop()
    fsck_clean(home, LOCAL, db)


def many_blobs(url: str, count: int, size: int) -> list[bytes]:
    layers = [os.urandom(size) for _ in range(count)]
    push_image(url, "team/many", "v1", layers)
    return layers


def test_a_migration_killed_mid_copy_resumes_and_verifies(
    tmp_path: Path, s3_server: S3Server, start_server: StartServer
) -> None:
    home, prefix = tmp_path / "a", "killed"
    s3 = in_bucket(s3_server, prefix)
    srv = start_server(home, env=LOCAL)
    layers = many_blobs(srv.url, 60, 1 << 20)
    srv.stop()
    env = hangar_env(home, env={**s3, **LOCAL})
    proc = subprocess.Popen(
        [*CLI, "migrate-blobs", "--to", s3["HANGAR_BLOBS"], "--jobs", "1"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:  # a plain line per blob when stderr is not a terminal
        seen.append(line)
        if len([s for s in seen if s.startswith("copied ")]) >= 3:
            # Meanwhile nothing else opens the store (the blob-location gate).
            busy = hangar("fsck", home=home, env=LOCAL)
            proc.send_signal(signal.SIGKILL)
            break
    assert proc.wait(30) == -signal.SIGKILL, "".join(seen)
    assert busy.returncode == 1 and "`hangar migrate-blobs` is moving the blobs" in busy.stderr, busy.stderr
    copied = len(bucket_blobs(s3_server, prefix))
    assert 3 <= copied < 61

    # Not switched: the store still runs on its own files, and is consistent.
    fsck_clean(home, LOCAL)
    again = migrate(home, {**s3, **LOCAL}, "--to", s3["HANGAR_BLOBS"])
    assert again["ok"] and again["switched"] and again["blobs"] == 61
    assert len(again["present"]) >= 3 and len(again["present"]) + len(again["copied"]) == 61
    assert len(local_blobs(home)) == 61  # the source is kept without --delete-source
    fsck_clean(home, s3)  # GC also sweeps the killed run's temporary objects in the bucket
    assert s3_server.keys(S3_BUCKET, f"{prefix}/tmp/") == []
    srv = start_server(home, env=s3)
    for data in layers[:3] + layers[-3:]:
        assert httpx.get(f"{srv.url}/v2/team/many/blobs/{digest_of(data)}", timeout=60).content == data


def test_a_wrong_object_in_the_destination_is_copied_again(
    tmp_path: Path, s3_server: S3Server, start_server: StartServer
) -> None:
    home, prefix = tmp_path / "a", "wrong"
    s3 = in_bucket(s3_server, prefix)
    srv = start_server(home, env=LOCAL)
    layers = many_blobs(srv.url, 4, 300_000)
    srv.stop()
    client = s3_server.client()
    same_size, shorter, right = layers[0], layers[1], layers[2]
    key = f"{prefix}/blobs/sha256/" + "{}"
    client.put_object(Bucket=S3_BUCKET, Key=key.format(digest_of(same_size)[7:]), Body=os.urandom(300_000))
    client.put_object(Bucket=S3_BUCKET, Key=key.format(digest_of(shorter)[7:]), Body=b"short")
    client.put_object(Bucket=S3_BUCKET, Key=key.format(digest_of(right)[7:]), Body=right)
    nowhere = hangar("migrate-blobs", "--to", "s3://no-such-bucket", home=home, env={**s3, **LOCAL})
    assert nowhere.returncode == 1 and "--to s3://no-such-bucket: no such bucket" in nowhere.stderr
    report = migrate(home, {**s3, **LOCAL}, "--to", s3["HANGAR_BLOBS"])
    assert report["ok"] and report["switched"]
    assert sorted(report["recopied"]) == sorted([digest_of(same_size), digest_of(shorter)])
    assert report["present"] == [digest_of(right)]
    for data in (same_size, shorter):
        body = client.get_object(Bucket=S3_BUCKET, Key=key.format(digest_of(data)[7:]))["Body"].read()
        assert body == data
    fsck_clean(home, s3)


def test_to_another_directory_and_a_bad_destination(tmp_path: Path, start_server: StartServer) -> None:
    home, elsewhere = tmp_path / "a", tmp_path / "disk2"
    srv = start_server(home, env=LOCAL)
    layers = many_blobs(srv.url, 3, 1000)
    srv.stop()
    same = hangar("migrate-blobs", "--to", "local", home=home, env=LOCAL)
    assert same.returncode == 1 and "already in the files under" in same.stderr
    (elsewhere / "blobs").mkdir(parents=True)
    (elsewhere / "blobs" / f"sha256-{digest_of(b'theirs')[7:]}").write_bytes(b"theirs")
    theirs = hangar("migrate-blobs", "--to", str(elsewhere), home=home, env=LOCAL)
    assert theirs.returncode == 1 and "1 blobs this store does not know" in theirs.stderr, theirs.stderr
    report = migrate(home, LOCAL, "--to", str(elsewhere), "--allow-unknown")  # (old copies of ours)
    assert report["ok"] and report["setting"] == f"HANGAR_BLOBS=file:{elsewhere}"
    assert len(list((elsewhere / "blobs").glob("sha256-*"))) == 5  # theirs until GC reclaims it
    env = {"HANGAR_BLOBS": f"file:{elsewhere}"}
    srv = start_server(home, env=env)
    assert httpx.get(f"{srv.url}/v2/team/many/blobs/{digest_of(layers[1])}").content == layers[1]
    srv.stop()
    fsck_clean(home, env)
    code, shown = hangar_tty("migrate-blobs", "--to", "local", "--delete-source", home=home, env=env)
    assert code == 0 and "moving" in shown and "4/4 blobs" in shown, shown  # the bar, on a terminal
    assert "deleted 4 blobs" in shown and list((elsewhere / "blobs").glob("sha256-*")) == []
    fsck_clean(home, LOCAL)
