"""Downloading the image behind a link a stranger posted, without becoming an SSRF proxy.

Every hop (the link and each redirect) is checked before anything connects: only http and
https, and the host must not be — in any spelling — a loopback, private, link-local,
carrier-grade NAT, multicast, reserved or unspecified address. Host names are resolved
once by `SafeResolver`, which hands the connector only the addresses it vetted, so a
second DNS answer cannot rebind the connection. Size and time are capped while streaming.
Error messages never contain the URL: links may carry tokens.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
from ipaddress import IPv4Address, IPv6Address, ip_network

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from core.config import ImagesConfig
from core.errors import ImageRejected
from core.images import DecodedImage, decode_image_async

log = logging.getLogger(__name__)

USER_AGENT = "Mozilla/5.0 (compatible; Sonify/0.1; +https://github.com/sonify-bot/sonify)"
_HEADERS = {
    "User-Agent": USER_AGENT,
    "Accept": "image/webp,image/png,image/jpeg,image/gif,image/*;q=0.8,*/*;q=0.5",
    # Images are already compressed; asking for identity avoids gzip bombs.
    "Accept-Encoding": "identity",
}
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_MAX_URL_LENGTH = 4096
_CHUNK = 64 * 1024

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


class SafeResolver(AbstractResolver):
    """Resolves each host name once and passes the connector only addresses that passed."""

    def __init__(self, *, allow_private: bool = False,
                 base: AbstractResolver | None = None) -> None:
        self.allow_private = allow_private
        self._base = base if base is not None else aiohttp.ThreadedResolver()
        self._owns_base = base is None

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self._base.resolve(host, port, family)
        if not self.allow_private:
            for result in results:
                try:
                    ip = ipaddress.ip_address(result["host"].split("%")[0])
                except ValueError:
                    raise AddressBlocked("unparseable address") from None
                # One bad answer refuses the name: mixing in a private address is an attack.
                if is_blocked_address(ip):
                    raise AddressBlocked("host name resolves to a blocked address")
        return results

    async def close(self) -> None:
        if self._owns_base:
            await self._base.close()


class ImageFetcher:
    """Downloads images from links: SSRF-checked, size- and time-capped, never echoing the URL.

    `resolver` is the aiohttp resolver that resolves *and vets* host names (default:
    `SafeResolver` over the system resolver). IP literals, numeric hosts and localhost
    names never reach it: the fetcher checks those itself, before connecting.
    """

    def __init__(self, cfg: ImagesConfig, *, resolver: AbstractResolver | None = None) -> None:
        self._cfg = cfg
        self._owns_resolver = resolver is None
        self._resolver = resolver if resolver is not None else SafeResolver(
            allow_private=cfg.allow_private_networks)
        self._session: aiohttp.ClientSession | None = None

    async def fetch(self, url: str) -> bytes:
        """The body behind `url`, following at most `max_redirects` checked redirects."""
        try:
            async with asyncio.timeout(self._cfg.download_timeout_s):
                return await self._fetch(url)
        except ImageRejected:
            raise
        except TimeoutError:  # also aiohttp's connect timeouts, which subclass it
            raise ImageRejected("download timed out", code="fetch_timeout") from None
        except aiohttp.ClientConnectorDNSError as exc:
            if isinstance(exc.os_error, AddressBlocked):
                raise ImageRejected("private or local address", code="blocked_address") from None
            raise ImageRejected("host name not found", code="fetch_failed") from None
        except aiohttp.InvalidURL:
            raise ImageRejected("malformed link", code="bad_url") from None
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            # `from None`: aiohttp's messages embed the URL, which may hold a token.
            log.debug("image download failed: %s", type(exc).__name__)
            raise ImageRejected("download failed", code="fetch_failed") from None

    async def fetch_image(self, url: str) -> DecodedImage:
        """Fetch `url` and decode it with `decode_image` (in a thread)."""
        return await decode_image_async(await self.fetch(url), self._cfg)

    async def close(self) -> None:
        """Close the HTTP session (and the resolver this fetcher created)."""
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._owns_resolver:
            await self._resolver.close()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # force_close: no pooled connections, so each fetch starts from a vetted lookup
            # and a misbehaving server cannot leave state behind for the next one.
            connector = aiohttp.TCPConnector(resolver=self._resolver, limit=32, force_close=True)
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers=_HEADERS,
                # A proxy from the environment would resolve names itself, past our checks.
                trust_env=False,
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=None, connect=self._cfg.connect_timeout_s,
                                              sock_connect=self._cfg.connect_timeout_s),
            )
        return self._session

    async def _fetch(self, raw_url: str) -> bytes:
        if len(raw_url) > _MAX_URL_LENGTH:
            raise ImageRejected("link too long", code="bad_url")
        allow_private = self._cfg.allow_private_networks
        target = check_url(_parse_url(raw_url.strip()), allow_private=allow_private)
        session = self._client()
        for _ in range(self._cfg.max_redirects + 1):
            async with session.get(target, allow_redirects=False) as response:
                if response.status in _REDIRECT_STATUSES:
                    location = response.headers.get("Location")
                    if not location:
                        raise ImageRejected("redirect without a target", code="fetch_failed")
                    target = check_url(target.join(_parse_url(location)),
                                       allow_private=allow_private)
                    continue
                if not 200 <= response.status < 300:
                    raise ImageRejected(f"HTTP status {response.status}", code="fetch_failed",
                                        status=response.status)
                return await self._read_body(response)
        raise ImageRejected("too many redirects", code="fetch_failed")

    async def _read_body(self, response: aiohttp.ClientResponse) -> bytes:
        limit = self._cfg.max_bytes
        declared = response.content_length
        if declared is not None and declared > limit:
            response.close()  # drop the connection rather than drain a huge body
            raise ImageRejected("file too large", code="too_large", max_bytes=limit)
        body = bytearray()
        # Content-Length may lie or be absent: count what actually arrives.
        async for chunk in response.content.iter_chunked(_CHUNK):
            body += chunk
            if len(body) > limit:
                response.close()
                raise ImageRejected("file too large", code="too_large", max_bytes=limit)
        if not body:
            raise ImageRejected("empty body", code="empty")
        return bytes(body)


def _parse_url(text: str) -> URL:
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
