"""Which address a client connects from, when a reverse proxy may stand in between.

Behind a proxy every socket comes from the proxy's address, and the client's is in the
``X-Forwarded-For`` header: each proxy on the way *appends* the address it was reached
from (nginx's ``$proxy_add_x_forwarded_for``, Caddy, Traefik). Whatever a client writes
into the header itself stands to the left of that. So only the right end can be
believed, and only when it was written by a proxy the operator runs: the relay takes the
header only from ``trusted_proxies``, and walks it from the right past those proxies'
own addresses; the first address that is not one of them is the client.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["IPV6_CLIENT_PREFIX", "Proxies", "counted_as", "parse_networks"]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: Iterable[str]) -> tuple[list[_Network], list[str]]:
    """Addresses or ranges (``10.0.0.0/8``, ``::1``) as networks, and the entries that
    are neither. An IPv4 range written as IPv6 (``::ffff:198.51.100.0/120``, as ``ss`` and
    a dual-stack socket show IPv4 clients) is the IPv4 range: clients are compared as
    IPv4 (:func:`_ip`), so the IPv6 form would match nobody."""
    networks: list[_Network] = []
    bad: list[str] = []
    for entry in entries:
        try:
            networks.append(_unmapped(ipaddress.ip_network(entry.strip(), strict=False)))
        except ValueError:
            bad.append(entry)
    return networks, bad


_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def _unmapped(network: _Network) -> _Network:
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_MAPPED):
        first = network.network_address.ipv4_mapped
        assert first is not None
        return ipaddress.IPv4Network(f"{first}/{network.prefixlen - 96}")
    return network


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [2001:db8::1]:443
        text = text[1 : text.index("]")]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


IPV6_CLIENT_PREFIX = 64
"""An IPv6 client's own network: providers route a whole /64 (or more) to one customer,
who may take a fresh address in it for every connection."""


def counted_as(address: str) -> str:
    """Who a client address is for per-address limits: an IPv4 address itself, an IPv6
    address its /64 (anything else as it is)."""
    ip = _ip(address)
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network(f"{ip}/{IPV6_CLIENT_PREFIX}", strict=False))
    return str(ip) if ip is not None else address


@dataclass(frozen=True)
class Proxies:
    """The reverse proxies whose ``X-Forwarded-For`` the relay believes."""

    networks: tuple[_Network, ...] = ()

    @classmethod
    def of(cls, entries: Iterable[str]) -> Proxies:
        """From the ``trusted_proxies`` setting (checked already)."""
        return cls(tuple(parse_networks(entries)[0]))

    def __contains__(self, address: object) -> bool:
        ip = _ip(address) if isinstance(address, str) else None
        return ip is not None and any(ip in network for network in self.networks)

    def client(self, peer: str, forwarded_for: str) -> str:
        """The client's address, for a socket from ``peer`` with that header (``''``: none)."""
        if peer not in self or not forwarded_for.strip():
            return peer
        for entry in reversed(forwarded_for.split(",")):
            ip = _ip(entry)
            if ip is None:
                return peer  # a proxy of ours wrote something that is not an address
            if str(ip) not in self:
                return str(ip)
        return peer  # only our own proxies: a health check from next door
