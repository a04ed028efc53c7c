"""The hangar API answers what its OpenAPI schema says, whatever schemathesis sends it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness import MakeGguf, StartServer


def test_schemathesis_finds_nothing(tmp_path: Path, start_server: StartServer, make_gguf: MakeGguf) -> None:
    pytest.importorskip("schemathesis")
    server = start_server(tmp_path / "home")
    import ollama

    client = ollama.Client(host=server.url)
    path = tmp_path / "m.gguf"
    path.write_bytes(make_gguf(seed=130))
    client.create(model="fodder", files={"m.gguf": client.create_blob(path)})  # something to act on
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{server.url}/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            "25",
            "--seed",
            "11",
            "--generation-database",
            "none",
            "--request-timeout",
            "30",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "passed" in run.stdout


@pytest.mark.parametrize("auth", ["local", "required"])
def test_the_schema_declares_the_token_schemes(tmp_path: Path, start_server: StartServer, auth: str) -> None:
    """Bearer (an API token) and basic auth (a token as the password) for every operation; without a
    token only under HANGAR_AUTH=local (a loopback client is the local admin)."""
    import httpx

    server = start_server(tmp_path / "home", env={"HANGAR_AUTH": auth})
    doc = httpx.get(f"{server.url}/openapi.json").json()  # served without a token in either mode
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearer"]["type"] == "http" and schemes["bearer"]["scheme"] == "bearer"
    assert schemes["basic"]["type"] == "http" and schemes["basic"]["scheme"] == "basic"
    optional = [{}] if auth == "local" else []
    assert doc["security"] == [{"bearer": []}, {"basic": []}, *optional]
