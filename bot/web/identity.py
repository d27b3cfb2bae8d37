"""Who a web client is, and how much one client address may ask for.

The identity model (README, "The web page"):

- A browser's identity is an id the server issued and signed (`sonify_uid` cookie,
  ``<id>.<signature>``). A cookie the server did not sign counts as no cookie, so a client
  cannot mint identities for itself; it has to ask for one (opening the page), and each
  client address gets at most `[web] new_browsers_per_hour` new ones.
- A request without a valid identity cookie (an API client, or a browser past that rate) is
  identified by its address: all of them at one address share one identity.
- On top of the engine's per-identity limits, the web counts per client address (IPv6: per
  /64, the block one host usually holds): requests in progress and requests per hour. So
  discarding cookies gains at most the address's allowance.
- The request log stores a keyed hash of the browser id (``browser:<hash>``), never the
  cookie: reading the database does not let anyone act as a browser.

The key signs and hashes: 32 random bytes made once and kept in the request log's database
(`service_keys`), so identities and the log's hashes stay valid over restarts and every web
process of one service (the redis backend: several behind one address) honours the same
cookies. It is not derived from the web token because there often is none, and changing the
token must not make every browser a stranger to its own jobs. Deleting the row forgets
every browser.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import logging
import secrets
import time
from bisect import bisect_right
from collections.abc import Callable

from cachetools import TTLCache

from core.errors import RateLimited
from core.jobs.events import JobHandle
from core.limits import HOUR_S, hourly_retry_after

logger = logging.getLogger(__name__)

KEY_NAME = "web-identity"  # its row in `service_keys`
KEY_BYTES = 32
_ID_CHARS = 22  # secrets.token_urlsafe(16)
_SIG_CHARS = 22  # 128 bits of the HMAC, base64url
# How soon to try again after a per-address "too many in progress": about one batch.
ADDRESS_RETRY_S = 30
# The most client addresses the hourly counters remember (one IPv6 /48 holds 65,536 /64s):
# past that, the least recently active one is forgotten — memory stays bounded whoever asks.
MAX_ADDRESSES = 100_000


def address_key(address: str | None) -> str:
    """The unit per-address limits count: the IPv4 address, or the /64 of an IPv6 one."""
    if not address:
        return "unknown"
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address  # a Unix socket path or the like: one client
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def _b64(data: bytes, chars: int) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")[:chars]


class _Window:
    """Events per key in the last hour (a sliding window), for at most `max_keys` keys.

    The keys live in a `cachetools.TTLCache`: each expires an hour after its last event
    (when every event of its window is over) and the least recently active goes first when
    the map is full. Its expiry walks a list ordered by expiry time from the oldest end and
    stops at the first key still alive, so each key is removed once, in O(1) amortised —
    never a scan of every key, however many addresses are tracked.
    """

    def __init__(self, clock: Callable[[], float], max_keys: int = MAX_ADDRESSES) -> None:
        self._clock = clock
        self._events: TTLCache[str, list[float]] = TTLCache(max_keys, HOUR_S, timer=clock)

    def __len__(self) -> int:
        return len(self._events)

    def count(self, key: str) -> tuple[int, float | None]:
        """(events in the last hour, the oldest of them)."""
        events = self._events.get(key)
        if not events:
            return 0, None
        del events[:bisect_right(events, self._clock() - HOUR_S)]  # at most the limit's worth
        return (len(events), events[0]) if events else (0, None)

    def add(self, key: str) -> None:
        events = self._events.get(key) or []
        events.append(self._clock())
        self._events[key] = events  # set again: its hour starts anew, it is the most recent


def same_secret(given: str, expected: str) -> bool:
    """A constant-time comparison that takes any header text, even bytes that are not UTF-8
    (aiohttp keeps those as surrogates, which a plain `.encode()` refuses)."""
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode())


class Identities:
    """Signed browser ids: issued at a bounded rate per address, checked, hashed for the log."""

    def __init__(self, key: bytes, per_hour: int, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._key = key
        self.per_hour = per_hour
        self._issued = _Window(clock)

    def _mac(self, label: bytes, browser_id: str) -> bytes:
        return hmac.new(self._key, label + browser_id.encode(), hashlib.sha256).digest()

    def issue(self, address: str) -> str | None:
        """A new identity cookie value for a browser at `address`, or None past the rate."""
        if self._issued.count(address)[0] >= self.per_hour:
            return None
        self._issued.add(address)
        browser_id = secrets.token_urlsafe(16)
        return f"{browser_id}.{_b64(self._mac(b'uid:', browser_id), _SIG_CHARS)}"

    def user_id(self, cookie: str) -> str | None:
        """``browser:<keyed hash>`` for a cookie this server signed, else None."""
        browser_id, dot, signature = cookie.partition(".")
        if not dot or len(browser_id) != _ID_CHARS or len(signature) != _SIG_CHARS:
            return None
        expected = _b64(self._mac(b"uid:", browser_id), _SIG_CHARS)
        if not same_secret(signature, expected):
            return None
        # A different label than the signature's: the stored hash is not a valid cookie part.
        return "browser:" + self._mac(b"log:", browser_id).hex()[:32]


class AddressLimits:
    """Requests in progress and per hour, per client address (see `address_key`)."""

    def __init__(self, concurrent: int, per_hour: int, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.concurrent, self.per_hour = concurrent, per_hour
        self._hourly = _Window(clock)
        self._clock = clock
        # Both exact and small: an address is in them only while it has something in progress.
        self._pending: dict[str, int] = {}  # submissions still being read, checked, decoded
        self._running: dict[str, int] = {}  # accepted jobs, until they finish

    def tracked(self) -> int:
        """Addresses the hourly counter remembers (bounded by `MAX_ADDRESSES`)."""
        return len(self._hourly)

    def in_progress(self, address: str) -> int:
        return self._running.get(address, 0) + self._pending.get(address, 0)

    def reserve(self, address: str) -> None:
        """Count one more submission from `address` as in progress, or raise RateLimited.

        Every reservation is ended by `release`; `accept` before it keeps the job counted.
        """
        if self.per_hour:
            count, oldest = self._hourly.count(address)
            if count >= self.per_hour:
                raise RateLimited("per-address hourly limit reached", code="address_hourly",
                                  retry_after_s=hourly_retry_after(oldest, self._clock()))
        if self.concurrent and self.in_progress(address) >= self.concurrent:
            raise RateLimited("too many requests in progress from this address",
                              code="address_busy", retry_after_s=ADDRESS_RETRY_S)
        self._pending[address] = self._pending.get(address, 0) + 1

    def accept(self, address: str, handle: JobHandle) -> None:
        """A reserved submission became a job: it counts for the hour, and while it runs."""
        self._hourly.add(address)
        if not handle.finished:  # a cache hit is done already
            self._running[address] = self._running.get(address, 0) + 1
            handle.add_done_callback(lambda: _count_down(self._running, address))

    def release(self, address: str) -> None:
        """A reserved submission is answered (its job, if any, is counted by `accept`)."""
        _count_down(self._pending, address)


def _count_down(counts: dict[str, int], address: str) -> None:
    left = counts.get(address, 0) - 1
    if left > 0:
        counts[address] = left
    else:
        counts.pop(address, None)
