"""Web identities a client cannot mint, limits per address, and what the request log keeps."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from bot.web.identity import KEY_NAME, AddressLimits, address_key
from core.errors import RateLimited, UserFacingError
from core.jobs.events import Failed, JobHandle
from tests.bot.web.conftest import (
    Web,
    WebFactory,
    expect_error,
    last_rows,
    png_bytes,
    read_events,
    upload_form,
)

pytestmark = pytest.mark.timeout(120)


async def fresh_browser(web: Web) -> tuple[aiohttp.ClientSession, str | None]:
    """A new browser (empty cookie jar) that opened the page; its id cookie, if it got one."""
    session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with session.get(web.origin + "/") as page:
        assert page.status == 200
        morsel = page.cookies.get("sonify_uid")
    return session, morsel.value if morsel is not None else None


async def test_discarding_cookies_does_not_escape_the_limits(start_web: WebFactory) -> None:
    """The attack: a fresh cookie for every submission. Before, 100 of 300 got through (only
    the queue bound stopped it); now the address's allowance stops it."""
    web = await start_web(gated=True, jobs={"per_user_concurrent": 1, "max_queue": 100},
                          web={"per_address_concurrent": 3, "new_browsers_per_hour": 100})
    assert web.gated is not None
    statuses: list[int] = []
    accepted: list[tuple[aiohttp.ClientSession, str]] = []
    for seed in range(12):
        session, cookie = await fresh_browser(web)
        assert cookie is not None
        async with session.post(web.origin + "/api/jobs",
                                data=upload_form(png_bytes(), seed=seed)) as resp:
            statuses.append(resp.status)
            if resp.status == 202:
                accepted.append((session, (await resp.json())["id"]))
                continue
            error = await expect_error(resp, 429, "address_busy")
            assert "network" in error["message"]
            assert int(resp.headers["Retry-After"]) >= 1
        await session.close()
    assert statuses == [202] * 3 + [429] * 9
    rows = await last_rows(web)
    assert sorted(r.reason for r in rows if r.status == "rejected") == ["address_busy"] * 9
    web.gated.gate.set()
    for session, job_id in accepted:
        async with session:
            async with session.get(f"{web.origin}/api/jobs/{job_id}/events") as resp:
                assert "event: done" in await resp.text()
    # Once they are done, the address may submit again.
    session, _ = await fresh_browser(web)
    async with session, session.post(web.origin + "/api/jobs",
                                     data=upload_form(png_bytes(), seed=99)) as resp:
        assert resp.status == 202, await resp.text()


async def test_the_hourly_allowance_counts_per_address(start_web: WebFactory) -> None:
    web = await start_web(web={"per_address_per_hour": 2})
    for seed in (1, 2):
        session, _ = await fresh_browser(web)
        async with session, session.post(web.origin + "/api/jobs",
                                         data=upload_form(png_bytes(), seed=seed)) as resp:
            assert resp.status == 202
            job_id = (await resp.json())["id"]
            async with session.get(f"{web.origin}/api/jobs/{job_id}/events") as events:
                assert "event: done" in await events.text()
    session, _ = await fresh_browser(web)
    async with session, session.post(web.origin + "/api/jobs",
                                     data=upload_form(png_bytes(), seed=3)) as resp:
        error = await expect_error(resp, 429, "address_hourly")
        assert int(resp.headers["Retry-After"]) > 3000
        assert "per hour" in error["message"]


async def test_identities_are_issued_at_a_bounded_rate(start_web: WebFactory) -> None:
    web = await start_web(web={"new_browsers_per_hour": 2})
    got = []
    for _ in range(4):
        session, cookie = await fresh_browser(web)
        await session.close()
        got.append(cookie)
    assert got[0] and got[1] and got[0] != got[1]
    assert got[2:] == [None, None]  # the page still opens; the browser is known by its address
    # A browser that has one keeps it.
    async with aiohttp.ClientSession(cookies={"sonify_uid": got[0]}) as session:
        async with session.get(web.origin + "/") as page:
            assert page.status == 200 and "sonify_uid" not in page.cookies


