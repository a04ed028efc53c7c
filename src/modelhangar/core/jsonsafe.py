"""The one JSON reader for untrusted bytes: request bodies, manifests, config blobs.

`json.loads` alone lets hostile input through in three ways: nesting deep enough to raise
RecursionError (here, or later in whatever walks the value), lone UTF-16 surrogates (`"\\ud800"`)
that make every later `.encode()` fail, and NaN/Infinity, which are not JSON. `loads` refuses
all three, and anything larger than a caller's limit, with `InvalidJSON` (a ValueError).
"""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

from modelhangar.core import errors

T = TypeVar("T")

MAX_DEPTH = 100
"""Deepest nesting of arrays and objects accepted (real requests and manifests need under 10)."""

_ANY_ESCAPE = re.compile(rb"\\.", re.S)
_ESCAPE = re.compile(rb"\\(u[0-9a-fA-F]{4}|.)", re.S)
_PARENS = bytes.maketrans(b"[{]}", b"(())")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


class InvalidJSON(ValueError):
    """The bytes are not JSON this server accepts; the message says why, without echoing them."""


class TooLarge(InvalidJSON, errors.TooLarge):
    """The document is longer than the caller's limit."""

    def __init__(self, limit: int) -> None:
        errors.TooLarge.__init__(self, limit, "JSON document")


def _refuse_constant(name: str) -> Any:
    raise InvalidJSON(f"{name} is not JSON")


def _depth(data: bytes | bytearray) -> int:
    """How deep brackets outside strings nest, counted up to MAX_DEPTH + 1, in a few C-speed passes."""
    if data.count(b"[") + data.count(b"{") <= MAX_DEPTH:
        return 0
    if b"\\" in data:
        data = _ANY_ESCAPE.sub(b"", data)  # no escaped quote is left to end a string early
    outside = b"".join(bytes(data).split(b'"')[0::2])
    brackets = outside.translate(_PARENS, _NOT_BRACKETS)
    depth = 0
    while b"()" in brackets and depth <= MAX_DEPTH:  # each pass peels the innermost level
        brackets = brackets.replace(b"()", b"")
        depth += 1
    return depth


def _check_surrogates(data: bytes | bytearray) -> None:
    """Refuse `\\uD8xx` not followed by `\\uDCxx`, and `\\uDCxx` not preceded by one."""
    if b"\\u" not in data and b"\\U" not in data:
        return
    high_end = -1  # where the last unpaired high surrogate escape ended
    for m in _ESCAPE.finditer(data):
        esc = m.group(1)
        unit = int(esc[1:], 16) if len(esc) == 5 else None
        if high_end >= 0:
            if m.start() == high_end and unit is not None and 0xDC00 <= unit <= 0xDFFF:
                high_end = -1
                continue
            raise InvalidJSON("a lone UTF-16 surrogate is not text")
        if unit is None:
            continue
        if 0xD800 <= unit <= 0xDBFF:
            high_end = m.end()
        elif 0xDC00 <= unit <= 0xDFFF:
            raise InvalidJSON("a lone UTF-16 surrogate is not text")
    if high_end >= 0:
        raise InvalidJSON("a lone UTF-16 surrogate is not text")


def loads(data: bytes | bytearray | str, *, limit: int | None = None) -> Any:
    """The JSON value in `data` (UTF-8), refusing oversized, too deep or non-text input."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    if limit is not None and len(data) > limit:
        raise TooLarge(limit)
    try:
        text = data.decode("utf-8")  # strict: raw surrogates and invalid UTF-8 are refused here
    except UnicodeDecodeError:
        raise InvalidJSON("not UTF-8") from None
    if _depth(data) > MAX_DEPTH:
        raise InvalidJSON(f"nested deeper than {MAX_DEPTH} levels")
    _check_surrogates(data)
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:  # unbalanced input the depth check does not count
        raise InvalidJSON(f"nested deeper than {MAX_DEPTH} levels") from None
    except InvalidJSON:
        raise
    except ValueError as e:  # JSONDecodeError (position only), or an integer too long to convert
        message = str(e) if isinstance(e, json.JSONDecodeError) else "a number too long"
        raise InvalidJSON(message) from None


def loads_as(data: bytes | bytearray | str, kind: type[T], default: T) -> T:
    """The JSON value in `data` if it is valid and a `kind` (dict, list...), else `default`."""
    try:
        value = loads(data)
    except InvalidJSON:
        return default
    return value if isinstance(value, kind) else default
