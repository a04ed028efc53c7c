"""A minimal Modelfile parser: FROM, ADAPTER, TEMPLATE, SYSTEM, PARAMETER, LICENSE, MESSAGE."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelhangar.cli.errors import CliError

LIST_PARAMETERS = {"stop"}
MESSAGE_ROLES = ("system", "user", "assistant", "tool")
_WORD = re.compile(r"[ \t]*(\S+)[ \t]*")
_PATHLIKE = (".gguf", ".bin", ".safetensors")


@dataclass
class Modelfile:
    base: str | None = None
    adapters: list[str] = field(default_factory=list)
    template: str | None = None
    system: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    licenses: list[str] = field(default_factory=list)
    messages: list[dict[str, str]] = field(default_factory=list)


class ModelfileError(CliError):
    pass


def _scalar(text: str) -> Any:
    """A parameter value as JSON would hold it: int, float, bool or string."""
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def _unescape(text: str) -> str:
    return re.sub(r'\\(["\\])', r"\1", text)


def _value(text: str, start: int, line_end: int, lineno: int) -> tuple[str, int]:
    """The value starting at `start`: `\"\"\"multi-line\"\"\"`, `"quoted"` or the rest of the line."""
    if text.startswith('"""', start):
        close = text.find('"""', start + 3)
        if close < 0:
            raise ModelfileError(f'line {lineno}: unterminated """')
        after = text.find("\n", close + 3)
        after = len(text) if after < 0 else after
        if text[close + 3 : after].strip():
            raise ModelfileError(f'line {lineno}: unexpected text after closing """')
        return text[start + 3 : close], after
    if text.startswith('"', start):
        m = re.compile(r'"((?:[^"\\\n]|\\.)*)"[ \t\r]*$').match(text, start, line_end)
        if m is None:
            raise ModelfileError(f"line {lineno}: unterminated quoted value")
        return _unescape(m.group(1)), line_end
    return text[start:line_end].strip(), line_end


def parse_modelfile(text: str) -> Modelfile:
    """Parse Modelfile text; errors name the line."""
    mf = Modelfile()
    pos = 0
    while pos < len(text):
        lineno = text.count("\n", 0, pos) + 1
        line_end = text.find("\n", pos)
        line_end = len(text) if line_end < 0 else line_end
        line = text[pos:line_end].strip()
        if not line or line.startswith("#"):
            pos = line_end + 1
            continue
        m = _WORD.match(text, pos, line_end)
        assert m is not None
        command = m.group(1).upper()
        start = m.end()
        key = ""
        if command in ("PARAMETER", "MESSAGE"):
            km = _WORD.match(text, start, line_end)
            if km is None:
                raise ModelfileError(f"line {lineno}: {command} needs a name and a value")
            key, start = km.group(1), km.end()
        value, end = _value(text, start, line_end, lineno)
        _apply(mf, command, key, value, lineno)
        pos = end + 1
    if mf.base is None:
        raise ModelfileError("no FROM line: name a base model or a .gguf file")
    return mf


def _apply(mf: Modelfile, command: str, key: str, value: str, lineno: int) -> None:
    if not value and command not in ("SYSTEM", "TEMPLATE", "MESSAGE"):
        raise ModelfileError(f"line {lineno}: {command} needs a value")
    if command == "FROM":
        mf.base = value
    elif command == "ADAPTER":
        mf.adapters.append(value)
    elif command == "TEMPLATE":
        mf.template = value
    elif command == "SYSTEM":
        mf.system = value
    elif command == "LICENSE":
        mf.licenses.append(value)
    elif command == "PARAMETER":
        name = key.lower()
        if name in LIST_PARAMETERS:
            mf.parameters.setdefault(name, []).append(value)
        else:
            mf.parameters[name] = _scalar(value)
    elif command == "MESSAGE":
        role = key.lower()
        if role not in MESSAGE_ROLES:
            raise ModelfileError(f"line {lineno}: MESSAGE role must be one of {', '.join(MESSAGE_ROLES)}")
        mf.messages.append({"role": role, "content": value})
    else:
        raise ModelfileError(f"line {lineno}: unknown command {command}")


def local_file(value: str, relative_to: Path) -> Path | None:
    """The local file a FROM/ADAPTER value names; None for a model name; errors for a missing path."""
    raw = Path(value).expanduser()
    path = raw if raw.is_absolute() else relative_to / raw
    if path.is_file():
        return path
    if path.is_dir():
        raise ModelfileError(
            f"{value} is a directory: modelhangar stores GGUF files and does not convert models"
        )
    looks_like_path = value.startswith(("/", "./", "../", "~", ".\\")) or value.lower().endswith(_PATHLIKE)
    if looks_like_path:
        raise ModelfileError(f"{value}: no such file")
    return None