async def test_a_minted_cookie_is_no_identity_and_the_log_keeps_a_keyed_hash(
        start_web: WebFactory) -> None:
    web = await start_web()
    session, cookie = await fresh_browser(web)
    assert cookie is not None
    browser_id = cookie.split(".")[0]
    async with session:
        async with session.post(web.origin + "/api/jobs",
                                data=upload_form(png_bytes(), seed=1)) as resp:
            assert resp.status == 202
            job_id = (await resp.json())["id"]
        assert (await read_events(web.client, job_id, cookies={"sonify_uid": cookie}))[-1][0] \
            == "done"
    forged = ("someone-else-0123456789", browser_id + ".AAAAAAAAAAAAAAAAAAAAAA",
              "x" * 22 + "." + cookie.split(".")[1])
    for value in forged:
        async with aiohttp.ClientSession(cookies={"sonify_uid": value}) as other:
            async with other.post(web.origin + "/api/jobs",
                                  data=upload_form(png_bytes(), seed=2)) as resp:
                assert resp.status == 202
                other_id = (await resp.json())["id"]
            async with other.get(f"{web.origin}/api/jobs/{job_id}") as peek:
                await expect_error(peek, 404, "unknown_job")  # not the owner
            async with other.get(f"{web.origin}/api/jobs/{other_id}/events") as events:
                assert "event: done" in await events.text()
    rows = {r.id: r for r in await last_rows(web)}
    owner = rows.pop(job_id)
    assert owner.user_id.startswith("browser:") and len(owner.user_id) == len("browser:") + 32
    assert {r.user_id for r in rows.values()} == {"ip:127.0.0.1"}  # the forged ones
    for record in (owner, *rows.values()):
        text = str(tuple(record))
        assert cookie not in text and browser_id not in text and cookie.split(".")[1] not in text
    key = await web.services.request_log.blobs.service_key(KEY_NAME)
    assert len(key) == 32 and key.hex() not in str(tuple(owner))


def test_address_keys_group_an_ipv6_host_by_its_64() -> None:
    assert address_key("203.0.113.7") == "203.0.113.7"
    assert address_key("::ffff:203.0.113.7") == "203.0.113.7"
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:ffff::9") \
        == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key(None) == "unknown"


async def test_address_limits_release_and_expire() -> None:
    now = [1000.0]
    limits = AddressLimits(concurrent=1, per_hour=2, clock=lambda: now[0])
    limits.reserve("a")
    with pytest.raises(RateLimited) as busy:
        limits.reserve("a")
    assert busy.value.code == "address_busy"
    limits.reserve("b")  # another address is not held back
    limits.release("a")
    limits.release("b")
    for _ in range(2):
        limits.reserve("a")
        handle = JobHandle("x", None)  # type: ignore[arg-type] # only `finished` is read
        handle.emit(Failed(UserFacingError("done")))
        limits.accept("a", handle)
        limits.release("a")
    with pytest.raises(RateLimited) as hourly:
        limits.reserve("a")
    assert hourly.value.code == "address_hourly" and hourly.value.params["retry_after_s"] > 3000
    now[0] += 3601
    limits.reserve("a")


async def test_a_second_web_process_on_the_same_database_knows_the_browser(
        start_web: WebFactory, tmp_path: Path) -> None:
    """The identity key is in the database: a cookie is good at the next process on it (a
    restart, or — with the redis backend — another web process of the same service)."""
    database = {"database_url": f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"}
    first = await start_web(storage=database)
    session, cookie = await fresh_browser(first)
    assert cookie is not None
    async with session:
        async with session.post(first.origin + "/api/jobs",
                                data=upload_form(png_bytes(), seed=3)) as resp:
            assert resp.status == 202
            job_id = (await resp.json())["id"]
        assert (await read_events(first.client, job_id,
                                  cookies={"sonify_uid": cookie}))[-1][0] == "done"
        # One local-backend process per request log: the first ends before the next.
        await first.services.close()
        second = await start_web(storage=database)  # its own data_dir, the same log
        async with aiohttp.ClientSession(cookies={"sonify_uid": cookie}) as same_browser:
            async with same_browser.get(f"{second.origin}/api/jobs/{job_id}") as resp:
                view = await resp.json()
                assert resp.status == 200 and view["status"] == "done", view
