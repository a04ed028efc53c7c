"""`hangar` as a real subprocess, for the commands that need no server (and the errors of those that do)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from harness import hangar_tty
from modelhangar.cli.modelfile import parse_modelfile
from modelhangar.cli.output import human_size, human_time
from modelhangar.core.config import load_settings
from modelhangar.core.store import Store

SUBCOMMANDS = [
    ["serve"],
    ["list"],
    ["ls"],
    ["show"],
    ["cp"],
    ["rm"],
    ["create"],
    ["pull"],
    ["push"],
    ["du"],
    ["trash"],
    ["trash", "list"],
    ["trash", "restore"],
    ["trash", "empty"],
    ["prune"],
    ["audit"],
    ["gc"],
    ["fsck"],
    ["import-ollama"],
    ["export-ollama"],
    ["user"],
    ["user", "add"],
    ["user", "roles"],
]


def closed_port() -> int:
    """A local port nothing listens on (it was free a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("HANGAR_", "OLLAMA_"))}
    e["HANGAR_HOME"] = str(tmp_path / "home")
    e["HANGAR_HOST"] = f"127.0.0.1:{closed_port()}"
    return e


def hangar(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelhangar.cli.main", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_clean_failure(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("hangar: ")
    for fragment in fragments:
        assert fragment in lines[0]


def store_for(env: dict[str, str]) -> Store:
    return Store(load_settings(env))


# ------------------------------------------------------------------------------------------ help


@pytest.mark.parametrize("command", SUBCOMMANDS, ids=" ".join)
def test_every_subcommand_has_help(env: dict[str, str], command: list[str]) -> None:
    result = hangar(env, *command, "--help")
    assert result.returncode == 0, result.stderr
    shown = ["list" if c == "ls" else c for c in command]  # an alias shows its command's usage
    assert result.stdout.startswith(f"usage: hangar {' '.join(shown)}")
    assert result.stderr == ""


def test_top_level_help_lists_every_command(env: dict[str, str]) -> None:
    result = hangar(env, "--help")
    assert result.returncode == 0
    for command in SUBCOMMANDS:
        assert command[0] in result.stdout


def test_no_command_prints_usage_and_fails(env: dict[str, str]) -> None:
    result = hangar(env)
    assert result.returncode == 1
    assert "usage: hangar" in result.stderr


def test_invalid_arguments_give_one_line(env: dict[str, str]) -> None:
    assert_clean_failure(hangar(env, "rm"), "required", "hangar rm --help")
    assert_clean_failure(hangar(env, "frobnicate"), "invalid choice")
    assert_clean_failure(hangar(env, "serve", "--host", "localhost:99999"), "invalid port")


# ------------------------------------------------------------------------------------------ store commands


def test_fsck_on_an_empty_store(env: dict[str, str]) -> None:
    store_for(env).close()
    result = hangar(env, "fsck")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok: 0 blobs, 0 manifests checked"


def test_gc_json_on_an_empty_store(env: dict[str, str]) -> None:
    store_for(env).close()
    result = hangar(env, "gc", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["bytes_freed"] == 0
    assert report["blobs"] == []
    assert report["dry_run"] is False


@pytest.mark.parametrize(
    "command", [["fsck"], ["gc"], ["gc", "--dry-run"], ["export-ollama", "out"]], ids=" ".join
)
def test_store_commands_where_there_is_no_store_create_none(
    env: dict[str, str], tmp_path: Path, command: list[str]
) -> None:
    home = Path(env["HANGAR_HOME"])
    assert_clean_failure(
        hangar(env, *command, cwd=tmp_path), f"no store at {home}: {home}/catalog.db does not exist"
    )
    assert not home.exists()
    home.mkdir()  # a directory, but no store in it
    assert_clean_failure(hangar(env, *command, cwd=tmp_path), f"no store at {home}", "--data-dir")
    assert list(home.iterdir()) == [] and not (tmp_path / "out").exists()
    pg = {**env, "HANGAR_DATABASE_URL": "postgresql+psycopg://hangar@127.0.0.1:1/none"}
    assert_clean_failure(
        hangar({**pg, "HANGAR_HOME": str(tmp_path / "nothere")}, *command), "no such directory"
    )


def test_data_dir_overrides_hangar_home(env: dict[str, str], tmp_path: Path) -> None:
    other = tmp_path / "other"
    store_for({**env, "HANGAR_HOME": str(other)}).close()
    result = hangar(env, "fsck", "--data-dir", str(other))
    assert result.returncode == 0, result.stderr
    assert not Path(env["HANGAR_HOME"]).exists()


def test_gc_reclaims_an_unreferenced_blob(env: dict[str, str]) -> None:
    store = store_for(env)
    try:
        commit = store.put_blob_bytes(b"x" * 1234)
    finally:
        store.close()

    kept = hangar(env, "gc", "--json")  # the default grace (1h) protects a blob just written
    assert json.loads(kept.stdout)["blobs"] == []

    preview = hangar(env, "gc", "--dry-run", "--grace", "0", "--json")
    assert preview.returncode == 0, preview.stderr
    assert json.loads(preview.stdout)["blobs"] == [commit.digest]
    assert json.loads(preview.stdout)["dry_run"] is True
    assert "ok: 1 blob, 0 manifests checked" in hangar(env, "fsck").stdout

    result = hangar(env, "gc", "--grace", "0")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "reclaimed 1 blob, 1.2 KB"
    assert hangar(env, "fsck").stdout.strip() == "ok: 0 blobs, 0 manifests checked"


def test_fsck_reports_a_missing_blob_file(env: dict[str, str]) -> None:
    store = store_for(env)
    try:
        commit = store.put_blob_bytes(b"some bytes")
        path = store.blobs.local_path(commit.digest)
    finally:
        store.close()
    assert path is not None
    path.unlink()

    result = hangar(env, "fsck")
    assert result.returncode == 1
    assert f"blob-file-missing: {commit.digest}" in result.stdout

    as_json = json.loads(hangar(env, "fsck", "--json").stdout)
    assert as_json["ok"] is False
    assert {
        "kind": "blob-file-missing",
        "subject": commit.digest,
        "detail": as_json["problems"][0]["detail"],
    } in (as_json["problems"])


def _ollama_dir(root: Path, weights: bytes = b"GGUF not really") -> bytes:
    """A one-model Ollama models directory; returns the manifest bytes."""
    blobs = root / "blobs"
    blobs.mkdir(parents=True)
    layers = {}
    for name, data in (("config", b'{"model_format":"gguf"}'), ("model", weights)):
        hexd = hashlib.sha256(data).hexdigest()
        (blobs / f"sha256-{hexd}").write_bytes(data)
        layers[name] = {"digest": f"sha256:{hexd}", "size": len(data)}
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", **layers["config"]},
            "layers": [{"mediaType": "application/vnd.ollama.image.model", **layers["model"]}],
        }
    ).encode()
    mdir = root / "manifests" / "registry.ollama.ai" / "library" / "tiny"
    mdir.mkdir(parents=True)
    (mdir / "latest").write_bytes(manifest)
    return manifest


