"""Per-address bookkeeping stays bounded and O(1): with 100,000 client addresses tracked
(one IPv6 /48 alone holds 65,536 /64s), `GET /` answers as fast as with none.

Before, once more than 4,096 addresses were tracked every new event scanned every key:
`GET /` went from 8 ms to 55 ms (median) at 9,000 addresses, growing linearly.
"""

from __future__ import annotations

import asyncio
import ipaddress
import statistics
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import aiohttp
import pytest

from bot.web.identity import MAX_ADDRESSES, AddressLimits, _Window, address_key
from bot.web.state import ADDRESS_LIMITS, IDENTITIES
from core.errors import RateLimited
from core.jobs.events import Done, JobHandle, JobResult
from tests.bot.web.conftest import Web, WebFactory
from tests.conftest import make_config
from tests.core.jobs.engine_support import text_request

pytestmark = pytest.mark.timeout(300)

ADDRESSES = 100_000
HOUR = 3600.0


def ipv6_clients(count: int) -> list[str]:
    """One address in each of `count` /64s (a /47 holds 131,072 of them)."""
    base = int(ipaddress.IPv6Address("2001:db8:4000::"))
    return [str(ipaddress.IPv6Address(base + (n << 64) + 0x1234)) for n in range(count)]


def calls_made(action: Callable[[], object]) -> int:
    """How many functions (Python and built-in) `action` calls: its work, whatever the
    machine's load."""
    count = 0

    def profile(_frame: FrameType, event: str, _arg: Any) -> None:
        nonlocal count
        if event in ("call", "c_call"):
            count += 1

    sys.setprofile(profile)
    try:
        action()
    finally:
        sys.setprofile(None)
    return count


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_ipv6_is_counted_per_64() -> None:
    same_host = {address_key(f"2001:db8:1:2:{n:x}::7") for n in range(1000)}
    assert same_host == {"2001:db8:1:2::/64"}
    assert len({address_key(a) for a in ipv6_clients(1000)}) == 1000


def test_an_event_costs_the_same_work_at_100_and_at_100000_addresses() -> None:
    clock = Clock()
    window = _Window(clock)
    keys = [address_key(a) for a in ipv6_clients(ADDRESSES)]
    for key in keys[:100]:
        window.add(key)
    small = calls_made(lambda: window.add("198.51.100.1"))
    for key in keys[100:-1_000]:
        clock.now += 0.001  # spread over 100 s: none expires meanwhile
        window.add(key)
    large = calls_made(lambda: window.add("198.51.100.2"))
    assert large <= small + 5, (small, large)  # the old code scanned all: ~100,000 calls
    for key in keys[-1_000:]:
        window.add(key)
    assert len(window) == ADDRESSES == MAX_ADDRESSES  # full: a new one evicts the oldest
    full = calls_made(lambda: window.add("198.51.100.3"))
    assert full <= small + 30, (small, full)
    assert len(window) == ADDRESSES
    assert calls_made(lambda: window.count(keys[5])) < 30


def test_memory_is_bounded_and_expiry_removes_each_address_once() -> None:
    clock = Clock()
    window = _Window(clock, max_keys=1_000)
    for n in range(5_000):  # more addresses than it may remember: the oldest are forgotten
        window.add(f"10.0.{n // 256}.{n % 256}")
    assert len(window) == 1_000
    assert window.count("10.0.0.0") == (0, None)  # forgotten first
    assert window.count("10.0.19.135")[0] == 1  # the newest is still counted
    clock.now += HOUR + 1  # every event is over an hour old
    work = calls_made(lambda: window.add("192.0.2.1"))
    assert len(window) == 1  # the hour's end removed them, each once, in one go
    assert calls_made(lambda: window.add("192.0.2.2")) < work / 10  # then cheap again


async def test_running_jobs_per_address_need_no_scan(tmp_path: Any) -> None:
    """A job's end counts its address down by itself; nothing walks the addresses."""
    clock = Clock()
    limits = AddressLimits(concurrent=2, per_hour=0, clock=clock)
    config = make_config(tmp_path)
    handles = []
    for n, address in enumerate(["198.51.100.7", "198.51.100.7", "203.0.113.1"]):
        handle = JobHandle(f"job{n}", text_request(config, "u", "rain"))
        limits.reserve(address)
        limits.accept(address, handle)
        limits.release(address)
        handles.append(handle)
    assert limits.in_progress("198.51.100.7") == 2
    with pytest.raises(RateLimited, match="too many requests in progress"):
        limits.reserve("198.51.100.7")
    handles[0].emit(Done(JobResult(request_id="job0", caption="", prompt="rain", seed=1,
                                   duration_s=1.0, files={})))
    await handles[0].result()
    await asyncio.sleep(0)  # the job's end is told to its callbacks on the next turn
    assert limits.in_progress("198.51.100.7") == 1
    assert limits.in_progress("203.0.113.1") == 1


async def fill(web: Web, addresses: list[str]) -> None:
    """Track `addresses` the way requests from them would: a new browser's cookie each (GET /)
    and a job each (POST), so both hourly counters hold every one of them."""
    identities, limits = web.client.app[IDENTITIES], web.client.app[ADDRESS_LIMITS]
    done = JobHandle("done", text_request(web.services.config, "u", "rain"))
    done.emit(Done(JobResult(request_id="done", caption="", prompt="rain", seed=1,
                             duration_s=1.0, files={})))
    for address in addresses:
        key = address_key(address)
        assert identities.issue(key) is not None
        limits.reserve(key)
        limits.accept(key, done)
        limits.release(key)


async def test_100000_addresses_keep_get_within_twice_its_unloaded_latency(
        start_web: WebFactory) -> None:
    # Every GET / from the test client is a new browser (no cookie jar): each one records
    # an event for its address, the path that used to scan every key.
    settings = {"new_browsers_per_hour": 100_000}
    idle, loaded = await start_web(web=settings), await start_web(web=settings)
    await fill(loaded, ipv6_clients(ADDRESSES))
    assert loaded.client.app[ADDRESS_LIMITS].tracked() == ADDRESSES <= MAX_ADDRESSES
    timings: dict[str, list[float]] = {"idle": [], "loaded": []}
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as browser:
        for web in (idle, loaded):  # warm both up (first connection, page template)
            async with browser.get(web.origin + "/") as page:
                assert page.status == 200 and "sonify_uid" in page.cookies
        for _ in range(60):  # interleaved: the machine's load falls on both alike
            for name, web in (("idle", idle), ("loaded", loaded)):
                started = time.perf_counter()
                async with browser.get(web.origin + "/") as page:
                    await page.read()
                    assert page.status == 200 and "sonify_uid" in page.cookies
                timings[name].append(time.perf_counter() - started)
    idle_ms = statistics.median(timings["idle"]) * 1000
    loaded_ms = statistics.median(timings["loaded"]) * 1000
    print(f"GET / median: {idle_ms:.2f} ms unloaded, {loaded_ms:.2f} ms with "
          f"{ADDRESSES:,} addresses tracked")
    assert loaded_ms <= 2 * idle_ms, (idle_ms, loaded_ms)
