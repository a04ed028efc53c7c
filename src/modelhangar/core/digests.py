"""Blob digests: the one validator for `sha256:<hex>` / `sha256-<hex>` strings (CVE-2024-37032 safe)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from modelhangar.core.errors import HangarError

__all__ = [
    "DIGEST_PATTERN",
    "Digest",
    "InvalidDigest",
    "is_valid_digest",
    "parse_digest",
    "sha256_digest",
]

# Stricter than Ollama's `^sha256[:-][0-9a-fA-F]{64}$`: lowercase hex only, so one blob has one file name.
DIGEST_PATTERN = r"sha256[:-][0-9a-f]{64}"
_DIGEST_RE = re.compile(DIGEST_PATTERN)
_HEX_RE = re.compile(r"[0-9a-f]{64}")


class InvalidDigest(HangarError, ValueError):
    """A string is not `sha256:<64 lowercase hex>` or `sha256-<64 lowercase hex>`."""

    def __init__(self, raw: str) -> None:
        self.raw = raw
        super().__init__("invalid digest format")


@dataclass(frozen=True, order=True, slots=True)
class Digest:
    """A validated sha256 digest; `str()` gives `sha256:<hex>`, `.filename` gives `sha256-<hex>`."""

    algorithm: str
    hex: str

    def __post_init__(self) -> None:
        if self.algorithm != "sha256" or not isinstance(self.hex, str) or not _HEX_RE.fullmatch(self.hex):
            raise InvalidDigest(f"{self.algorithm}:{self.hex}")

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    @property
    def filename(self) -> str:
        """Ollama's blob file name: the digest with `:` replaced by `-`."""
        return f"{self.algorithm}-{self.hex}"


def parse_digest(s: str | Digest) -> Digest:
    """Parse `sha256:<hex>` or `sha256-<hex>` (64 lowercase hex, nothing else); raise InvalidDigest."""
    if isinstance(s, Digest):
        return s
    if not isinstance(s, str) or not _DIGEST_RE.fullmatch(s):
        raise InvalidDigest(s if isinstance(s, str) else repr(s))
    return Digest("sha256", s[7:])


def is_valid_digest(s: str) -> bool:
    """Whether `parse_digest(s)` would succeed."""
    return isinstance(s, str) and _DIGEST_RE.fullmatch(s) is not None


def sha256_digest(data: bytes | bytearray | memoryview) -> Digest:
    """The sha256 digest of `data`."""
    return Digest("sha256", hashlib.sha256(data).hexdigest())
