"""The README and the code say the same thing: every setting, its default, and the config-file keys."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from modelhangar.core.config import KNOBS, OTHER_ENV, ConfigError, load_settings

README = (Path(__file__).parent.parent / "README.md").read_text()


def _config_table() -> dict[str, str]:
    """{variable: default} from the README's configuration table."""
    section = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(HANGAR_[A-Z0-9_]+)` \| `([^`]*)` \|", section, re.M)
    return dict(rows)


def test_the_readme_lists_every_setting_with_its_default() -> None:
    table = _config_table()
    assert set(table) == {k.env for k in KNOBS} | set(OTHER_ENV)
    for knob in KNOBS:
        if knob.default:
            assert table[knob.env] == knob.default, knob.env


def test_every_knob_has_a_config_file_key_and_a_meaning() -> None:
    keys = [k.key for k in KNOBS]
    assert len(set(keys)) == len(keys)
    assert all(k.doc for k in KNOBS)


def test_a_mistyped_key_names_the_file_the_line_and_the_key(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text('[trash]\nretention = "1h"\n\n[gc]\nintervall = "5m"\n')
    with pytest.raises(ConfigError, match=r"config\.toml:5: unknown key 'intervall' in \[gc\]"):
        load_settings({"HANGAR_HOME": str(home)})


def test_a_bad_value_names_the_file_the_line_and_the_key(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text('[gc]\ninterval = "5m"\nupload_expiry = "soon"\n')
    with pytest.raises(ConfigError, match=r"config\.toml:3: gc\.upload_expiry: invalid duration"):
        load_settings({"HANGAR_HOME": str(home)})


def test_a_bad_retention_table_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text(
        '[[retention]]\nmatch = "a*"\nolder_than = "1d"\n[[retention]]\nkeeplast = 2\n'
    )
    with pytest.raises(ConfigError, match=r"config\.toml:5: unknown key 'keeplast' in \[\[retention\]\]"):
        load_settings({"HANGAR_HOME": str(home)})


def test_the_config_file_sets_every_knob_and_the_environment_wins(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text(
        '[gc]\nupload_expiry = "2h"\nreuse_fuse = "5s"\n[trash]\nretention = "3h"\n[server]\nhost = "9999"\n'
    )
    s = load_settings({"HANGAR_HOME": str(home), "HANGAR_TRASH_RETENTION": "0"})
    assert (s.upload_expiry, s.reuse_fuse, s.trash_retention) == (7200.0, 5.0, 0.0)
    assert (s.host, s.port) == ("127.0.0.1", 9999)


def test_the_reuse_fuse_is_at_most_a_minute(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="HANGAR_REUSE_FUSE: the reuse fuse is at most 60s"):
        load_settings({"HANGAR_HOME": str(tmp_path), "HANGAR_REUSE_FUSE": "5m"})


def test_set_up_is_two_commands_and_ci_runs_the_readmes_test_command() -> None:
    section = README.split("## Set up and run", 1)[1].split("\n## ", 1)[0]
    install, test = re.findall(r"```sh\n(.*?)\n```", section, re.S)
    venv = "python3 -m venv .venv && . .venv/bin/activate && python3 -m pip install -e "
    assert install.startswith(venv) and install.endswith(" && hangar serve")  # Debian: no global pip
    assert test.startswith(venv) and test.endswith("'.[test]' && python3 -m pytest")
    ci = (Path(__file__).parent.parent / ".ci" / "run").read_text()
    assert test in ci.replace(" -q", ""), ".ci/run must run the README's test command"