def test_import_then_export_ollama_keeps_the_manifest(env: dict[str, str], tmp_path: Path) -> None:
    manifest = _ollama_dir(tmp_path / "ollama")
    imported = hangar(env, "import-ollama", str(tmp_path / "ollama"), "--json")
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout)["models"] == ["tiny:latest"]

    out = tmp_path / "exported"
    exported = hangar(env, "export-ollama", str(out), "tiny")
    assert exported.returncode == 0, exported.stderr
    assert "exported tiny:latest" in exported.stdout
    assert (out / "manifests/registry.ollama.ai/library/tiny/latest").read_bytes() == manifest
    assert hangar(env, "fsck").returncode == 0


def test_import_and_export_show_progress_in_bytes_on_a_terminal(env: dict[str, str], tmp_path: Path) -> None:
    _ollama_dir(tmp_path / "ollama", weights=b"G" * 1_499_977)  # with the config: 1.5 MB in all
    home = Path(env["HANGAR_HOME"])
    for verb, args in (
        ("importing", ["import-ollama", str(tmp_path / "ollama")]),
        ("exporting", ["export-ollama", str(tmp_path / "out")]),
    ):
        code, shown = hangar_tty(*args, home=home)
        assert code == 0, shown
        plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown)
        assert re.search(rf"{verb} ━+ 1\.5/1\.5 MB .* tiny:latest", plain), plain
        assert "1 model" in plain
    piped = hangar(env, "export-ollama", str(tmp_path / "again"), "--json")  # no terminal: no bar
    assert (
        piped.returncode == 0 and piped.stderr == "" and json.loads(piped.stdout)["models"] == ["tiny:latest"]
    )


def test_export_of_an_unknown_model_fails(env: dict[str, str], tmp_path: Path) -> None:
    store_for(env).close()
    result = hangar(env, "export-ollama", str(tmp_path / "out"), "nothere")
    assert result.returncode == 1
    assert 'hangar: model "nothere:latest" not found' in result.stderr


