"""`hangar` as a real subprocess against a real server: what rm, prune, trash, du and audit print."""

from __future__ import annotations

import re
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import ollama
import pytest

from harness import MakeGguf, ServerProcess, StartServer, hangar, hangar_json

DAY = 86400.0
LIBRARY = "registry.ollama.ai/library/"
SIZE = r"\d+(\.\d)? (B|KB|MB|GB)"
WHEN = r"in \d+ (s|min|hours|days) \(at [0-9: -]+\)"


@pytest.fixture
def srv(home: Path, start_server: StartServer) -> ServerProcess:
    """A server that keeps deleted models in the trash for an hour."""
    return start_server(home, env={"HANGAR_TRASH_RETENTION": "1h"})


def run(srv: ServerProcess, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`hangar ARGS --host HOST` (the server named by the flag, not by HANGAR_HOST)."""
    return hangar(*args, "--host", srv.host, home=home)


def lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return proc.stdout.strip().splitlines()


def one_line_error(proc: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert proc.returncode == 1, proc
    assert "Traceback" not in proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("hangar: ") and fragment in line, line


def create(client: ollama.Client, tmp: Path, name: str, gguf: bytes) -> None:
    path = tmp / f"{name}.gguf"
    path.write_bytes(gguf)
    client.create(model=name, files={"m.gguf": client.create_blob(path)}, system=name)


def catalog(home: Path, sql: str, *params: object) -> None:
    """Test setup only: change the running server's catalog directly."""
    with sqlite3.connect(home / "catalog.db") as db:
        db.execute(sql, params)


def test_rm_prints_one_line_per_model(
    srv: ServerProcess, home: Path, tmp_path: Path, make_gguf: MakeGguf
) -> None:
    client = ollama.Client(host=srv.url)
    shared = make_gguf(seed=1)
    create(client, tmp_path, "a", shared)
    create(client, tmp_path, "b", shared)
    create(client, tmp_path, "c", make_gguf(seed=2))
    catalog(
        home,
        "INSERT INTO dependents (kind, id, target_kind, target, target_key, owner, reason, created_at)"
        " VALUES ('deployment', 'web', 'tag', ?, ?, NULL, 'serves traffic', ?)",
        f"{LIBRARY}c:latest",
        f"{LIBRARY}c:latest",
        time.time(),
    )

    preview = run(srv, home, "rm", "--dry-run", "a")
    assert preview.returncode == 0
    [line] = lines(preview)
    assert re.fullmatch(
        rf"would delete a: moves it to the trash, frees {SIZE} \(\d+ blobs?\) when it expires {WHEN}; "
        rf"keeps \d+ shared blobs? \({SIZE}\) used by b:latest",
        line,
    ), line
    blocked = run(srv, home, "rm", "--purge", "--dry-run", "c")
    assert blocked.returncode == 1 and lines(blocked) == ["refused c: deployment web: serves traffic"]

    out = run(srv, home, "rm", "a", "../bad", "c", "nope")
    assert out.returncode == 1
    moved, invalid, refused, missing = lines(out)
    assert re.fullmatch(
        rf"moved a to trash \(frees {SIZE} when it expires {WHEN}; hangar trash restore a\)", moved
    )
    assert invalid.startswith('invalid model name "../bad": the namespace part may only hold letters')
    assert refused == "refused c: deployment web: serves traffic"
    assert missing == 'model "nope:latest" not found'

    gone = run(srv, home, "rm", "--purge", "b")
    assert gone.returncode == 0 and re.fullmatch(rf"deleted b \(freed {SIZE}\)", lines(gone)[0])
    listed = hangar_json("list", "--host", srv.host, home=home)
    assert [m["model"] for m in listed] == ["c:latest"]


def test_trash_list_restore_and_empty(
    srv: ServerProcess, home: Path, tmp_path: Path, make_gguf: MakeGguf
) -> None:
    client = ollama.Client(host=srv.url)
    create(client, tmp_path, "a", make_gguf(seed=3))
    create(client, tmp_path, "b", make_gguf(seed=4))
    assert run(srv, home, "trash", "empty").stdout.strip() == "nothing to purge"
    assert run(srv, home, "rm", "a", "b").returncode == 0

    table = lines(run(srv, home, "trash"))  # `list` is the default action
    assert table[0].split() == ["ID", "NAME", "SIZE", "DELETED", "EXPIRES", "IN"]
    assert sorted(row.split()[1] for row in table[1:]) == ["a:latest", "b:latest"]
    assert all(row.endswith(("minutes", "About an hour")) for row in table[1:])  # the EXPIRES IN column
    # options may come before the action too
    before = hangar("trash", "--host", srv.host, "--json", "list", home=home)
    assert before.returncode == 0 and '"model": "a:latest"' in before.stdout

    restored = run(srv, home, "trash", "restore", "a")
    assert restored.returncode == 0 and lines(restored) == ["restored a:latest"]
    one_line_error(run(srv, home, "trash", "restore", "a"), 'model "a:latest" is not in the trash')

    assert lines(run(srv, home, "trash", "empty", "--older-than", "1h")) == ["nothing to purge"]
    preview = lines(run(srv, home, "trash", "empty", "--dry-run"))
    assert preview[0] == "would purge b:latest" and re.fullmatch(rf"would free {SIZE}", preview[1])
    done = run(srv, home, "trash", "empty")
    assert done.returncode == 0
    assert lines(done) == ["purged b:latest", preview[1].replace("would free", "freed")]
    assert len(lines(run(srv, home, "trash", "list"))) == 1  # the header alone
    one_line_error(run(srv, home, "trash", "empty", "--older-than", "soon"), "invalid duration")


def test_prune_prints_like_rm(srv: ServerProcess, home: Path, tmp_path: Path, make_gguf: MakeGguf) -> None:
    client = ollama.Client(host=srv.url)
    for i, name in enumerate(("old", "new")):
        create(client, tmp_path, name, make_gguf(seed=10 + i))
    catalog(
        home,
        "UPDATE tags SET modified_at=? WHERE repository_id=(SELECT id FROM repositories WHERE name_key=?)",
        time.time() - 40 * DAY,
        f"{LIBRARY}old",
    )
    preview = run(srv, home, "prune", "--older-than", "30d", "--dry-run")
    assert preview.returncode == 0
    [line] = lines(preview)
    assert line.startswith("would delete old:latest: moves it to the trash, frees ")
    done = run(srv, home, "prune", "--older-than", "30d")
    assert done.returncode == 0
    assert lines(done)[0].startswith("moved old:latest to trash (frees ")
    assert lines(run(srv, home, "prune", "--older-than", "30d")) == ["nothing to prune"]
    assert lines(run(srv, home, "prune", "--keep-last", "1", "--match", "n*")) == ["nothing to prune"]

    one_line_error(
        run(srv, home, "prune"), "prune needs --older-than, --unused-for, --keep-last or --untagged-for"
    )
    one_line_error(run(srv, home, "prune", "--older-than", "soon"), "invalid duration")
    one_line_error(run(srv, home, "prune", "--keep-last", "-1"), "greater than or equal to 0")
    listed = hangar_json("list", "--host", srv.host, home=home)
    assert [m["model"] for m in listed] == ["new:latest"]


def test_du_and_audit_tables(srv: ServerProcess, home: Path, tmp_path: Path, make_gguf: MakeGguf) -> None:
    client = ollama.Client(host=srv.url)
    shared = make_gguf(seed=20)
    create(client, tmp_path, "x", shared)
    create(client, tmp_path, "y", shared)
    du = lines(run(srv, home, "du"))
    assert du[0].split() == ["NAME", "SIZE", "UNIQUE", "SHARED", "SHARED", "WITH"]
    rows = {row.split()[0]: row for row in du[1:3]}
    assert rows["x:latest"].endswith("y:latest") and rows["y:latest"].endswith("x:latest")
    assert re.fullmatch(rf"total on disk: {SIZE} in \d+ blobs", du[-1])
    assert not any("held only by the trash" in line for line in du)

    assert run(srv, home, "rm", "--dry-run", "x").returncode == 0
    assert run(srv, home, "rm", "x").returncode == 0
    du = lines(run(srv, home, "du"))
    assert re.fullmatch(rf"total on disk: {SIZE} in \d+ blobs", du[-1])
    assert any(re.fullmatch(rf"{SIZE} +held only by the trash", line) for line in du)

    table = lines(run(srv, home, "audit"))
    header = ["TIME", "ACTOR", "FACE", "ACTION", "TARGET", "DRY", "RUN", "OUTCOME", "FREED"]
    assert table[0].split() == header
    newest, oldest = table[1].split(), table[2].split()
    assert newest[2:6] == ["local", "hangar", "delete", f"{LIBRARY}x:latest"]
    assert newest[6:] == ["ok", "0", "B"]  # trashed: nothing freed yet
    assert oldest[2:8] == ["local", "hangar", "delete", f"{LIBRARY}x:latest", "yes", "ok"]
    assert len(lines(run(srv, home, "audit", "--since", "1h"))) == len(table)
    one_line_error(run(srv, home, "audit", "--since", "recently"), "invalid duration")


@pytest.mark.parametrize(
    "args",
    [["prune", "--older-than", "1d"], ["trash", "empty"], ["audit"], ["du"], ["trash", "restore", "x"]],
)
def test_commands_fail_in_one_line_without_a_server(home: Path, args: list[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    one_line_error(hangar(*args, "--host", f"127.0.0.1:{port}", home=home), "cannot reach the server")
