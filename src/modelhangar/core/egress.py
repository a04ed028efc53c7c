"""Where the server may connect on a client's behalf (pulls and pushes): HANGAR_PULL_FROM.

Checked for every connection a transfer opens, after DNS resolution, on every address the name
resolves to; the transfer then connects to an address checked here, never resolving the name
again (so DNS rebinding between check and connect changes nothing).

* Pull from a registry: with HANGAR_PULL_FROM unset, an admin may pull from anywhere and anyone
  else from any public address. With it set, everyone (admins included) may pull only from a
  host it lists (`host`, `host:port`, a glob such as `*.example.com`, `*`, or a network such as
  `10.0.0.0/8`).
* Push to a registry: no list applies; a non-admin may not push to a non-public address.
* Loopback, private, link-local and other non-public addresses are refused to non-admins unless
  the host or address is listed by name (any entry but a bare `*`).

`is_admin` comes from the caller's actor: today every request is the local admin.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(text: str) -> IPAddress | None:
    try:
        ip = ipaddress.ip_address(text.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_public(ip: IPAddress) -> bool:
    """A globally routable unicast address (not loopback, private, link-local, shared, reserved)."""
    return ip.is_global and not ip.is_multicast


def _glob(text: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(p) for p in text.split("*")))


@dataclass(frozen=True)
class _Entry:
    text: str
    host: re.Pattern[str] | None
    port: re.Pattern[str] | None
    """None: any port."""
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None

    @property
    def names(self) -> bool:
        """Whether the entry names hosts (anything but a bare `*`)."""
        return self.text not in ("*", "*:*")

    def matches(self, host: str, port: int, addresses: Sequence[IPAddress]) -> bool:
        if self.network is not None:
            return bool(addresses) and all(ip in self.network for ip in addresses)
        assert self.host is not None
        if self.port is not None and self.port.fullmatch(str(port)) is None:
            return False
        return self.host.fullmatch(host) is not None


def _entry(text: str) -> _Entry:
    """`host`, `host:port`, `[v6]`, `[v6]:port`, a bare v6 address, a glob, or a network."""
    t = text.strip().lower()
    if "/" in t:
        try:
            return _Entry(t, None, None, ipaddress.ip_network(t, strict=False))
        except ValueError:
            pass
    port: str | None = None
    if t.startswith("["):
        host, _, rest = t[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
    elif t.count(":") == 1:
        host, port = t.split(":")
    else:
        host = t
    return _Entry(t, _glob(host), _glob(port) if port else None)


class EgressRefused(Exception):
    """A transfer may not connect there; the message says why (for the client)."""


@dataclass(frozen=True)
class EgressPolicy:
    """HANGAR_PULL_FROM, parsed once."""

    entries: tuple[_Entry, ...] = ()
    configured: bool = False

    @classmethod
    def from_setting(cls, pull_from: Sequence[str]) -> EgressPolicy:
        return cls(tuple(_entry(p) for p in pull_from if p.strip()), bool(pull_from))

    def check(
        self, host: str, port: int, addresses: Sequence[str], *, is_admin: bool, pull: bool = True
    ) -> None:
        """Raise EgressRefused unless a connection to `host:port` at `addresses` is allowed."""
        name = host.strip("[]").lower().rstrip(".")
        ips = [ip for ip in map(_address, addresses) if ip is not None]
        if len(ips) != len(addresses) or not ips:
            raise EgressRefused(f"registry host {name} has no usable address")
        matched = [e for e in self.entries if e.matches(name, port, ips)]
        if pull and self.configured and not matched:
            raise EgressRefused(f"registry host {name}:{port} is not one HANGAR_PULL_FROM allows")
        if is_admin or any(e.names for e in matched):
            return
        for ip in ips:
            if not is_public(ip):
                raise EgressRefused(
                    f"registry host {name} is at a non-public address; "
                    "only an admin, or HANGAR_PULL_FROM naming it, allows that"
                )
