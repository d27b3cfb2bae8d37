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
import socket

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from core.config import ImagesConfig
from core.errors import ImageRejected
from core.intake.decode import DecodedImage, decode_image_async
from core.intake.links import AddressBlocked, check_url, is_blocked_address, parse_url

logger = logging.getLogger(__name__)

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

    def __init__(self, settings: ImagesConfig, *, resolver: AbstractResolver | None = None) -> None:
        self._cfg = settings
        self._owns_resolver = resolver is None
        self._resolver = resolver if resolver is not None else SafeResolver(
            allow_private=settings.allow_private_networks)
        self._session: aiohttp.ClientSession | None = None

    async def fetch(self, url: str, *, max_bytes: int | None = None) -> bytes:
        """The body behind `url`, following at most `max_redirects` checked redirects.

        `max_bytes` replaces `[images] max_bytes` (a link to a video: `[video] max_bytes`).
        """
        try:
            async with asyncio.timeout(self._cfg.download_timeout_s):
                return await self._fetch(url, max_bytes or self._cfg.max_bytes)
        except ImageRejected:
            raise
        except TimeoutError:  # also aiohttp's connect timeouts, which subclass it
            raise ImageRejected("download timed out", code="fetch_timeout") from None
        except aiohttp.ClientConnectorDNSError as exc:
            if isinstance(exc.os_error, AddressBlocked):
                raise ImageRejected("private or local address", code="blocked_address") from None
            raise ImageRejected("host name not found", code="fetch_unreachable") from None
        except aiohttp.ClientSSLError:
            raise ImageRejected("TLS handshake failed", code="fetch_failed") from None
        except aiohttp.ClientConnectorError:
            # Refused, unreachable network, reset while connecting: the server is not there,
            # which the user fixes differently from a server that answers with an error.
            raise ImageRejected("host not reachable", code="fetch_unreachable") from None
        except aiohttp.InvalidURL:
            raise ImageRejected("malformed link", code="bad_url") from None
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            # `from None`: aiohttp's messages embed the URL, which may hold a token.
            logger.debug("image download failed: %s", type(exc).__name__)
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

    async def _fetch(self, raw_url: str, limit: int) -> bytes:
        if len(raw_url) > _MAX_URL_LENGTH:
            raise ImageRejected("link too long", code="bad_url")
        allow_private = self._cfg.allow_private_networks
        target = check_url(parse_url(raw_url.strip()), allow_private=allow_private)
        session = self._client()
        for _ in range(self._cfg.max_redirects + 1):
            async with session.get(target, allow_redirects=False) as response:
                if response.status in _REDIRECT_STATUSES:
                    location = response.headers.get("Location")
                    if not location:
                        raise ImageRejected("redirect without a target", code="fetch_failed")
                    target = check_url(target.join(parse_url(location)),
                                       allow_private=allow_private)
                    continue
                if not 200 <= response.status < 300:
                    raise ImageRejected(f"HTTP status {response.status}", code="fetch_status",
                                        status=response.status)
                return await self._read_body(response, limit)
        raise ImageRejected("too many redirects", code="fetch_failed")

    async def _read_body(self, response: aiohttp.ClientResponse, limit: int) -> bytes:
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
