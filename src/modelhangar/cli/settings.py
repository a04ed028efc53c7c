"""Settings for the CLI: HANGAR_* from the environment, checked one variable at a time, then flags."""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path

from modelhangar.core.config import Settings, load_settings, parse_duration, parse_host


def duration(text: str) -> float:
    """An argparse type: `30m`, `24h`, `7d`, `0` into seconds."""
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def host_port(text: str) -> tuple[str, int]:
    """An argparse type: `HOST:PORT`, `:PORT` or `HOST` into (host, port)."""
    try:
        host, port = parse_host(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"invalid host {text!r}: use HOST:PORT, e.g. 127.0.0.1:11435") from e
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"invalid port in {text!r}")
    return host, port


def settings_from_env(data_dir: str | None = None) -> Settings:
    """load_settings(), with a bad variable named in the error, and `--data-dir` applied."""
    from modelhangar.cli.errors import CliError

    if (value := os.environ.get("HANGAR_HOST")) is not None:
        try:
            host_port(value)
        except argparse.ArgumentTypeError as e:
            raise CliError(f"HANGAR_HOST: {e}") from e
    try:
        settings = load_settings()
    except ValueError as e:
        raise CliError(f"invalid setting: {e}") from e
    if data_dir is not None:
        settings = settings.with_home(Path(data_dir).expanduser().absolute())
    return settings


def with_host(settings: Settings, host: tuple[str, int] | None) -> Settings:
    return settings if host is None else replace(settings, host=host[0], port=host[1])


def duration_text(text: str) -> str:
    """A duration argument checked here but sent to the server as the user wrote it."""
    duration(text)
    return text
