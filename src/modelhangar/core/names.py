"""The one parser for model references, following Ollama's `types/model/name.go` rules."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from modelhangar.core.errors import HangarError

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_NAMESPACE",
    "DEFAULT_TAG",
    "NAME_PATTERN",
    "InvalidName",
    "ModelName",
    "PartKind",
    "display_repository",
    "display_stored",
    "is_valid_name",
    "is_valid_part",
    "parse_name",
    "parse_name_from_filepath",
]

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"

PartKind = Literal["host", "namespace", "model", "tag"]
_KINDS: tuple[PartKind, ...] = ("host", "namespace", "model", "tag")

# Explicit ASCII classes (never \w or \d, which match non-ASCII letters and digits).
_PART_RES: dict[PartKind, re.Pattern[str]] = {
    "host": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,349}"),
    "namespace": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,79}"),
    "model": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}"),
    "tag": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}"),
}
_RULES: dict[str, str] = {  # by PartKind: what `_PART_RES` allows, in words
    "host": '"_", ".", ":" and "-", start with a letter, digit or "_", and be at most 350 characters',
    "namespace": '"_" and "-", start with a letter, digit or "_", and be at most 80 characters',
    "model": '"_", "." and "-", start with a letter, digit or "_", and be at most 80 characters',
    "tag": '"_", "." and "-", start with a letter, digit or "_", and be at most 80 characters',
}
NAME_PATTERN = (
    r"^(?:(?:[A-Za-z0-9_][A-Za-z0-9_.:-]{0,349}/)?[A-Za-z0-9_][A-Za-z0-9_-]{0,79}/)?"
    r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,79})?$"
)
"""A model name without a scheme, as a regular expression (for schemas): what matches it parses."""
# RFC 3986 scheme; Ollama does not check it, we refuse junk such as an empty scheme.
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,31}")


class InvalidName(HangarError, ValueError):
    """A model reference is not a valid Ollama name; `raw` is the input, `reason` says why."""

    def __init__(self, raw: str, reason: str = "invalid") -> None:
        self.raw = raw
        self.reason = reason
        super().__init__("invalid model name")

    @property
    def detail(self) -> str:
        """`invalid model name "x": why`: the wording every command and modelhangar's own API use."""
        kind = self.reason.removeprefix("invalid ")
        rule = _RULES.get(kind)
        why = f"the {kind} part may only hold letters, digits, {rule}" if rule else self.reason
        return f'invalid model name "{self.raw}": {why}'


def is_valid_part(kind: PartKind, s: str) -> bool:
    """Whether `s` is a valid `kind` part (characters and length as in Ollama's `isValidPart`)."""
    return isinstance(s, str) and _PART_RES[kind].fullmatch(s) is not None


@dataclass(frozen=True, slots=True)
class ModelName:
    """A fully qualified, valid model name; case is preserved, use `key()` to compare case-insensitively."""

    host: str
    namespace: str
    model: str
    tag: str
    # The `scheme://` the reference was written with (e.g. "http"), if any; not part of equality.
    scheme: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        raw = f"{self.host}/{self.namespace}/{self.model}:{self.tag}"
        for kind in _KINDS:
            if not is_valid_part(kind, getattr(self, kind)):
                raise InvalidName(raw, f"invalid {kind}")
        if self.scheme is not None and not (
            isinstance(self.scheme, str) and _SCHEME_RE.fullmatch(self.scheme)
        ):
            raise InvalidName(raw, "invalid scheme")

    def __str__(self) -> str:
        return self.display_long()

    def display_shortest(self) -> str:
        """Ollama's `DisplayShortest`: omit the default host and namespace (any case); keep the tag."""
        if self.host.lower() != DEFAULT_HOST:
            return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"
        if self.namespace.lower() != DEFAULT_NAMESPACE:
            return f"{self.namespace}/{self.model}:{self.tag}"
        return f"{self.model}:{self.tag}"

    def display_long(self) -> str:
        """`host/namespace/model:tag`."""
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    @property
    def repository(self) -> str:
        """`host/namespace/model` (the name without its tag)."""
        return f"{self.host}/{self.namespace}/{self.model}"

    def key(self) -> tuple[str, str, str, str]:
        """Lower-cased (host, namespace, model, tag), for case-insensitive matching."""
        return (self.host.lower(), self.namespace.lower(), self.model.lower(), self.tag.lower())

    def filepath_parts(self) -> tuple[str, str, str, str]:
        """(host, namespace, model, tag) as stored: Ollama's `manifests/<host>/<namespace>/<model>/<tag>`."""
        return (self.host, self.namespace, self.model, self.tag)


