"""Every command `hangar --help` lists takes `--json` and prints JSON (README: "Every command takes
`--json` for scripts"); a bare port works as `--host` for client commands and for `serve`."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import pytest

from harness import CLI, ServerProcess, free_port, hangar, hangar_env, wait_until
from modelhangar.testing.gguf_factory import make_gguf


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """A server holding `tiny` (and a trash that keeps what is deleted), and a registry to push to."""
    root = tmp_path_factory.mktemp("json")
    with (
        ServerProcess(root / "home", env={"HANGAR_TRASH_RETENTION": "1h"}) as srv,
        ServerProcess(root / "remote") as remote,
    ):
        gguf = root / "tiny.gguf"
        gguf.write_bytes(make_gguf(None, seed=31))
        client = ollama.Client(host=srv.url)
        client.create(model="tiny", files={"m.gguf": client.create_blob(gguf)})
        yield srv, remote


def help_commands(*args: str) -> list[str]:
    """The (sub)commands and aliases a `--help` lists."""
    out = subprocess.run([*CLI, *args, "--help"], capture_output=True, text=True, check=True).stdout
    section = out.split("positional arguments:", 1)[1].split("\noptions:", 1)[0]
    names: list[str] = []
    for m in re.finditer(r"^    ([a-z][a-z-]*)(?: \(([a-z-]+)\))?", section, re.M):
        names += [n for n in m.groups() if n]
    return names


def test_every_command_prints_json(servers: tuple[ServerProcess, ServerProcess], tmp_path: Path) -> None:
    srv, remote = servers
    home, ollama_dir = srv.home, tmp_path / "ollama"
    runs: dict[str, list[str]] = {
        "list": ["list"],
        "ls": ["ls"],
        "show": ["show", "tiny"],
        "cp": ["cp", "tiny", "tiny:copy"],
        "copy": ["copy", "tiny", "tiny:copy2"],
        "create": ["create", "tiny2", "--from", "tiny"],
        "rm": ["rm", "tiny:copy"],
        "trash list": ["trash", "list"],
        "trash": ["trash"],
        "trash restore": ["trash", "restore", "tiny:copy"],
        "push": ["push", "tiny", f"{remote.host}/team/tiny:v1", "--insecure"],
        "pull": ["pull", f"{remote.host}/team/tiny:v1", "--insecure"],
        "du": ["du"],
        "prune": ["prune", "--older-than", "1000d"],
        "trash empty": ["trash", "empty"],
        "audit": ["audit"],
        "gc": ["gc", "--dry-run"],
        "fsck": ["fsck"],
        "export-ollama": ["export-ollama", str(ollama_dir), "tiny"],
        "import-ollama": ["import-ollama", str(ollama_dir)],
        "user add": ["user", "add", "json-user"],
        "user": ["user", "list"],
        "user list": ["user", "list"],
        "user roles": ["user", "roles", "json-user", "--add", "reader"],
        "user quota": ["user", "quota", "json-user", "--max-models", "100"],
        "token add": ["token", "add", "json-user", "--name", "second"],
        "token": ["token", "list"],
        "token list": ["token", "list", "json-user"],
        "token rotate": ["token", "rotate", "{prefix}"],
        "token revoke": ["token", "revoke", "{prefix}"],
        "org add": ["org", "add", "json-org", "--member", "json-user"],
        "org": ["org", "members", "json-org", "--remove", "json-user"],
        "org members": ["org", "members", "json-org", "--add", "json-user"],
        "user remove": ["user", "remove", "json-org"],
        "visibility": ["visibility", "tiny", "public"],
        "whoami": ["whoami"],
    }
    # migrate-blobs needs the servers stopped: tests/test_blob_migration.py runs it with --json.
    offline = ("serve", "migrate-blobs")
    listed = {c for c in help_commands() if c not in offline} | {f"trash {a}" for a in help_commands("trash")}
    listed |= {f"{g} {a}" for g in ("user", "token", "org") for a in help_commands(g)}
    assert listed == set(runs), "a command without a --json case here (serve: see the next test)"
    prefix = ""
    for what, args in runs.items():
        proc = hangar(*(a.replace("{prefix}", prefix) for a in args), "--json", home=home, host=srv.host)
        assert proc.returncode == 0, f"hangar {what} --json: {proc.stderr}"
        try:
            doc = json.loads(proc.stdout)
        except ValueError:
            pytest.fail(f"hangar {what} --json printed no JSON:\n{proc.stdout}")
        prefix = doc.get("prefix", prefix) if isinstance(doc, dict) else prefix
    restored = hangar("trash", "restore", "tiny:copy", "--json", home=home, host=srv.host)
    assert restored.returncode == 1 and restored.stdout == ""  # (restored above) an error stays on stderr


def test_serve_json_logs_json_lines_and_takes_a_bare_port(tmp_path: Path) -> None:
    port = free_port()
    env = hangar_env(tmp_path / "home")
    proc = subprocess.Popen(
        [*CLI, "serve", "--host", str(port), "--json"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def answers() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/api/version", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        assert wait_until(answers, timeout=30), "serve --host PORT does not listen on 127.0.0.1:PORT"
        assert hangar("list", "--host", str(port), home=tmp_path / "home").returncode == 0
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=15)
    assert out == ""
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert lines[0]["message"] == "serving" and lines[0]["url"] == f"http://127.0.0.1:{port}"
    requests = [x for x in lines if x.get("logger") == "modelhangar.access"]
    assert {(x["method"], x["path"], x["status"]) for x in requests} >= {
        ("GET", "/api/version", 200),
        ("GET", "/api/hangar/models", 200),
    }
