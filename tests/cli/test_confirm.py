"""Store-wide deletes ask first on a terminal (`--yes` skips it); a script (no terminal) is never
asked and keeps working, as ollama#7846 asks of Ollama."""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator
from pathlib import Path

import ollama
import pytest

from harness import ServerProcess, hangar, hangar_json, hangar_tty
from modelhangar.testing.gguf_factory import make_gguf


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("confirm")
    with ServerProcess(root / "home", env={"HANGAR_TRASH_RETENTION": "1h"}) as server:
        yield server


def models(srv: ServerProcess) -> list[str]:
    return sorted(m["model"] for m in hangar_json("list", home=srv.home, host=srv.host))


def trash(srv: ServerProcess) -> list[str]:
    return sorted(e["model"] for e in hangar_json("trash", "list", home=srv.home, host=srv.host))


def create(srv: ServerProcess, tmp_path: Path, *names: str) -> None:
    client = ollama.Client(host=srv.url)
    for i, name in enumerate(names):
        path = tmp_path / f"{i}.gguf"
        path.write_bytes(make_gguf(None, seed=zlib.crc32(name.encode()) % 10_000))
        client.create(model=name, files={"m.gguf": client.create_blob(path)})


@pytest.fixture(autouse=True)
def empty_store(srv: ServerProcess) -> None:
    for name in models(srv):
        hangar("rm", "--purge", name, home=srv.home, host=srv.host)
    hangar("trash", "empty", home=srv.home, host=srv.host)


def test_trash_empty_asks_on_a_terminal(srv: ServerProcess, tmp_path: Path) -> None:
    create(srv, tmp_path, "a", "b")
    assert hangar("rm", "a", "b", home=srv.home, host=srv.host).returncode == 0

    code, shown = hangar_tty("trash", "empty", home=srv.home, host=srv.host, answer="n")
    assert code == 1
    assert "would purge a:latest" in shown and "would purge b:latest" in shown
    assert re.search(r"purge 2 trash entries for good\? \[y/N\]", shown)
    assert "cancelled; nothing was deleted" in shown
    assert trash(srv) == ["a:latest", "b:latest"]

    code, shown = hangar_tty("trash", "empty", home=srv.home, host=srv.host, answer="y")
    assert code == 0, shown
    assert "purged a:latest" in shown and trash(srv) == []


def test_prune_asks_on_a_terminal(srv: ServerProcess, tmp_path: Path) -> None:
    create(srv, tmp_path, "scratch-1", "scratch-2", "keep")
    prune = ("prune", "--keep-last", "0", "--match", "scratch-*")

    code, shown = hangar_tty(*prune, home=srv.home, host=srv.host, answer="")  # Enter: the default, no
    assert code == 1 and "would delete scratch-1:latest" in shown and "delete 2 models? [y/N]" in shown
    assert models(srv) == ["keep:latest", "scratch-1:latest", "scratch-2:latest"]

    code, shown = hangar_tty(*prune, "--dry-run", home=srv.home, host=srv.host)  # a preview never asks
    assert code == 0 and "[y/N]" not in shown

    code, shown = hangar_tty(*prune, home=srv.home, host=srv.host, answer="yes")
    assert code == 0 and "moved scratch-1:latest to trash" in shown
    assert models(srv) == ["keep:latest"]


def test_rm_purge_of_several_models_asks_on_a_terminal(srv: ServerProcess, tmp_path: Path) -> None:
    create(srv, tmp_path, "p", "q", "r")
    code, shown = hangar_tty("rm", "--purge", "p", "q", "nope", home=srv.home, host=srv.host, answer="n")
    assert code == 1 and "delete 2 models for good (no trash)? [y/N]" in shown
    assert 'model "nope:latest" not found' in shown
    assert models(srv) == ["p:latest", "q:latest", "r:latest"]

    code, shown = hangar_tty("rm", "--purge", "r", home=srv.home, host=srv.host)  # one model: no question
    assert code == 0 and "[y/N]" not in shown and "deleted r" in shown

    code, shown = hangar_tty("rm", "--purge", "p", "q", "-y", home=srv.home, host=srv.host)
    assert code == 0 and "[y/N]" not in shown
    assert models(srv) == []


def test_scripts_are_never_asked(srv: ServerProcess, tmp_path: Path) -> None:
    """No terminal on stdin (here /dev/null): the command runs as it always did."""
    create(srv, tmp_path, "s1", "s2", "t1", "t2")
    rm = hangar("rm", "--purge", "s1", "s2", home=srv.home, host=srv.host)
    assert rm.returncode == 0 and "[y/N]" not in rm.stderr + rm.stdout
    prune = hangar("prune", "--keep-last", "0", "--match", "t*", home=srv.home, host=srv.host)
    assert prune.returncode == 0 and "[y/N]" not in prune.stderr
    assert models(srv) == [] and trash(srv) == ["t1:latest", "t2:latest"]
    empty = hangar("trash", "empty", home=srv.home, host=srv.host)
    assert empty.returncode == 0 and "[y/N]" not in empty.stderr
    assert trash(srv) == []