def _split(raw: str) -> tuple[str | None, str | None, str | None, str, str | None]:
    """Ollama's `ParseNameBare`: (scheme, host, namespace, model, tag); None where not given."""
    s = raw
    tag: str | None = None
    if s.rfind(":") > s.rfind("/"):
        s, _, tag = s.rpartition(":")
        if not tag:
            raise InvalidName(raw, "empty tag")
        if not s:
            raise InvalidName(raw, "empty model")

    rest, sep, model = s.rpartition("/")
    if not sep:
        return None, None, None, s, tag
    if not model:
        raise InvalidName(raw, "empty model")
    if not rest:
        raise InvalidName(raw, "empty namespace")

    rest, sep, namespace = rest.rpartition("/")
    if not sep:
        return None, None, namespace, model, tag
    if not namespace:
        raise InvalidName(raw, "empty namespace")
    if not rest:
        raise InvalidName(raw, "empty host")

    scheme: str | None
    scheme, sep, host = rest.partition("://")
    if not sep:
        scheme, host = None, rest
    elif not host:
        raise InvalidName(raw, "empty host")
    return scheme, host, namespace, model, tag


def parse_name(s: str) -> ModelName:
    """Parse a model reference, filling Ollama's defaults; raise InvalidName unless the result is valid."""
    if not isinstance(s, str):
        raise InvalidName(repr(s), "not a string")
    if not s or s.isspace():
        raise InvalidName(s, "empty name")
    scheme, host, namespace, model, tag = _split(s)
    parts: dict[PartKind, str] = {
        "host": host or DEFAULT_HOST,
        "namespace": namespace or DEFAULT_NAMESPACE,
        "model": model,
        "tag": tag or DEFAULT_TAG,
    }
    for kind, part in parts.items():
        if not is_valid_part(kind, part):
            raise InvalidName(s, f"invalid {kind}")
    if scheme is not None and not _SCHEME_RE.fullmatch(scheme):
        raise InvalidName(s, "invalid scheme")
    return ModelName(parts["host"], parts["namespace"], parts["model"], parts["tag"], scheme)


def parse_name_from_filepath(parts: Sequence[str]) -> ModelName:
    """Ollama's `ParseNameFromFilepath`: exactly four valid parts (host, namespace, model, tag)."""
    if isinstance(parts, str):
        raise TypeError("parse_name_from_filepath wants a sequence of four parts, not a string")
    parts = tuple(parts)
    raw = "/".join(str(p) for p in parts)
    if len(parts) != 4:
        raise InvalidName(raw, "a manifest path needs exactly four parts")
    host, namespace, model, tag = parts
    try:
        return ModelName(host, namespace, model, tag)
    except InvalidName as exc:
        raise InvalidName(raw, exc.reason) from None


def is_valid_name(s: str) -> bool:
    """Whether `parse_name(s)` would succeed."""
    try:
        parse_name(s)
    except InvalidName:
        return False
    return True


_LIBRARY = f"{DEFAULT_HOST}/{DEFAULT_NAMESPACE}/"
_STORED_RE = re.compile(
    rf"({_PART_RES['host'].pattern})/({_PART_RES['namespace'].pattern})/({_PART_RES['model'].pattern})"
)


def display_stored(repository: str, tag: str) -> str | None:
    """`display_shortest()` of a stored `host/namespace/model` and tag, None if they are no valid name.

    The same answer as `parse_name(f"{repository}:{tag}")` gives for them, at a fraction of its cost
    (listings call it once per model).
    """
    if _PART_RES["tag"].fullmatch(tag) is None:
        return None
    if repository.startswith(_LIBRARY):  # the common case: `registry.ollama.ai/library/<model>`
        start = len(_LIBRARY)
        return f"{repository[start:]}:{tag}" if _PART_RES["model"].fullmatch(repository, start) else None
    m = _STORED_RE.fullmatch(repository)
    if m is None:
        return None
    host, namespace, model = m.groups()
    if host.lower() != DEFAULT_HOST:
        return f"{repository}:{tag}"
    if namespace.lower() != DEFAULT_NAMESPACE:
        return f"{namespace}/{model}:{tag}"
    return f"{model}:{tag}"


def display_repository(repository: str) -> str:
    """A stored `host/namespace/model` in its shortest form (`tiny`, `ns/model`), else as stored."""
    shown = display_stored(repository, DEFAULT_TAG)
    return shown.rsplit(":", 1)[0] if shown is not None else repository
