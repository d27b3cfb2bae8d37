"""Links in chat messages, and which of them may be fetched at all.

`first_url` finds links in text; `check_url` refuses, before anything connects, every
link that is not http(s) or whose host is — in any spelling — a loopback, private,
link-local, carrier-grade NAT, multicast, reserved or unspecified address.
"""

from __future__ import annotations

import ipaddress
import re
from ipaddress import IPv4Address, IPv6Address, ip_network

from yarl import URL

from core.errors import ImageRejected

_HOSTNAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?")
_NUMERIC_LABEL = re.compile(r"0x[0-9a-f]*|[0-9]+")
_OPENERS = {")": "(", "]": "["}
_URL_IN_TEXT = re.compile(r"https?://[^\s<>\"'`|\\^{}]+", re.IGNORECASE)

IPAddress = IPv4Address | IPv6Address

# Belt and braces next to `not ip.is_global`, whose table changes between Python versions.
_BLOCKED_V4 = tuple(ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
    "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
))
_BLOCKED_V6 = tuple(ip_network(n) for n in (
    "::/128", "::1/128", "::/96", "::ffff:0:0/96", "::ffff:0:0:0/96", "64:ff9b:1::/48",
    "100::/64", "2001::/23", "2001:db8::/32", "3fff::/20", "5f00::/16", "fc00::/7",
    "fe80::/10", "fec0::/10", "ff00::/8",
))
_NAT64 = ip_network("64:ff9b::/96")
_NAT64_LOCAL = ip_network("64:ff9b:1::/48")
_HOSTNAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?")
_NUMERIC_LABEL = re.compile(r"0x[0-9a-f]*|[0-9]+")
_OPENERS = {")": "(", "]": "["}
_URL_IN_TEXT = re.compile(r"https?://[^\s<>\"'`|\\^{}]+", re.IGNORECASE)


class AddressBlocked(OSError):
    """A host name resolved to an address strangers' links must not reach."""


def is_blocked_address(ip: IPAddress) -> bool:
    """True for any address that is not plainly public unicast, including v4 inside v6."""
    if isinstance(ip, IPv6Address):
        ip = IPv6Address(int(ip))  # drop any %zone
        if ip.ipv4_mapped is not None:
            return is_blocked_address(ip.ipv4_mapped)
        if any(is_blocked_address(v4) for v4 in _embedded_v4(ip)):
            return True
        return any(ip in net for net in _BLOCKED_V6) or not ip.is_global
    return any(ip in net for net in _BLOCKED_V4) or not ip.is_global


def _embedded_v4(ip: IPv6Address) -> list[IPv4Address]:
    """IPv4 addresses carried inside an IPv6 one (compatible, translated, NAT64, 6to4, Teredo)."""
    value = int(ip)
    low = IPv4Address(value & 0xFFFF_FFFF)
    found: list[IPv4Address] = []
    if value >> 32 in (0, 0xFFFF_0000):  # ::a.b.c.d (RFC 4291) and ::ffff:0:a.b.c.d (RFC 2765)
        found.append(low)
    if ip in _NAT64 or ip in _NAT64_LOCAL:
        found.append(low)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    return found


def parse_ipv4_host(host: str) -> IPv4Address | None:
    """Read inet_aton-style hosts (`2130706433`, `0177.0.0.1`, `0x7f.1`, `127.1`) like browsers.

    Returns None for a host name; raises ImageRejected(bad_url) for a malformed number.
    """
    parts = host.lower().split(".")
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()
    if not _NUMERIC_LABEL.fullmatch(parts[-1]):
        return None
    numbers = [_ipv4_number(part) for part in parts]
    if len(numbers) > 4 or any(n is None for n in numbers):
        raise ImageRejected("malformed numeric host", code="bad_url")
    *head, last = (n for n in numbers if n is not None)
    if any(n > 255 for n in head) or last >= 256 ** (4 - len(head)):
        raise ImageRejected("malformed numeric host", code="bad_url")
    return IPv4Address(sum(n << (8 * (3 - i)) for i, n in enumerate(head)) + last)


def _ipv4_number(part: str) -> int | None:
    if part.startswith("0x"):
        digits = part[2:]
        if not digits:
            return 0  # browsers read a bare "0x" as zero
        return int(digits, 16) if re.fullmatch(r"[0-9a-f]+", digits) else None
    if len(part) > 1 and part.startswith("0"):
        return int(part, 8) if re.fullmatch(r"0[0-7]+", part) else None
    return int(part) if re.fullmatch(r"[0-9]+", part) else None


def check_url(url: URL, *, allow_private: bool) -> URL:
    """Refuse what may not be fetched; returns the URL to request (numeric hosts normalised)."""
    if url.scheme not in ("http", "https") or not url.raw_host or not url.absolute:
        raise ImageRejected("only http and https links", code="bad_url")
    host = url.raw_host.lower()
    if ":" in host:  # an IPv6 literal; yarl has already validated its syntax
        try:
            ip6 = ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            raise ImageRejected("malformed address", code="bad_url") from None
        if not allow_private and is_blocked_address(ip6):
            raise ImageRejected("private or local address", code="blocked_address")
        return url
    if not _HOSTNAME.fullmatch(host):
        raise ImageRejected("malformed host name", code="bad_url")
    ip4 = parse_ipv4_host(host)
    if ip4 is not None:
        if not allow_private and is_blocked_address(ip4):
            raise ImageRejected("private or local address", code="blocked_address")
        return url.with_host(str(ip4)) if str(ip4) != host else url
    name = host.rstrip(".")
    if not allow_private and (name == "localhost" or name.endswith(".localhost")):
        raise ImageRejected("local host name", code="blocked_address")
    return url


def parse_url(text: str) -> URL:
    """A link as a yarl URL; ImageRejected(bad_url) when it cannot be parsed."""
    try:
        return URL(text)
    except ValueError:  # includes IDNA errors
        raise ImageRejected("malformed link", code="bad_url") from None


def first_url(text: str) -> str | None:
    """The first http(s) link in a chat message, without trailing punctuation or brackets."""
    for match in _URL_IN_TEXT.finditer(text or ""):
        url = match.group(0)
        while url:
            last = url[-1]
            opener = _OPENERS.get(last)
            if last in ".,;:!?*_~" or (opener and url.count(opener) < url.count(last)):
                url = url[:-1]
                continue
            break
        if len(url.split("://", 1)[1]) > 0:
            return url
    return None


def all_urls(text: str) -> list[str]:
    """Every http(s) link in `text`, in order."""
    urls: list[str] = []
    while text and (url := first_url(text)):
        urls.append(url)
        text = text[text.index(url) + len(url):]
    return urls
