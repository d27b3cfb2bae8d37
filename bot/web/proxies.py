"""Who the client is behind a reverse proxy (`[web] trusted_proxies`, `proxy_header`).

A connection's peer is the address it comes from. Only when the peer is a trusted proxy is
its forwarding header believed, and only the one header `proxy_header` names (a proxy that
sets one passes the other on as the client wrote it):

- ``X-Forwarded-For: client, proxy1, proxy2``: each proxy appends the address it got the
  request from, so the list is read from the right, past the trusted proxies; the first
  address that is not one is the client. Anything further left may be the client's own
  invention.
- ``Forwarded`` (RFC 7239): the same, from each element's ``for=``.

The scheme (for the cookies' Secure flag) comes the same way from ``X-Forwarded-Proto``
(or the chosen element's ``proto=``). From any other peer these headers are ignored, as
are ``X-Real-IP`` and the like always: a client cannot name itself. A proxy whose header
names no usable address (missing, ``unknown``, an obfuscated name) leaves the request at
the proxy's own address: shared by whoever else is unknown, never chosen by a client.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

from multidict import CIMultiDictProxy

from bot.web.identity import address_key
from core.addresses import parse_networks

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_PAIR = re.compile(rf'\s*({_TOKEN})\s*=\s*({_TOKEN}|"(?:[^"\\]|\\.)*")\s*')


@dataclass(frozen=True)
class Client:
    """The client of one request, as far as the server can tell."""

    address: str  # an IP address (or the peer as the transport gave it)
    secure: bool  # the client's connection is HTTPS (at the proxy, behind one)
    proxied: bool  # the request came through a trusted proxy

    @property
    def key(self) -> str:
        """What per-address rules count (`address_key`: an IPv6 /64 as one client)."""
        return address_key(self.address)


def parse_ip(text: str) -> IPAddress | None:
    """An address as proxies write it: bare, ``[v6]``, ``[v6]:port`` or ``v4:port`` (an
    IPv4 address mapped into IPv6, as a dual-stack socket shows it, as IPv4)."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # an IPv4 address with a port
        text = text.partition(":")[0]
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def forwarded_elements(value: str) -> list[dict[str, str]] | None:
    """The elements of a ``Forwarded`` header, each its pairs (names in lower case); None
    when it does not parse."""
    elements: list[dict[str, str]] = [{}]
    pos = 0
    while pos < len(value):
        match = _PAIR.match(value, pos)
        if match is None:
            if value[pos] in ";," or value[pos].isspace():  # empty pairs and elements are fine
                if value[pos] == ",":
                    elements.append({})
                pos += 1
                continue
            return None
        name, raw = match.group(1).lower(), match.group(2)
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        elements[-1][name] = raw
        pos = match.end()
        if pos < len(value) and value[pos] not in ";,":
            return None
    return [element for element in elements if element]


class TrustedProxies:
    """The proxies whose forwarding header is believed, and how to read it."""

    def __init__(self, entries: Sequence[str], header: str = "x-forwarded-for") -> None:
        self.networks = parse_networks(entries)
        self.header = header

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, address: str | None) -> bool:
        ip = parse_ip(address) if address else None
        return ip is not None and any(ip in network for network in self.networks)

    def resolve(self, peer: str | None, headers: CIMultiDictProxy[str], secure: bool
                ) -> Client:
        """The client of a request whose connection comes from `peer`."""
        here = Client(peer or "unknown", secure, proxied=False)
        if not self.trusts(peer):
            return here
        proxy = Client(here.address, secure, proxied=True)
        if self.header == "forwarded":
            return self._from_forwarded(proxy, headers)
        return self._from_x_forwarded(proxy, headers)

    def _client_hop(self, hops: list[str]) -> int | None:
        """The index of the client among `hops` (nearest last); None when unusable."""
        for index in range(len(hops) - 1, -1, -1):
            ip = parse_ip(hops[index])
            if ip is None:
                return None
            if not any(ip in network for network in self.networks):
                return index
        return 0 if hops else None  # all trusted: the request began at a proxy

    def _from_x_forwarded(self, proxy: Client, headers: CIMultiDictProxy[str]) -> Client:
        hops = _values(headers, "X-Forwarded-For")
        index = self._client_hop(hops)
        if index is None:
            return proxy
        protos = _values(headers, "X-Forwarded-Proto")
        secure = proxy.secure
        if protos:
            proto = protos[index] if len(protos) == len(hops) else protos[-1]
            secure = proto.lower() in ("https", "wss")
        return Client(str(parse_ip(hops[index])), secure, proxied=True)

    def _from_forwarded(self, proxy: Client, headers: CIMultiDictProxy[str]) -> Client:
        elements = forwarded_elements(", ".join(headers.getall("Forwarded", [])))
        if not elements:
            return proxy
        index = self._client_hop([element.get("for", "") for element in elements])
        if index is None:
            return proxy
        element = elements[index]
        secure = proxy.secure
        if "proto" in element:
            secure = element["proto"].lower() in ("https", "wss")
        return Client(str(parse_ip(element["for"])), secure, proxied=True)


def _values(headers: CIMultiDictProxy[str], name: str) -> list[str]:
    """Every comma-separated value of every `name` header, in order."""
    return [part.strip() for line in headers.getall(name, []) for part in line.split(",")
            if part.strip()]