def test_import_of_a_missing_directory_fails_cleanly(env: dict[str, str], tmp_path: Path) -> None:
    assert_clean_failure(hangar(env, "import-ollama", str(tmp_path / "nope")), "not a directory")


# ------------------------------------------------------------------------------------------ bad settings


def test_bad_duration_flag(env: dict[str, str]) -> None:
    assert_clean_failure(hangar(env, "gc", "--grace", "soon"), "invalid duration 'soon'", "hangar gc --help")


def test_bad_duration_in_the_environment(env: dict[str, str]) -> None:
    assert_clean_failure(
        hangar({**env, "HANGAR_TRASH_RETENTION": "forever"}, "fsck"), "HANGAR_TRASH_RETENTION"
    )


# ------------------------------------------------------------------------------------------ no server


@pytest.mark.parametrize(
    "command",
    [
        ["list"],
        ["ls", "--json"],
        ["show", "m"],
        ["cp", "a", "b"],
        ["rm", "m"],
        ["du"],
        ["trash"],
        ["create", "m", "--from", "b"],
    ],
    ids=" ".join,
)
def test_client_commands_without_a_server(env: dict[str, str], command: list[str]) -> None:
    result = hangar(env, *command)
    assert_clean_failure(
        result, f"cannot reach the server at {env['HANGAR_HOST']} (is `hangar serve` running?)"
    )
    assert result.stdout == ""


def test_host_flag_overrides_hangar_host(env: dict[str, str]) -> None:
    port = closed_port()
    result = hangar(env, "list", "--host", f"127.0.0.1:{port}")
    assert_clean_failure(result, f"at 127.0.0.1:{port} ")
    assert_clean_failure(hangar(env, "list", "--host", str(port)), f"at 127.0.0.1:{port} ")  # a bare port


def test_bad_host(env: dict[str, str]) -> None:
    assert_clean_failure(hangar(env, "list", "--host", "localhost:port"), "invalid host")


def test_create_checks_the_modelfile_before_calling_the_server(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "Modelfile").write_text("FROM base\nFROBNICATE yes\n")
    assert_clean_failure(
        hangar(env, "create", "m", "-f", str(tmp_path / "Modelfile")), "line 2", "FROBNICATE"
    )
    (tmp_path / "Modelfile").write_text("FROM ./missing.gguf\n")
    assert_clean_failure(hangar(env, "create", "m", cwd=tmp_path), "missing.gguf: no such file")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_clean_failure(hangar(env, "create", "m", cwd=empty), "--from BASE or -f MODELFILE")


# ------------------------------------------------------------------------------------------ pieces


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1 KB"),
        (1234, "1.2 KB"),
        (4_661_224_676, "4.7 GB"),
        (13_000_000_000, "13 GB"),
    ],
)
def test_human_size_is_ollamas(n: int, text: str) -> None:
    assert human_size(n) == text


def test_human_time() -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime(2025, 5, 10, 12, 0, tzinfo=UTC)
    assert human_time((now - timedelta(minutes=2)).isoformat(), now=now) == "2 minutes ago"
    assert human_time("2025-05-10T04:58:50.123456789-07:00", now=now) == "About a minute ago"
    assert human_time((now + timedelta(hours=23)).timestamp(), now=now) == "23 hours from now"
    assert human_time("0001-01-01T00:00:00Z", now=now) == "Never"


def test_modelfile_parser() -> None:
    mf = parse_modelfile(
        '# a comment\nfrom llama3.2\nTEMPLATE """{{ .System }}\n{{ .Prompt }}"""\nSYSTEM "be \\"brief\\""\n'
        'PARAMETER temperature 0.7\nPARAMETER num_ctx 4096\nPARAMETER stop <|eot|>\nPARAMETER stop "</s>"\n'
        "LICENSE MIT\nMESSAGE user hello there\nADAPTER ./lora.gguf\n"
    )
    assert mf.base == "llama3.2"
    assert mf.template == "{{ .System }}\n{{ .Prompt }}"
    assert mf.system == 'be "brief"'
    assert mf.parameters == {"temperature": 0.7, "num_ctx": 4096, "stop": ["<|eot|>", "</s>"]}
    assert mf.licenses == ["MIT"]
    assert mf.messages == [{"role": "user", "content": "hello there"}]
    assert mf.adapters == ["./lora.gguf"]
