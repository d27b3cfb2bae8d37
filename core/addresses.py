"""Network addresses in the configuration: trusted proxies, and `host:port` listen addresses.

Both are checked at start-up like every key (core/config.py): a mistake is named with the
key, and every wrong entry of a list is named at once.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: Iterable[str]) -> list[Network]:
    """Addresses (``10.0.0.5``, ``::1``) and networks (``10.0.0.0/8``, ``fd00::/8``) as
    networks; ValueError naming every entry that is neither."""
    networks: list[Network] = []
    problems: list[str] = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=True))
        except ValueError:
            try:
                loose = ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError:
                problems.append(f"{entry!r} is not an IP address or network")
            else:
                problems.append(f"{entry!r} has host bits set (the network is "
                                f"'{loose.with_prefixlen}')")
    if problems:
        raise ValueError("; ".join(problems))
    return networks


def check_networks(entries: list[str]) -> None:
    """The configuration's rule for a list of addresses and networks."""
    parse_networks(entries)


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[IPv6]:PORT`` for an IPv6 address) as (host, port); ValueError
    saying what is wrong. Port 0 lets the system pick a free one."""
    host, colon, port_text = text.strip().rpartition(":")
    if not colon or not host:
        raise ValueError(f"{text!r} is not HOST:PORT (e.g. '127.0.0.1:9100' or '[::1]:9100')")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{text!r}: {host!r} is not an IPv6 address") from None
    elif ":" in host:
        raise ValueError(f"{text!r}: write an IPv6 address in brackets, e.g. '[::1]:9100'")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65_535:
        raise ValueError(f"{text!r}: the port must be a number from 0 to 65535")
    return host, int(port_text)


def check_listen(text: str) -> None:
    """The configuration's rule for a listen address ("" = none)."""
    if text:
        parse_listen(text)
