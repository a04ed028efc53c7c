"""Table and property tests for the digest validator (the CVE-2024-37032 guard)."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from modelhangar.core.digests import (
    Digest,
    InvalidDigest,
    is_valid_digest,
    parse_digest,
    sha256_digest,
)
from modelhangar.core.errors import HangarError

HEX = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"  # sha256 of b""
_HEXDIGITS = "0123456789abcdef"


def _oracle(s: str) -> bool:
    """The accepted language, restated without regular expressions."""
    return len(s) == 71 and s[:7] in ("sha256:", "sha256-") and all(c in _HEXDIGITS for c in s[7:])


VALID = [
    "sha256:" + HEX,
    "sha256-" + HEX,
    "sha256:" + "0" * 64,
    "sha256-" + "f" * 64,
]

INVALID = [
    "",
    "sha256:",
    "sha256-",
    HEX,
    "sha256:" + HEX[:-1],
    "sha256:" + HEX + "0",
    "sha256:" + HEX.upper(),
    "sha256:" + HEX[:-1] + "A",
    "SHA256:" + HEX,
    "Sha256-" + HEX,
    "sha512:" + HEX + HEX,
    "sha256_" + HEX,
    "sha256" + HEX,
    "sha256::" + HEX,
    "sha256:-" + HEX,
    "sha256:" + "g" * 64,
    "sha256:" + HEX + "\n",
    "sha256:" + HEX + "\r\n",
    "sha256:" + HEX + "\x00",
    "sha256:" + HEX + " ",
    " sha256:" + HEX,
    "\nsha256:" + HEX,
    "sha256: " + HEX[1:],
    "sha256-" + HEX + "-partial",
    "sha256-" + HEX + "-partial-0",
    "sha256:" + HEX + "/../x",
    "../../etc/passwd",
    "sha256:../../../../etc/passwd",
    "sha256-../" + HEX[3:],
    "sha256:" + HEX[:60] + "/../",
    "sha256:" + HEX[:62] + "..",
    "sha256:" + "\uff10" * 64,
    "sha256:" + "٠" * 64,
    "sha256@" + HEX,
]


@pytest.mark.parametrize("s", VALID)
def test_valid(s: str) -> None:
    d = parse_digest(s)
    assert d.algorithm == "sha256"
    assert d.hex == s[7:]
    assert str(d) == "sha256:" + s[7:]
    assert d.filename == "sha256-" + s[7:]
    assert is_valid_digest(s)
    assert parse_digest(str(d)) == d
    assert parse_digest(d.filename) == d


@pytest.mark.parametrize("s", INVALID, ids=[repr(s)[:30] for s in INVALID])
def test_invalid(s: str) -> None:
    assert not _oracle(s)
    with pytest.raises(InvalidDigest) as info:
        parse_digest(s)
    assert str(info.value) == "invalid digest format"
    assert info.value.raw == s
    assert not is_valid_digest(s)


def test_invalid_digest_is_a_value_error_and_a_hangar_error() -> None:
    with pytest.raises(ValueError):
        parse_digest("nope")
    with pytest.raises(HangarError):
        parse_digest("nope")


def test_non_string_is_invalid() -> None:
    for bad in (None, 3, b"sha256:" + HEX.encode()):
        with pytest.raises(InvalidDigest):
            parse_digest(bad)  # type: ignore[arg-type]
        assert not is_valid_digest(bad)  # type: ignore[arg-type]


def test_parse_digest_passes_a_digest_through() -> None:
    d = parse_digest("sha256:" + HEX)
    assert parse_digest(d) is d


def test_constructor_validates() -> None:
    assert Digest("sha256", HEX) == parse_digest("sha256-" + HEX)
    for algorithm, hexpart in [("sha512", HEX), ("sha256", HEX.upper()), ("sha256", "../x"), ("sha256", "")]:
        with pytest.raises(InvalidDigest):
            Digest(algorithm, hexpart)


def test_digest_is_frozen_hashable_and_ordered() -> None:
    a, b = Digest("sha256", "0" * 64), Digest("sha256", "f" * 64)
    assert a < b
    assert len({a, parse_digest("sha256-" + "0" * 64), b}) == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.hex = HEX  # type: ignore[misc]


def test_sha256_digest() -> None:
    assert sha256_digest(b"") == parse_digest("sha256:" + HEX)
    data = b"hello, hangar"
    assert sha256_digest(data).hex == hashlib.sha256(data).hexdigest()
    assert sha256_digest(bytearray(data)) == sha256_digest(memoryview(data)) == sha256_digest(data)


# ---------------------------------------------------------------- properties

_valid = st.from_regex(r"sha256[:-][0-9a-f]{64}", fullmatch=True)
_near_misses = st.builds(
    lambda prefix, body, suffix: prefix + body + suffix,
    st.sampled_from(["sha256:", "sha256-", "SHA256:", "sha256", "sha256::", "sha512:", "", " sha256:"]),
    st.text(alphabet="0123456789abcdefABCDEFg./\\\n\x00-", min_size=60, max_size=68),
    st.sampled_from(["", "\n", "\r\n", "\x00", " ", "/..", "-partial"]),
)
_candidates = st.one_of(_valid, _near_misses, st.text(max_size=80))


@given(_candidates)
@example("sha256:" + HEX + "\n")
@example("sha256:" + HEX.upper())
def test_accepts_exactly_the_language(s: str) -> None:
    assert is_valid_digest(s) is _oracle(s)
    try:
        d = parse_digest(s)
    except InvalidDigest:
        assert not _oracle(s)
        return
    assert _oracle(s)
    assert "/" not in d.filename
    assert "\\" not in d.filename
    assert ".." not in d.filename
    assert "\x00" not in d.filename
    assert _oracle(d.filename)
    assert _oracle(str(d))


@given(st.binary(max_size=256))
def test_sha256_digest_is_always_valid(data: bytes) -> None:
    d = sha256_digest(data)
    assert parse_digest(str(d)) == d
    assert parse_digest(d.filename) == d
