"""One wording per situation, whatever the command: an invalid name, a missing model, the trash."""

from __future__ import annotations

from modelhangar.cli.errors import CliError
from modelhangar.core.errors import model_not_found, not_in_trash
from modelhangar.core.names import InvalidName, ModelName, parse_name


def model_name(raw: str) -> ModelName:
    """`raw` parsed, or a CliError saying which name is invalid and why."""
    try:
        return parse_name(raw)
    except InvalidName as e:
        raise CliError(e.detail) from e


def shown(raw: str) -> str:
    """Ollama's shortest form of a model name (`tiny` → `tiny:latest`); other text unchanged."""
    try:
        return parse_name(raw).display_shortest()
    except InvalidName:
        return raw


def not_found(raw: str) -> CliError:
    return CliError(model_not_found(shown(raw)))


def trash_miss(ident: str) -> CliError:
    """A trash entry id or model name that the trash does not hold."""
    return CliError(f"{not_in_trash(ident if ident.isdigit() else shown(ident))} (see `hangar trash list`)")
