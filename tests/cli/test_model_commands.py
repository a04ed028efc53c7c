"""What model commands say when a name is invalid, a model is missing or in the trash, and how
`trash restore --as` gets a model back whose name was taken again."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import pytest

from harness import ServerProcess, hangar, hangar_json
from modelhangar.testing.gguf_factory import make_gguf

INVALID = (
    'invalid model name "../bad": the namespace part may only hold letters, digits, "_" and "-", '
    'start with a letter, digit or "_", and be at most 80 characters'
)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("model-commands")
    with ServerProcess(root / "home", env={"HANGAR_TRASH_RETENTION": "1h"}) as server:
        gguf = root / "tiny.gguf"
        gguf.write_bytes(make_gguf(None, seed=41))
        client = ollama.Client(host=server.url)
        client.create(model="tiny", files={"m.gguf": client.create_blob(gguf)})
        yield server


def run(srv: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return hangar(*args, home=srv.home, host=srv.host)


def said(proc: subprocess.CompletedProcess[str]) -> str:
    """The error a failed command printed: its one `hangar: ` line on stderr (after any progress
    a push showed), or `rm`'s line for the model on stdout."""
    assert proc.returncode == 1, proc
    assert "Traceback" not in proc.stderr
    if not proc.stderr:
        [line] = proc.stdout.strip().splitlines()
        return line
    [line] = [x for x in proc.stderr.splitlines() if x.startswith("hangar: ")]
    assert proc.stderr.strip().endswith(line)
    return line.removeprefix("hangar: ")


def commands(name: str, tmp: Path) -> dict[str, list[str]]:
    """Commands naming a model that must exist here."""
    return {
        "show": ["show", name],
        "cp": ["cp", name, "other"],
        "rm": ["rm", name],
        "create --from": ["create", "new", "--from", name],
        "push": ["push", name],
        "push (to DEST)": ["push", name, "127.0.0.1:1/ns/x"],
        "export-ollama": ["export-ollama", str(tmp / "out"), name],
    }


@pytest.mark.parametrize("command", list(commands("x", Path())))
def test_a_missing_model_is_worded_alike_by_every_command(
    srv: ServerProcess, tmp_path: Path, command: str
) -> None:
    assert said(run(srv, *commands("nope", tmp_path)[command])) == 'model "nope:latest" not found'


INVALID_NAME_RUNS = {
    "create": ["create", "../bad", "--from", "tiny"],
    "cp (to)": ["cp", "tiny", "../bad"],
    "push (bad DEST)": ["push", "tiny", "../bad"],
    "pull": ["pull", "../bad"],
    "trash restore": ["trash", "restore", "../bad"],
    "trash restore --as": ["trash", "restore", "tiny", "--as", "../bad"],
}


@pytest.mark.parametrize(
    "command", [*(c for c in commands("x", Path()) if c != "create --from"), *INVALID_NAME_RUNS]
)
def test_an_invalid_name_says_which_and_why(srv: ServerProcess, tmp_path: Path, command: str) -> None:
    args = {**commands("../bad", tmp_path), **INVALID_NAME_RUNS}[command]
    assert said(run(srv, *args)) == INVALID


def test_modelhangars_api_words_them_alike(srv: ServerProcess) -> None:
    doc = httpx.post(f"{srv.url}/api/hangar/delete", json={"models": ["nope", "../bad"]}).json()
    assert [r["error"] for r in doc["results"]] == ['model "nope:latest" not found', INVALID]
    missing = httpx.post(f"{srv.url}/api/hangar/trash/restore", json={"model": "nope"})
    assert missing.status_code == 404 and missing.json() == {
        "detail": 'model "nope:latest" is not in the trash'
    }
    assert said(run(srv, "trash", "restore", "nope")).startswith('model "nope:latest" is not in the trash')
    assert said(run(srv, "trash", "restore", "12345")).startswith("no trash entry 12345")
    # Ollama's own API keeps Ollama's wording, which its clients show
    with pytest.raises(ollama.ResponseError, match="model 'nope' not found"):
        ollama.Client(host=srv.url).delete("nope")


def test_show_of_a_trashed_model_says_how_to_restore_it(srv: ServerProcess) -> None:
    assert run(srv, "cp", "tiny", "gone").returncode == 0
    assert run(srv, "rm", "gone").returncode == 0
    line = said(run(srv, "show", "gone"))
    assert re.fullmatch(
        r'model "gone:latest" is in the trash \(deleted (Less than a second|\d+ seconds?) ago\); '
        r"restore it with: hangar trash restore gone:latest",
        line,
    ), line
    assert run(srv, *line.split("restore it with: hangar ")[1].split()).returncode == 0
    assert run(srv, "show", "gone").returncode == 0


def test_restore_as_a_new_name_when_the_old_one_is_taken(srv: ServerProcess) -> None:
    assert run(srv, "cp", "tiny", "taken").returncode == 0
    old = hangar_json("show", "taken", home=srv.home, host=srv.host)
    assert run(srv, "rm", "taken").returncode == 0
    assert run(srv, "cp", "tiny", "taken").returncode == 0  # the name is taken again

    assert said(run(srv, "trash", "restore", "taken")) == (
        'model "taken:latest" exists again; restore it under another name with: '
        "hangar trash restore taken:latest --as NEWNAME (or delete or rename the new one)"
    )
    assert said(run(srv, "trash", "restore", "taken", "--as", "tiny")) == (
        'model "tiny:latest" exists; choose another name'
    )
    done = run(srv, "trash", "restore", "taken", "--as", "taken-old")
    assert done.returncode == 0 and done.stdout.strip() == "restored taken-old:latest"
    back = hangar_json("show", "taken-old", home=srv.home, host=srv.host)
    back.pop("modelfile"), old.pop("modelfile")  # (its FROM line names the model)
    assert back == old

    assert run(srv, "rm", "taken-old").returncode == 0
    api = httpx.post(f"{srv.url}/api/hangar/trash/restore", json={"model": "taken-old", "as": "ns/back:v1"})
    assert api.status_code == 200 and api.json()["restored"] == "ns/back:v1"
    names = {m["model"] for m in hangar_json("list", home=srv.home, host=srv.host)}
    assert {"taken:latest", "ns/back:v1"} <= names and "taken-old:latest" not in names
